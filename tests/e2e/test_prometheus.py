"""Metrics through a real Prometheus server (Debian's `prometheus`) scraping a local cluster.

The scrape configuration is deploy/docker/prometheus.yml with each job's compose targets
replaced by this cluster's addresses, so every job the compose deployment scrapes is scraped
here too (and must be `up`). Prometheus scrapes every second; the monitor judges 2-second
telemetry windows, so the watch loop's drift series appear within seconds of traffic.
"""

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import grpc
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc

from harness import ROOT, Cluster, free_port, wait_for
from test_control_plane import deploy, ready

WINDOW_SECS = 2
MONITOR_ARGS = ["--telemetry-window-secs", str(WINDOW_SECS), "--watch-settle-ms", "1500"]
WORKER_ARGS = ["--telemetry-interval-secs", "1"]

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus is not installed (deploy/local/setup.sh)")


class MetricsCluster(Cluster):
    """A cluster whose monitor judges short windows, remembering every service's HTTP address."""

    def _spawn(self, name, argv):
        argv = list(argv)
        if name == "monitor":
            argv += MONITOR_ARGS
        if "--http-addr" in argv:
            self.http = getattr(self, "http", {})
            self.http[name] = str(argv[argv.index("--http-addr") + 1])
        super()._spawn(name, argv)


class Prometheus:
    """`prometheus` on a free port with a temporary TSDB, scraping `jobs` every second."""

    def __init__(self, directory, jobs):
        self.addr = f"127.0.0.1:{free_port()}"
        config = yaml.safe_load((ROOT / "deploy/docker/prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s",
                            "evaluation_interval": "1s"}
        jobs = dict(jobs, prometheus=[self.addr])
        names = [s["job_name"] for s in config["scrape_configs"]]
        assert sorted(names) == sorted(jobs), f"deploy/docker/prometheus.yml jobs {names}"
        for scrape in config["scrape_configs"]:
            scrape["static_configs"] = [{"targets": jobs[scrape["job_name"]]}]
        path = directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log = open(directory / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={path}", f"--storage.tsdb.path={directory / 'tsdb'}",
             f"--web.listen-address={self.addr}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.expected_targets = sum(len(t) for t in jobs.values())

    def api(self, path, **params):
        url = f"http://{self.addr}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        """Instant vector of `expr`: [(labels, value)]."""
        data = self.api("query", query=expr)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def targets_up(self):
        targets = self.api("targets")["activeTargets"]
        down = [(t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"])
                for t in targets if t["health"] != "up"]
        return len(targets) == self.expected_targets and not down, down

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def send_shifted(c, heldout, stop):
    """Held-out digits shifted +6 (brighter: a dataset drift), 8 rows a request, until `stop`."""
    rows = np.clip(heldout["inputs"] + 6.0, 0, 16).astype(np.float32)
    req = service_pb2.ModelInferRequest(model_name="digits")
    with grpc.insecure_channel(c.gateway_addr) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        while not stop.is_set():
            for start in range(0, len(rows), 8):
                batch = rows[start:start + 8]
                del req.inputs[:]
                del req.raw_input_contents[:]
                req.inputs.add(name="input", datatype="FP32", shape=list(batch.shape))
                req.raw_input_contents.append(batch.tobytes())
                stub.ModelInfer(req, timeout=10)
                if stop.is_set():
                    return


def test_prometheus_scrapes_every_service(heldout):
    c = MetricsCluster(workers=2, worker_args={"w1": WORKER_ARGS, "w2": WORKER_ARGS})
    prom = None
    stop = threading.Event()
    sender = None
    try:
        deploy(c, "digits", 2)
        wait_for("2 ready digits replicas", lambda: len(ready(c)) == 2, timeout=60)
        etcd = urllib.parse.urlparse(c.etcd_url).netloc
        prom = Prometheus(c.dir, {
            "kiln-gateway": [c.http["gateway"]],
            "kiln-monitor": [c.http["monitor"]],
            "kiln-worker": [c.http["w1"], c.http["w2"]],
            "etcd": [etcd],
        })
        t0 = time.monotonic()
        up = wait_for("every target up", lambda: prom.targets_up()[0], timeout=60, interval=0.5)
        print(f"all {prom.expected_targets} targets up after {time.monotonic() - t0:.1f}s")
        assert up

        sender = threading.Thread(target=send_shifted, args=(c, heldout, stop), daemon=True)
        sender.start()

        def value(expr):
            return prom.query(expr)

        gw = wait_for("gateway success count", lambda: value(
            'sum(nv_inference_request_success{job="kiln-gateway",model="digits"}) > 0'),
            timeout=30, interval=0.5)
        # Both replicas serve (power-of-two choices spreads the load): wait until a scrape of
        # each worker has counted some.
        workers = wait_for("worker success counts", lambda: (w := value(
            'nv_inference_request_success{job="kiln-worker",model="digits"} > 0'))
            and len(w) == 2 and w, timeout=30, interval=0.5)
        print(f"nv_inference_request_success: gateway {gw[0][1]:.0f}, workers "
              f"{[(m['instance'], v) for m, v in workers]}")
        assert len(workers) == 2

        replicas = wait_for("replicas ready == desired", lambda: (r := value(
            'kiln_deployment_replicas_ready{model="digits"} '
            '== on(model, version) kiln_deployment_replicas_desired')) and r,
            timeout=30, interval=0.5)
        print(f"kiln_deployment_replicas_ready == desired: {replicas}")
        assert replicas[0][1] == 2

        sessions = wait_for("session gauges", lambda: (s := value("kiln_etcd_session_up")) and
                            len(s) == 3 and s, timeout=30, interval=0.5)
        print(f"kiln_etcd_session_up: {sorted((m['job'], m['instance'], v) for m, v in sessions)}")
        assert all(v == 1 for _, v in sessions)
        assert {m["job"] for m, _ in sessions} == {"kiln-monitor", "kiln-worker"}

        age = value('kiln_routing_table_age_seconds{job="kiln-gateway"}')
        print(f"kiln_routing_table_age_seconds: {age}")
        assert len(age) == 1 and 0 <= age[0][1] < 600
        assert value('sum(kiln_routing_replicas{model="digits",state="ready"})')[0][1] == 2
        assert value('kiln_routing_watch_connected{job="kiln-gateway"}')[0][1] == 1

        drift = wait_for("the watch loop's drift verdict", lambda: value(
            'kiln_drift_share{job="kiln-monitor",model="digits",version="1"}'),
            timeout=60, interval=0.5)
        stop.set()
        features = value('count(kiln_drift_feature_score{model="digits",version="1"})')
        drifted = value('kiln_drift_dataset_drifted{model="digits",version="1"}')
        top = value('topk(3, kiln_drift_feature_psi{model="digits",version="1"})')
        slo = value('kiln_slo_window_p99_seconds{model="digits",version="1"}')
        outliers = value('kiln_outlier_ratio{model="digits",version="1"}')
        print(f"kiln_drift_share {drift[0][1]:.2f}, dataset drifted {drifted}, "
              f"{features[0][1]:.0f} features scored, top PSI "
              f"{[(m['feature'], round(v, 2)) for m, v in top]}, window p99 {slo}, "
              f"outlier ratio {outliers}")
        assert features[0][1] > 0
        assert drifted[0][1] == 1  # +6 on every pixel: the dataset drifted
        assert len(slo) == 1
        # Prometheus itself saw no scrape failures of the Kiln jobs.
        assert all(v == 1 for _, v in value('up{job=~"kiln-.*"}'))
    except BaseException:
        print(c.logs())
        if prom is not None:
            print((c.dir / "prometheus.log").read_text()[-4000:])
        raise
    finally:
        stop.set()
        if sender is not None:
            sender.join(timeout=15)
        if prom is not None:
            prom.close()
        c.close()
