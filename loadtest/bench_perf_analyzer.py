#!/usr/bin/env python3
"""perf_analyzer against Kiln, through the gateway and directly to a worker, in one run.

Starts a cluster of separate processes (etcd, monitor, gateway, one worker; release binaries
from KILN_BIN_DIR, default target/release), deploys `digits`, then runs Triton's perf_analyzer
(batch 1) at each concurrency against the gateway and against the worker. For every run it
reads the processes' CPU time from /proc/PID/stat before and after, and divides by the number
of inferences the worker counted, giving CPU microseconds per inference for each process.
Prints a Markdown table for docs/BENCHMARKS.md.

    cargo build --release --bins && .venv/bin/python loadtest/bench_perf_analyzer.py
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/e2e"))
os.environ.setdefault("KILN_BIN_DIR", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"))

from harness import Cluster, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def success_count(addr: str) -> int:
    import tritonclient.grpc as grpcclient
    stats = grpcclient.InferenceServerClient(url=addr).get_inference_statistics("digits", as_json=True)
    return sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0))
               for m in stats.get("model_stats", []))


def perf_analyzer_env() -> tuple[Path, dict]:
    """perf_analyzer of this venv and the environment it runs in (it links libcudart.so.12,
    from the nvidia-cuda-runtime wheel; no GPU is used)."""
    import nvidia.cuda_runtime
    lib = Path(nvidia.cuda_runtime.__path__[0]) / "lib"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    return Path(sys.executable).parent / "perf_analyzer", env


def perf_analyzer(url: str, concurrency: int, interval_ms: int, model: str = "digits",
                  cpus: str = "", stability_percent: int | None = None) -> dict:
    """One perf_analyzer measurement (batch 1, closed loop), optionally pinned to `cpus` and with
    its `-s` stability threshold."""
    pa, env = perf_analyzer_env()
    pin = ["taskset", "-c", cpus] if cpus else []
    stability = ["-s", str(stability_percent)] if stability_percent is not None else []
    out = subprocess.run(
        [*pin, pa, "-m", model, "-u", url, "-i", "grpc", "-b", "1",
         "--concurrency-range", str(concurrency), "--measurement-interval", str(interval_ms),
         "--max-trials", "20", *stability],
        capture_output=True, text=True, timeout=600, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}")
    out = out.stdout
    thr = float(re.search(r"Throughput: ([\d.]+) infer/sec", out).group(1))
    lat = {k: int(v) for k, v in re.findall(r"(p50|p99) latency: (\d+) usec", out)}
    return {"throughput": thr, "p50_us": lat.get("p50"), "p99_us": lat.get("p99")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--interval-ms", type=int, default=3000)
    args = ap.parse_args()
    c = Cluster(workers=1)
    try:
        c.kiln("deploy", "digits", "--version", "1", "--replicas", "1",
               "--package", str(ROOT / "models/digits/1"), "--no-wait")
        wait_for("ready replica", lambda: any(r["state"] == "READY" for r in c.replicas()), timeout=60)
        worker_addr = c.workers["w1"]
        gw_pid, wk_pid = c.procs["gateway"].pid, c.procs["w1"].pid
        rows = []
        for target, url in (("gateway → worker", c.gateway_addr), ("worker direct", worker_addr)):
            for conc in [int(x) for x in args.concurrency.split(",")]:
                n0, g0, w0 = success_count(worker_addr), cpu_seconds(gw_pid), cpu_seconds(wk_pid)
                r = perf_analyzer(url, conc, args.interval_ms)
                n = success_count(worker_addr) - n0
                g, w = cpu_seconds(gw_pid) - g0, cpu_seconds(wk_pid) - w0
                rows.append((target, conc, r, 1e6 * g / n if target.startswith("gateway") else 0.0, 1e6 * w / n))
                print(f"{target} c={conc}: {r} inferences={n}", file=sys.stderr)
        print("| path | concurrency | throughput (infer/s) | p50 (µs) | p99 (µs) | gateway CPU µs/infer | worker CPU µs/infer |")
        print("|---|---|---|---|---|---|---|")
        for target, conc, r, g, w in rows:
            gw = f"{g:.1f}" if target.startswith("gateway") else "—"
            print(f"| {target} | {conc} | {r['throughput']:.0f} | {r['p50_us']} | {r['p99_us']} | {gw} | {w:.1f} |")
    finally:
        c.close()


if __name__ == "__main__":
    main()
