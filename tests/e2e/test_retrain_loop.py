"""The drift → retrain → canary → promote loop through a real cluster (issue 6).

digits v1 serves; the traffic turns "faded" (models/digits/drift.py: every pixel × 0.6). The
monitor judges each 2 s window, fires KilnDataDrift after 2 drifted windows (to an
Alertmanager-style webhook served here), runs the retrain hook (models/digits/retrain.sh:
retrains on faded training data, `kiln profile`, `kiln register` as v2), deploys v2 as a
canary at weight 50, and promotes it after 2 windows within the SLO and without drift. Then
the faded traffic is v2's own distribution: no drift, and its predictions are right.
"""

import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc
import grpc

from harness import ROOT, Cluster, bin_dir, wait_for

sys.path.insert(0, str(ROOT / "models/digits"))
import drift  # noqa: E402


class Hooks:
    """An HTTP server collecting the JSON bodies POSTed to it."""

    def __init__(self):
        self.bodies = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status, name):
        return [a for b in self.bodies for a in b["alerts"]
                if a["status"] == status and a["labels"]["alertname"] == name]


class Traffic:
    """Sends `rows` through the gateway in batches of 8 (no version named: the deployment's
    weights decide) until stopped; counts answers per version and correct labels."""

    def __init__(self, c, rows, labels):
        self.c, self.rows, self.labels = c, rows, labels
        self.served, self.correct, self.total, self.errors = {}, 0, 0, 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        req = service_pb2.ModelInferRequest(model_name="digits")
        req.outputs.add(name="label")
        with grpc.insecure_channel(self.c.gateway_addr) as ch:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
            i = 0
            while not self.stop_flag.is_set():
                start = (i * 8) % (len(self.rows) - 8)
                i += 1
                batch, want = self.rows[start:start + 8], self.labels[start:start + 8]
                del req.inputs[:]
                del req.raw_input_contents[:]
                req.inputs.add(name="input", datatype="FP32", shape=list(batch.shape))
                req.raw_input_contents.append(batch.tobytes())
                try:
                    r = stub.ModelInfer(req, timeout=10)
                except grpc.RpcError:
                    self.errors += 1
                    continue
                got = np.frombuffer(r.raw_output_contents[0], dtype=np.int64)
                self.served[r.model_version] = self.served.get(r.model_version, 0) + 1
                self.correct += int((got == want).sum())
                self.total += len(want)
                time.sleep(0.01)

    def reset(self):
        self.served, self.correct, self.total = {}, 0, 0

    def stop(self):
        self.stop_flag.set()
        self.thread.join(timeout=15)


def deployment(c):
    for d in c.status()["deployments"]:
        if d["model"] == "digits":
            return {v["version"]: (v.get("traffic_weight", 0), v.get("retiring", False))
                    for v in d["versions"]}
    return {}


def models(c):
    return [m["version"] for m in json.loads(c.kiln("models", "-o", "json").stdout)
            if m["model"] == "digits"]


@pytest.fixture
def loop_env(monkeypatch):
    out = tempfile.mkdtemp(prefix="kiln-retrain-")
    monkeypatch.setenv("KILN_PYTHON", sys.executable)
    monkeypatch.setenv("KILN", str(bin_dir() / "kiln"))
    monkeypatch.setenv("KILN_RETRAIN_DIR", out)
    monkeypatch.setenv("KILN_DRIFT_SCENARIO", "faded")
    return out


def test_drift_retrains_canaries_and_promotes(heldout, loop_env):
    hooks = Hooks()
    fast_telemetry = ["--telemetry-interval-secs", "1"]
    c = Cluster(
        workers=2,
        worker_args={"w1": fast_telemetry, "w2": fast_telemetry},
        monitor_args=[
            "--telemetry-window-secs", "2", "--watch-settle-ms", "1500",
            "--drift-alert-windows", "2", "--canary-windows", "2", "--canary-weight", "50",
            "--slo-p99-ms", "2000", "--slo-min-requests", "10",
            "--retrain-command", str(ROOT / "models/digits/retrain.sh"),
            "--alert-webhook", hooks.url,
        ],
    )
    traffic = None
    t0 = time.monotonic()
    marks = {}

    def mark(what):
        marks[what] = round(time.monotonic() - t0, 1)
        print(f"t+{marks[what]:5.1f} s  {what}")

    try:
        c.kiln("deploy", "digits", "--version", "1", "--replicas", "1",
               "--package", str(ROOT / "models/digits/1"))
        mark("digits v1 ready")
        faded = drift.apply("faded", heldout["inputs"])
        traffic = Traffic(c, faded, heldout["labels"])
        wait_for("the drift alert at the webhook",
                 lambda: hooks.alerts("firing", "KilnDataDrift"), timeout=60, interval=0.2)
        alert = hooks.alerts("firing", "KilnDataDrift")[0]
        assert alert["labels"]["model"] == "digits" and alert["labels"]["version"] == "1"
        mark(f"KilnDataDrift fired: {alert['annotations']['summary']}")
        wait_for("v2 registered by the retrain hook", lambda: "2" in models(c),
                 timeout=120, interval=0.5)
        mark("v2 registered by the retrain hook")
        wait_for("v2 deployed as a canary", lambda: deployment(c).get("2") == (50, False),
                 timeout=60, interval=0.2)
        mark("v2 canary at weight 50")
        wait_for("v2 serves canary traffic", lambda: traffic.served.get("2", 0) > 20, timeout=60)
        wait_for("v2 promoted",
                 lambda: (d := deployment(c)).get("2") == (100, False)
                 and d.get("1", (0, True)) == (0, True), timeout=120, interval=0.2)
        mark(f"v2 promoted; answers so far by version: {traffic.served}")
        wait_for("the drift alert resolved",
                 lambda: hooks.alerts("resolved", "KilnDataDrift"), timeout=60, interval=0.2)
        mark("KilnDataDrift resolved")
        traffic.reset()
        wait_for("v2 alone serves", lambda: traffic.served.get("2", 0) >= 100
                 and "1" not in traffic.served, timeout=60)
        accuracy = traffic.correct / traffic.total
        r = json.loads(c.kiln("drift", "digits", "--version", "2", "-o", "json").stdout)
        mark(f"v2 on faded digits: accuracy {accuracy:.3f} over {traffic.total} rows; "
             f"drift: {r.get('drifted_features', 0)} of {len(r.get('features', []))} features, "
             f"dataset drift {r.get('drifted', False)}")
        assert accuracy > 0.9
        assert not r.get("drifted", False), r
        assert traffic.errors == 0
    except BaseException:
        print(c.logs())
        raise
    finally:
        if traffic:
            traffic.stop()
        hooks.server.shutdown()
        c.close()
