#!/usr/bin/env python3
"""Do kiln-loadtest and perf_analyzer measure the same thing? Same server, same load, one run.

Starts `kiln up --workers 1` (release build, every service in one process) pinned to
`--server-cpus`, deploying `--model` (default digits_cnn: ~150 µs of compute per batch-1
request, so the server, not either client, limits throughput), then drives the worker directly
with perf_analyzer and with kiln-loadtest, each pinned to `--client-cpus`, one after the other
at each concurrency (closed loop, batch 1), and prints throughput and p50/p99 of both and their
difference. Exits 1 if any throughput or p50 differs by more than `--tolerance` percent.

    cargo build --release --bins && .venv/bin/python loadtest/bench_agreement.py
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_perf_analyzer import perf_analyzer  # noqa: E402


def start_cluster(model: str, cpus: str, log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(["taskset", "-c", cpus, str(BIN / "kiln"), "up", "--workers", "1",
                             "--ephemeral-ports", "--deploy", f"{model}:1"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log.read_text()
        if "\nCall " in text:
            return proc, re.search(r"^\s+worker-1\s+(\S+)", text, re.M)[1]
        if proc.poll() is not None:
            raise SystemExit(f"kiln up exited:\n{text[-2000:]}")
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("kiln up did not become ready in 180 s")


def kiln_loadtest(addr: str, model: str, c: int, cpus: str, seconds: float, connections: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run(["taskset", "-c", cpus, str(BIN / "kiln-loadtest"), "--url", addr,
                        "--model", model, "--concurrency", str(c), "--connections", str(min(c, connections)),
                        "--warmup", "2s", "--duration", f"{seconds}s", "--progress", "off",
                        "--json", f.name],
                       check=True, stdout=subprocess.DEVNULL, timeout=seconds + 120)
        r = json.loads(Path(f.name).read_text())
    return {"thr": r["inferences_per_s"], "p50": r["latency_us"]["p50"], "p99": r["latency_us"]["p99"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="digits_cnn")
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--client-cpus", default="1")
    ap.add_argument("--seconds", type=float, default=9.0, help="kiln-loadtest's measured window")
    ap.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer's -p")
    ap.add_argument("--connections", type=int, default=1,
                    help="kiln-loadtest's HTTP/2 connections (perf_analyzer shares one gRPC channel)")
    ap.add_argument("--tolerance", type=float, default=10.0, help="percent")
    args = ap.parse_args()
    log = Path(tempfile.mkdtemp(prefix="kiln-agreement-")) / "up.log"
    proc, addr = start_cluster(args.model, args.server_cpus, log)
    rows, worst = [], 0.0
    try:
        for c in (int(x) for x in args.levels.split(",")):
            r = perf_analyzer(addr, c, args.window_ms, args.model, args.client_cpus, stability_percent=10)
            pa = {"thr": r["throughput"], "p50": r["p50_us"], "p99": r["p99_us"]}
            lt = kiln_loadtest(addr, args.model, c, args.client_cpus, args.seconds, args.connections)
            d_thr = 100 * (lt["thr"] / pa["thr"] - 1)
            d_p50 = 100 * (lt["p50"] / pa["p50"] - 1)
            worst = max(worst, abs(d_thr), abs(d_p50))
            rows.append((c, pa, lt, d_thr, d_p50))
            print(f"c={c}: perf_analyzer {pa}, kiln-loadtest {lt}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"\nmodel {args.model}, worker direct, server CPUs {args.server_cpus}, client CPUs "
          f"{args.client_cpus}, kiln-loadtest connections {args.connections}")
    print("| concurrency | perf_analyzer infer/s | kiln-loadtest infer/s | Δ throughput | "
          "perf_analyzer p50 / p99 (µs) | kiln-loadtest p50 / p99 (µs) | Δ p50 |")
    print("|---|---|---|---|---|---|---|")
    for c, pa, lt, d_thr, d_p50 in rows:
        print(f"| {c} | {pa['thr']:.0f} | {lt['thr']:.0f} | {d_thr:+.1f} % | {pa['p50']} / {pa['p99']} | "
              f"{lt['p50']} / {lt['p99']} | {d_p50:+.1f} % |")
    print(f"\nlargest difference {worst:.1f} % (tolerance {args.tolerance} %)")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
