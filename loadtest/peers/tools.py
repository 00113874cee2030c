"""The two load generators (perf_analyzer, kiln-loadtest) and the per-process CPU accounting.

Both tools are run the same way against every target: gRPC, batch 1, closed loop at one
concurrency, model ``digits``. Each returns a dict with ``throughput`` (infer/s), ``p50_us``,
``p99_us`` and the raw output, and raises ``ToolError`` (with the tail of the output) when the
tool fails.

CPU accounting reads utime + stime from ``/proc/PID/stat`` for every process of the server's
process trees (the roots and all their descendants at the moment of reading).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


class ToolError(RuntimeError):
    """A load generator exited with an error or printed no result."""


def _children_map() -> dict[int, list[int]]:
    """ppid -> pids of every process now alive."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree_pids(roots: list[int]) -> list[int]:
    """The roots and all their descendants now alive."""
    children = _children_map()
    seen, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_name(pid: int) -> str:
    """The command name of a process ('?' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def tree_cpu(roots: list[int]) -> dict[int, float]:
    """CPU seconds of every process of the trees under `roots`, by pid."""
    return {pid: cpu_seconds(pid) for pid in tree_pids(roots)}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two `tree_cpu` snapshots (processes born in between count
    from zero)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def perf_analyzer_cmd(venv: Path) -> tuple[list[str], dict]:
    """perf_analyzer from the tritonclient wheel in `venv`, and an environment in which it finds
    libcudart.so.12 (the nvidia-cuda-runtime-cu12 wheel; no GPU is used)."""
    pa = venv / "bin" / "perf_analyzer"
    if not pa.exists():
        raise ToolError(f"{pa} missing: run deploy/local/setup.sh (installs tritonclient==2.50.0)")
    lib = list((venv / "lib").glob("python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = dict(os.environ)
    if lib:
        env["LD_LIBRARY_PATH"] = f"{lib[0]}:{env.get('LD_LIBRARY_PATH', '')}"
    return [str(pa)], env


def _pa_once(argv: list[str], env: dict, seconds: float) -> tuple[int, str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30 * seconds + 120)
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"perf_analyzer timed out after {e.timeout:.0f}s") from e
    return out.returncode, out.stdout + out.stderr


def run_perf_analyzer(venv: Path, url: str, concurrency: int, seconds: float,
                      model: str = "digits", pin: tuple[str, ...] = ()) -> dict:
    """perf_analyzer, gRPC, batch 1, one concurrency. Windows of `seconds`/3 (it reports the mean
    of the last 3 windows, so about `seconds` of measurement), at most 10 windows, `-v`.

    Stability: first `-s 20` (the 3 last windows within 20 % of each other); if perf_analyzer
    gives up ("Failed to obtain stable measurement"), once more with `-s 50`, and the result is
    marked ``stable: False`` with the stability that was used. If that fails too, the mean
    throughput of the last 3 windows is reported (no percentiles) and ``stable`` is False."""
    cmd, env = perf_analyzer_cmd(venv)
    window_ms = max(500, int(seconds * 1000 / 3))
    base = [*pin, *cmd, "-v", "-m", model, "-u", url, "-i", "grpc", "-b", "1",
            "--concurrency-range", str(concurrency), "--measurement-interval", str(window_ms),
            "--max-trials", "10"]
    outputs = []
    for stability in (20, 50):
        argv = [*base, "-s", str(stability)]
        rc, text = _pa_once(argv, env, seconds)
        outputs.append(f"$ {' '.join(argv)}\n{text}")
        thr = re.findall(r"Throughput: ([\d.]+) infer/sec", text)
        p50 = re.findall(r"p50 latency: (\d+) usec", text)
        p99 = re.findall(r"p99 latency: (\d+) usec", text)
        if rc == 0 and thr and p50 and p99:
            # The last block is the reported one (the summary after the passes).
            return {"throughput": float(thr[-1]), "p50_us": int(p50[-1]), "p99_us": int(p99[-1]),
                    "stable": stability == 20, "stability_pct": stability, "argv": argv,
                    "output": "\n".join(outputs)}
        if "Failed to obtain stable measurement" not in text:
            raise ToolError(f"perf_analyzer failed (exit {rc}):\n{text[-3000:]}")
    passes = [float(v) for v in re.findall(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec", text)]
    if len(passes) < 3:
        raise ToolError(f"perf_analyzer never stable and too few windows:\n{text[-3000:]}")
    return {"throughput": sum(passes[-3:]) / 3, "p50_us": None, "p99_us": None, "stable": False,
            "stability_pct": None, "argv": argv, "output": "\n".join(outputs)}


def run_kiln_loadtest(binary: Path, url: str, concurrency: int, seconds: float,
                      model: str = "digits", pin: tuple[str, ...] = ()) -> dict:
    """kiln-loadtest, closed loop at `concurrency`, batch 1, 2 s warm-up, `seconds` measured
    (its default connection count: min(concurrency, 4)).

    A run that sent no request at all in its measured window (seen now and then with the
    release binary of 2026-11-26, mostly when pinned to one CPU) is repeated, up to 3 runs;
    ``attempts`` says how many it took."""
    outputs = []
    for attempt in range(1, 4):
        with tempfile.TemporaryDirectory(prefix="kiln-peers-lt-") as tmp:
            report = Path(tmp) / "report.json"
            argv = [*pin, str(binary), "--url", url, "--model", model, "--batch-size", "1",
                    "--concurrency", str(concurrency), "--warmup", "2s", "--duration", f"{seconds}s",
                    "--json", str(report)]
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
            except subprocess.TimeoutExpired as e:
                raise ToolError(f"kiln-loadtest timed out after {e.timeout:.0f}s") from e
            outputs.append(f"$ {' '.join(argv)}\n{out.stdout}{out.stderr}")
            if out.returncode != 0 or not report.exists():
                raise ToolError(f"kiln-loadtest failed (exit {out.returncode}):\n"
                                f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
            r = json.loads(report.read_text())
        if r["sent"] > 0:
            break
        print(f"    kiln-loadtest sent nothing in its measured window (attempt {attempt}); again",
              file=sys.stderr, flush=True)
    else:
        raise ToolError("kiln-loadtest sent no request in 3 runs:\n" + outputs[-1][-2000:])
    lat = r.get("latency_us") or {}
    if r["errors"]:
        print(f"    kiln-loadtest: {r['errors']} errors: {r['statuses']}", file=sys.stderr)
    return {"throughput": float(r["inferences_per_s"]), "p50_us": lat.get("p50"),
            "p99_us": lat.get("p99"), "errors": int(r["errors"]), "ok": int(r["ok"]),
            "attempts": attempt, "argv": argv, "output": "\n".join(outputs), "report": r}


def pin_processes(pids: list[int], cpus: str) -> None:
    """Pins every thread of `pids` to `cpus` (taskset -a -p -c)."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
