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
    def __init__(self, workers: int = 2, worker_args=None):
        worker_args = worker_args or {}
        self.dir = Path(tempfile.mkdtemp(prefix="kiln-e2e-"))
        self.procs = {}
        self.bins = bin_dir()
        self.etcd_url = f"http://127.0.0.1:{free_port()}"
        self.monitor_addr = f"127.0.0.1:{free_port()}"
        self.gateway_addr = f"127.0.0.1:{free_port()}"
        self.gateway_http = f"127.0.0.1:{free_port()}"
        self.max_message_bytes = 4 * 1024 * 1024
        self.workers = {}
        self._start_etcd()
        self._spawn("monitor", [
            self.bins / "kiln-monitor",
            "--etcd", self.etcd_url,
            "--grpc-addr", self.monitor_addr,
            "--http-addr", f"127.0.0.1:{free_port()}",
            "--lease-ttl-secs", str(LEASE_TTL_SECS),
        ])
        for i in range(1, workers + 1):
            self.start_worker(f"w{i}", worker_args.get(f"w{i}", []))
        self._spawn("gateway", [
            self.bins / "kiln-gateway",
            "--etcd", self.etcd_url,
            "--grpc-addr", self.gateway_addr,
            "--http-addr", self.gateway_http,
            "--max-message-bytes", str(self.max_message_bytes),
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
        peer = f"http://127.0.0.1:{free_port()}"
        self._spawn("etcd", [
            "etcd", "--name", "e2e", "--data-dir", self.dir / "etcd",
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e2e={peer}", "--log-level", "error",
        ])

    def start_worker(self, worker_id: str, extra_args=()):
        addr = f"127.0.0.1:{free_port()}"
        self.workers[worker_id] = addr
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
        log = open(self.dir / f"{name}.log", "w")
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
        proc.wait(timeout=30)

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
