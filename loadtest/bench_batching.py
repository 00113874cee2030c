#!/usr/bin/env python3
"""Dynamic batching on vs off, in one run, with perf_analyzer (batch-1 requests).

Starts etcd, a monitor, a gateway and two workers from release binaries: `w1` with the dynamic
batcher (default), `w2` with `--no-dynamic-batching`. `--model` (default `digits`, version 1 from
`models/`) is deployed on both; perf_analyzer
then drives each worker directly at each concurrency. Reports throughput, p50/p99, and the
average executed batch size (inferences / executions from ModelStatistics).

    cargo build --release --bins && .venv/bin/python loadtest/bench_batching.py
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/e2e"))
sys.path.insert(0, str(ROOT / "loadtest"))
os.environ.setdefault("KILN_BIN_DIR", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"))

from bench_perf_analyzer import perf_analyzer  # noqa: E402
from harness import Cluster, wait_for  # noqa: E402


def counts(addr: str, model: str):
    import tritonclient.grpc as grpcclient
    stats = grpcclient.InferenceServerClient(url=addr).get_inference_statistics(model, as_json=True)
    m = stats["model_stats"][0]
    return int(m.get("inference_count", 0)), int(m.get("execution_count", 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--interval-ms", type=int, default=3000)
    ap.add_argument("--model", default="digits")
    args = ap.parse_args()
    c = Cluster(workers=2, worker_args={"w2": ["--no-dynamic-batching"]})
    try:
        c.kiln("deploy", args.model, "--version", "1", "--replicas", "2",
               "--package", str(ROOT / "models" / args.model / "1"), "--no-wait")
        wait_for("2 ready replicas",
                 lambda: sum(r["state"] == "READY" for r in c.replicas()) == 2, timeout=60)
        print("| worker | concurrency | throughput (infer/s) | p50 (µs) | p99 (µs) | avg executed batch |")
        print("|---|---|---|---|---|---|")
        for name, label in (("w1", "batching on"), ("w2", "batching off")):
            addr = c.workers[name]
            for conc in [int(x) for x in args.concurrency.split(",")]:
                i0, e0 = counts(addr, args.model)
                r = perf_analyzer(addr, conc, args.interval_ms, args.model)
                i1, e1 = counts(addr, args.model)
                batch = (i1 - i0) / max(1, e1 - e0)
                print(f"| {label} | {conc} | {r['throughput']:.0f} | {r['p50_us']} | {r['p99_us']} | {batch:.2f} |",
                      flush=True)
    finally:
        c.close()


if __name__ == "__main__":
    main()
