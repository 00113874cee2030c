"""Idempotent installation of the peer servers into git-ignored venvs under ``.peers/``.

Each venv is made with Debian's ``/usr/bin/python3.11`` (PyTriton's bundled tritonserver and its
Python backend stub are built against it) and gets pinned requirements. A stamp file in the venv
records what was installed; when it matches, nothing runs. pip downloads are cached in
``.peers/pip-cache``, so a rebuilt venv does not download again.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PYTHON = "/usr/bin/python3.11"


@dataclass(frozen=True)
class VenvSpec:
    """A venv under .peers/: its name and pinned requirements."""

    name: str
    requirements: tuple[str, ...]


MLSERVER = VenvSpec("mlserver", (
    "mlserver==1.7.1",
    "mlserver-sklearn==1.7.1",
    "uvloop==0.21.0",          # newer uvloop: MLServer's inference workers die at start
    "scikit-learn==1.9.1",     # the version models/digits/train.py was run with
    "numpy==2.4.6",
))
TRITON = VenvSpec("triton", (
    "nvidia-pytriton==0.7.0",  # bundles tritonserver 2.51 with its Python backend
    "onnxruntime==1.32.0",     # runs models/digits/1/model.onnx in the bound function
    "numpy==1.26.4",
))
SPECS = {s.name: s for s in (MLSERVER, TRITON)}


def venv_python(peers: Path, spec: VenvSpec) -> Path:
    """The python of a peer venv."""
    return peers / spec.name / "bin" / "python"


def _stamp(spec: VenvSpec) -> dict:
    return {"python": PYTHON, "requirements": list(spec.requirements)}


def _run_logged(argv: list[str], log: Path, prefix: str, env: dict) -> None:
    """Runs `argv`, appending its output to `log` and echoing progress lines with `prefix`."""
    with log.open("a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                if line.startswith(("Collecting", "Installing", "Successfully", "ERROR")):
                    print(f"  [{prefix}] {line.rstrip()[:150]}", flush=True)
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if rc != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... failed ({rc}); see {log}")


def ensure(peers: Path, spec: VenvSpec) -> Path:
    """Creates and fills the venv of `spec` unless its stamp says it is done; returns its python."""
    venv = peers / spec.name
    stamp_file = venv / "kiln-peers-stamp.json"
    py = venv_python(peers, spec)
    if py.exists() and stamp_file.exists() and json.loads(stamp_file.read_text()) == _stamp(spec):
        print(f"[install] {spec.name}: up to date ({venv})", flush=True)
        return py
    if not Path(PYTHON).exists():
        raise RuntimeError(f"{PYTHON} not found: apt-get install python3.11 python3.11-venv")
    logs = peers / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"install-{spec.name}.log"
    env = dict(os.environ, PIP_CACHE_DIR=str(peers / "pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    t0 = time.monotonic()
    print(f"[install] {spec.name}: {' '.join(spec.requirements)} (log {log}; slow the first time)", flush=True)
    if not py.exists():
        _run_logged([PYTHON, "-m", "venv", str(venv)], log, spec.name, env)
    _run_logged([str(py), "-m", "pip", "install", "--progress-bar", "off", *spec.requirements],
                log, spec.name, env)
    stamp_file.write_text(json.dumps(_stamp(spec), indent=2))
    print(f"[install] {spec.name}: done in {time.monotonic() - t0:.0f} s", flush=True)
    return py


def freeze(py: Path) -> str:
    """`pip freeze` of a venv (for the record of versions)."""
    out = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120)
    return out.stdout


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    for s in SPECS.values():
        ensure(root / ".peers", s)
    sys.exit(0)
