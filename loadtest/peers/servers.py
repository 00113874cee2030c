"""The four targets of the peer benchmark: how each is started, stopped, checked and counted.

Every target exposes the same things to ``run.py``: ``url`` (gRPC, Open Inference Protocol),
``cpu_roots()`` (the pids whose process trees are the server whose CPU is charged per
inference), ``inferences()`` (a server-side counter of successful inferences), and
``labels(x)`` (the predicted label of each row, for the correctness check against the ONNX
reference). ``start()`` waits until the model answers; ``stop()`` ends every process the target
started, also when it is called after an error or Ctrl-C.

- ``kiln-gateway`` / ``kiln-worker``: one Kiln cluster of separate processes (etcd, monitor,
  gateway, one worker; release binaries) from ``tests/e2e/harness.py``, ``digits`` v1 with one
  replica. Through the gateway the charged CPU is gateway + worker; direct, the worker. Counter:
  the worker's ModelStatistics ``success`` count.
- ``mlserver``: ``mlserver_serve.py`` in ``.peers/mlserver`` with the retrained sklearn model.
  Counter: ``model_infer_request_success_total`` from its Prometheus endpoint.
- ``triton``: ``triton_serve.py`` in ``.peers/triton`` (PyTriton 0.7.0, tritonserver 2.51).
  Counter: ModelStatistics ``success`` count (with the access-token header).
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests/e2e"))

from harness import Cluster, free_port, wait_for  # noqa: E402

from model_config import response as model_config_response  # noqa: E402
from tools import tree_pids  # noqa: E402

PACKAGE = ROOT / "models/digits/1"
HELDOUT = ROOT / "models/digits/testdata/heldout.json"
TOKEN_HEADER = "triton-grpc-protocol-triton-access-token"
START_TIMEOUT_S = 240


def grpc_client(url: str):
    """A tritonclient gRPC client (project venv)."""
    import tritonclient.grpc as grpcclient
    return grpcclient.InferenceServerClient(url=url)


def infer_labels(url: str, x: np.ndarray, output: str, batch: int = 50) -> np.ndarray:
    """Labels for the rows of `x`, sent in requests of `batch` rows; `output` is the tensor
    holding the label (or the probabilities, whose argmax is the label)."""
    import tritonclient.grpc as grpcclient
    client = grpc_client(url)
    labels = []
    for i in range(0, len(x), batch):
        part = np.ascontiguousarray(x[i:i + batch], dtype=np.float32)
        inp = grpcclient.InferInput("input", list(part.shape), "FP32")
        inp.set_data_from_numpy(part)
        out = client.infer("digits", [inp]).as_numpy(output)
        labels.append(out.reshape(len(part), -1).argmax(1) if out.ndim == 2 and out.shape[1] > 1
                      else out.reshape(-1))
    return np.concatenate(labels).astype(np.int64)


def stop_process_tree(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the process group of `proc` (started with start_new_session), then SIGKILL
    to whatever of its tree is left after `grace_s`."""
    if proc.poll() is not None:
        return
    pids = tree_pids([proc.pid])
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    for pid in [*pids, *tree_pids([proc.pid])]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class _TrackedCluster(Cluster):
    """The harness's Cluster, registered before its first process starts, so that a start that
    fails half-way (Cluster.__init__ raising) can still be closed."""

    started: list["_TrackedCluster"] = []

    def _start_etcd(self):
        _TrackedCluster.started.append(self)
        super()._start_etcd()


class KilnCluster:
    """One Kiln cluster (etcd, monitor, gateway, one worker) shared by both Kiln targets."""

    def __init__(self):
        self.cluster = None

    def start(self) -> None:
        if self.cluster is not None:
            return
        try:
            self.cluster = _TrackedCluster(workers=1)
        except BaseException:
            while _TrackedCluster.started:
                _TrackedCluster.started.pop().close()
            raise
        try:
            self.cluster.kiln("deploy", "digits", "--version", "1", "--replicas", "1",
                              "--package", str(PACKAGE), "--no-wait")
            wait_for("a ready digits replica",
                     lambda: any(r["state"] == "READY" for r in self.cluster.replicas()), timeout=90)
        except BaseException:
            print(self.cluster.logs(), file=sys.stderr)
            self.stop()
            raise

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        while _TrackedCluster.started:
            _TrackedCluster.started.pop().close()

    @property
    def worker_addr(self) -> str:
        return self.cluster.workers["w1"]

    def pid(self, name: str) -> int:
        return self.cluster.procs[name].pid

    def success_count(self) -> int:
        stats = grpc_client(self.worker_addr).get_inference_statistics("digits", as_json=True)
        return sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0))
                   for m in stats.get("model_stats", []))


class KilnTarget:
    """Kiln through the gateway (`via_gateway`) or direct to the worker."""

    label_output = "label"

    def __init__(self, shared: KilnCluster, via_gateway: bool):
        self.shared = shared
        self.via_gateway = via_gateway
        self.name = "kiln-gateway" if via_gateway else "kiln-worker"
        self.description = ("Kiln gateway → worker (flex backend, release build)" if via_gateway
                            else "Kiln worker, called directly (flex backend, release build)")

    def start(self) -> None:
        self.shared.start()

    def stop(self) -> None:
        """The cluster is stopped by whoever owns it (after both Kiln targets)."""

    @property
    def url(self) -> str:
        c = self.shared.cluster
        return c.gateway_addr if self.via_gateway else self.shared.worker_addr

    def cpu_roots(self) -> list[int]:
        roots = [self.shared.pid("w1")]
        return [self.shared.pid("gateway"), *roots] if self.via_gateway else roots

    def inferences(self) -> int:
        return self.shared.success_count()

    def logs(self) -> str:
        return self.shared.cluster.logs() if self.shared.cluster else ""


class _PythonServer:
    """A peer server run as one Python process tree in a temporary directory: launch, wait
    until the digits model is ready, stop, logs. Subclasses set `name`, `log_name`,
    `stop_grace_s` and implement `start` (calling `_launch`) and `inferences`."""

    log_name = "server.log"
    stop_grace_s = 20.0

    def __init__(self, python: Path):
        self.python = python
        self.proc = None
        self.tmp = None
        self.grpc_port = None

    def _launch(self, argv: list, what: str, env: dict | None = None) -> None:
        log = open(self.tmp / self.log_name, "w")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp,
                                     start_new_session=True, env=env)
        log.close()
        try:
            # An exited server ends the wait at once (wait_for swallows the predicate's errors).
            wait_for(f"{what}'s digits model ready", self._ready_or_exited,
                     timeout=START_TIMEOUT_S, interval=0.5)
        except BaseException:
            print(self.logs()[-3000:], file=sys.stderr)
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({self.proc.returncode}):\n{self.logs()[-3000:]}")

    def _ready_or_exited(self) -> bool:
        return self.proc.poll() is not None or grpc_client(self.url).is_model_ready("digits")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_tree(self.proc, grace_s=self.stop_grace_s)
            self.proc = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def cpu_roots(self) -> list[int]:
        return [self.proc.pid]

    def logs(self) -> str:
        p = self.tmp / self.log_name if self.tmp else None
        return p.read_text(errors="replace") if p and p.exists() else ""


class MLServerTarget(_PythonServer):
    """MLServer 1.7.1 + mlserver-sklearn, the digits MLP retrained into a joblib file."""

    name = "mlserver"
    label_output = "predict_proba"
    description = ("MLServer 1.7.1 + mlserver-sklearn (sklearn MLPClassifier retrained "
                   "deterministically, predict_proba), 1 parallel worker, debug off")

    log_name = "mlserver.log"

    def __init__(self, python: Path):
        super().__init__(python)
        self.parity = None
        self.metrics_port = None

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="kiln-peers-mlserver-"))
        print("  retraining the sklearn model (models/digits/train.py's code and seed)...", flush=True)
        out = subprocess.run([str(self.python), str(HERE / "digits_sklearn.py"), "--heldout", str(HELDOUT),
                              "--out", str(self.tmp / "model" / "model.joblib")],
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"retraining failed or differs from ONNX:\n{out.stdout}\n{out.stderr[-3000:]}")
        self.parity = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  retrained: {self.parity}", flush=True)
        config = self.tmp / "model-config.bin"
        config.write_bytes(model_config_response())
        self.grpc_port, http_port, self.metrics_port = free_port(), free_port(), free_port()
        self._launch(
            [str(self.python), str(HERE / "mlserver_serve.py"), "--model-dir", str(self.tmp / "model"),
             "--workdir", str(self.tmp / "work"), "--grpc-port", str(self.grpc_port),
             "--http-port", str(http_port), "--metrics-port", str(self.metrics_port),
             "--model-config", str(config)],
            "MLServer")

    def inferences(self) -> int:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        return int(sum(float(v) for v in re.findall(
            r'^model_infer_request_success_total\{[^}]*model="digits"[^}]*\} ([\d.e+]+)$', text, re.M)))


class TritonTarget(_PythonServer):
    """Triton Inference Server 2.51 through PyTriton 0.7.0, onnxruntime on model.onnx."""

    name = "triton"
    label_output = "label"
    description = ("Triton 2.51 (PyTriton 0.7.0, Python backend), onnxruntime 1.32 on "
                   "models/digits/1/model.onnx, dynamic batching max 64, queue delay 0, 1 instance")

    log_name = "triton.log"
    stop_grace_s = 40.0

    def __init__(self, python: Path):
        super().__init__(python)
        self.token = secrets.token_urlsafe(24)

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="kiln-peers-triton-"))
        self.grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
        self._launch(
            [str(self.python), str(HERE / "triton_serve.py"), "--model", str(PACKAGE / "model.onnx"),
             "--grpc-port", str(self.grpc_port), "--http-port", str(http_port),
             "--metrics-port", str(metrics_port),
             f"--access-token={self.token}"],  # a token may start with "-"
            "Triton", env=dict(os.environ, PYTRITON_HOME=str(self.tmp / "home")))

    def inferences(self) -> int:
        stats = grpc_client(self.url).get_inference_statistics(
            "digits", headers={TOKEN_HEADER: self.token}, as_json=True)
        return sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0))
                   for m in stats.get("model_stats", []))


def check_labels(target, heldout: dict) -> dict:
    """Sends the 450 held-out rows and compares the labels with the ONNX reference."""
    x = np.array(heldout["inputs"], dtype=np.float32)
    ref = np.array(heldout["ort_label"], dtype=np.int64)
    got = infer_labels(target.url, x, target.label_output)
    return {"rows": int(len(x)), "label_mismatches_vs_onnx": int((got != ref).sum())}


def load_heldout() -> dict:
    """models/digits/testdata/heldout.json."""
    return json.loads(HELDOUT.read_text())


def wait_until(deadline_s: float, step_s: float, predicate) -> bool:
    """Polls `predicate` every `step_s` until true or `deadline_s` passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()
