"""Starts a real Kiln cluster as separate processes for the end-to-end tests.

etcd (from PATH) on free loopback ports in a temporary directory, one monitor, one gateway and
N workers, each its own process built from this checkout (`target/debug` unless KILN_BIN_DIR
says otherwise). Everything is killed when the cluster is closed.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEASE_TTL_SECS = 2


_HANDED_OUT = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in this process (the kernel may hand a
    just-closed port out again, and two services of one cluster must not get the same)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def bin_dir() -> Path:
    if os.environ.get("KILN_BIN_DIR"):
        return Path(os.environ["KILN_BIN_DIR"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug"


def wait_for(what, predicate, timeout=30.0, interval=0.05):
    """Polls `predicate` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the thing polled may not be up yet
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class Cluster:
    def __init__(self, workers: int = 2, worker_args=None, monitors: int = 1, monitor_args=(),
                 gateway_args=()):
        worker_args = worker_args or {}
        self.monitor_args = list(monitor_args)
        self.gateway_args = list(gateway_args)
        self.dir = Path(tempfile.mkdtemp(prefix="kiln-e2e-"))
        self.procs = {}
        self.bins = bin_dir()
        self.etcd_url = f"http://127.0.0.1:{free_port()}"
        self.etcd_peer = f"http://127.0.0.1:{free_port()}"
        self.gateway_addr = f"127.0.0.1:{free_port()}"
        self.gateway_http = f"127.0.0.1:{free_port()}"
        self.max_message_bytes = 4 * 1024 * 1024
        self.workers = {}
        # name -> (gRPC address, HTTP address)
        self.monitors = {}
        self._start_etcd()
        for i in range(1, monitors + 1):
            self.start_monitor(f"monitor{i}" if monitors > 1 else "monitor")
        self.monitor_addr = next(iter(self.monitors.values()))[0]
        for i in range(1, workers + 1):
            self.start_worker(f"w{i}", worker_args.get(f"w{i}", []))
        self._spawn("gateway", [
            self.bins / "kiln-gateway",
            "--etcd", self.etcd_url,
            "--grpc-addr", self.gateway_addr,
            "--http-addr", self.gateway_http,
            "--max-message-bytes", str(self.max_message_bytes),
            *self.gateway_args,
        ])
        self.wait_ready(workers)

    def status(self):
        return json.loads(self.kiln("status", "--output", "json").stdout)

    def wait_ready(self, workers: int):
        """Waits until the monitor answers, every worker registered and the gateway is ready."""
        wait_for(f"{workers} registered workers", lambda: len(self.status()["workers"]) == workers)
        import tritonclient.grpc as grpcclient
        gateway = grpcclient.InferenceServerClient(url=self.gateway_addr)
        wait_for("gateway ready", gateway.is_server_ready)

    def _start_etcd(self):
        """Starts etcd (again, on the same ports and data directory after `kill("etcd")`)."""
        peer = self.etcd_peer
        self._spawn("etcd", [
            "etcd", "--name", "e2e", "--data-dir", self.dir / "etcd",
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e2e={peer}", "--log-level", "error",
        ])

    def restart_etcd(self):
        self._start_etcd()

    def start_monitor(self, name: str):
        grpc, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        self.monitors[name] = (grpc, http)
        self._spawn(name, [
            self.bins / "kiln-monitor",
            "--etcd", self.etcd_url,
            "--grpc-addr", grpc,
            "--http-addr", http,
            "--lease-ttl-secs", str(LEASE_TTL_SECS),
            "--repository", self.dir / "repository",
            *self.monitor_args,
        ])

    def leaders(self):
        """Names of the monitors whose /metrics say they lead the controller."""
        import urllib.request
        out = []
        for name, (_, http) in self.monitors.items():
            if self.procs[name].poll() is not None:
                continue
            try:
                body = urllib.request.urlopen(f"http://{http}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            if any(line.split() == ["kiln_controller_is_leader", "1"] for line in body.splitlines()):
                out.append(name)
        return out

    def load(self, rate: int, duration_s: int, model: str = "digits", name: str = "load"):
        """Starts kiln-loadtest against the gateway in an open loop; see `Load`."""
        return Load(self, rate, duration_s, model, name)

    def start_worker(self, worker_id: str, extra_args=()):
        addr = f"127.0.0.1:{free_port()}"
        self.workers[worker_id] = addr
        self.worker_args = getattr(self, "worker_args", {})
        self.worker_args[worker_id] = list(extra_args)
        self._spawn(worker_id, [
            self.bins / "kiln-worker",
            "--id", worker_id,
            "--etcd", self.etcd_url,
            "--grpc-addr", addr,
            "--http-addr", f"127.0.0.1:{free_port()}",
            "--lease-ttl-secs", str(LEASE_TTL_SECS),
            *extra_args,
        ])
        return addr

    def _spawn(self, name, argv):
        log = open(self.dir / f"{name}.log", "a")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.procs[name] = subprocess.Popen(
            [str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )

    def kiln(self, *args, check=True) -> subprocess.CompletedProcess:
        """Runs the `kiln` CLI against this cluster's admin API."""
        argv = [str(self.bins / "kiln"), "--admin", f"http://{self.monitor_addr}", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=check, cwd=ROOT, timeout=120)

    def replicas(self):
        return self.status()["replicas"]

    def kill(self, name: str, sig=signal.SIGKILL):
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(timeout=90)

    def logs(self) -> str:
        parts = []
        for f in sorted(self.dir.glob("*.log")):
            parts.append(f"==== {f.name}\n" + f.read_text()[-4000:])
        return "\n".join(parts)

    def close(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Load:
    """kiln-loadtest in an open loop at `rate` requests/s against the gateway, as a child process.
    `stop()` ends it early with SIGINT (it still reports) and returns its JSON report."""

    def __init__(self, cluster, rate, duration_s, model, name):
        self.out = cluster.dir / f"{name}.json"
        self.proc = subprocess.Popen(
            [str(cluster.bins / "kiln-loadtest"), "--url", cluster.gateway_addr, "--model", model,
             "--rate", str(rate), "--duration", f"{duration_s}s", "--warmup", "0s",
             "--timeout", "5s", "--progress", "off", "--json", str(self.out)],
            stdout=open(cluster.dir / f"{name}.log", "w"), stderr=subprocess.STDOUT, cwd=ROOT)
        self.started = time.monotonic()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self, timeout=600):
        self.proc.wait(timeout=timeout)
        assert self.out.exists(), f"kiln-loadtest wrote no report (exit {self.proc.returncode})"
        return json.loads(self.out.read_text())


def summary(report) -> str:
    """One line for the test log: sent, OK, failures by status, rate, p99."""
    failed = {k: v["count"] for k, v in report["statuses"].items() if k != "OK"}
    lat = report.get("latency_us") or {}
    return (f"{report['sent']} requests in {report['measured_s']:.1f}s "
            f"({report['sent'] / max(report['measured_s'], 1e-9):.0f}/s), {report['ok']} OK, "
            f"failed {failed or 0}, not sent {report['not_sent']}, "
            f"OK p50 {lat.get('p50', 0) / 1000:.2f} ms p99 {lat.get('p99', 0) / 1000:.2f} ms")
