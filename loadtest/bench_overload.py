#!/usr/bin/env python3
"""Overload: a closed loop at 10x a worker's capacity, with kiln-loadtest.

Starts etcd, a monitor, a gateway and one worker from release binaries, and deploys a copy of a
model package (default `models/digits/1`) whose queue is bounded to `--queue` requests
(`max_queue_size`) with one model instance. The worker's capacity is what it holds at once: the
queue plus the batch being computed (up to `--queue` rows), i.e. 2 x queue requests. Then, driving
the worker directly:

1. unloaded: concurrency 1 -> the unloaded p50/p99;
2. overload: a closed loop at 10 x capacity (20 x queue concurrent requests) for `--seconds`,
   while the worker's RSS is sampled every 0.5 s from /proc.

Reports the admitted (OK) throughput and p50/p99 against the unloaded ones, the count and p50/p99
latency of RESOURCE_EXHAUSTED answers (how fast the excess is refused), any other status, and the
worker's RSS first/max/last during the overload. Exits 1 if anything other than OK and
RESOURCE_EXHAUSTED came back (an accepted request must never be lost).

    cargo build --release --bins && .venv/bin/python loadtest/bench_overload.py
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/e2e"))
os.environ.setdefault("KILN_BIN_DIR", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"))

from harness import Cluster, bin_dir, wait_for  # noqa: E402


def package_copy(src: Path, queue: int, tmp: Path) -> Path:
    """A copy of the package with a bounded queue and one instance."""
    dst = tmp / src.parent.name / src.name
    shutil.copytree(src, dst)
    toml = (dst / "kiln.toml").read_text()
    toml = toml.replace("max_queue_size = 1024", f"max_queue_size = {queue}")
    if f"max_queue_size = {queue}" not in toml:
        raise SystemExit("the package's kiln.toml must set max_queue_size = 1024 under [batching]")
    toml = "instance_count = 1\n" + toml
    (dst / "kiln.toml").write_text(toml)
    return dst


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def loadtest(addr: str, model: str, concurrency: int, seconds: float, connections: int,
             cpus: str = "") -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        pin = ["taskset", "-c", cpus] if cpus else []
        cmd = [*pin, str(bin_dir() / "kiln-loadtest"), "--url", addr, "--model", model,
               "--concurrency", str(concurrency), "--connections", str(connections),
               "--warmup", "1s", "--duration", f"{seconds}s", "--json", out.name]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=seconds + 120)
        return json.loads(Path(out.name).read_text())


def server_stats(addr: str, model: str) -> dict:
    """The worker's ModelStatistics (success / queue / compute_infer totals)."""
    import tritonclient.grpc as grpcclient
    st = grpcclient.InferenceServerClient(url=addr).get_inference_statistics(model, as_json=True)
    s = st["model_stats"][0]["inference_stats"]
    return {k: (int(s[k].get("count", 0)), int(s[k].get("ns", 0))) for k in ("success", "queue", "compute_infer")}


def avg_us(before: dict, after: dict, key: str) -> float:
    n = after[key][0] - before[key][0]
    return (after[key][1] - before[key][1]) / max(1, n) / 1000


def ms(us) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default=str(ROOT / "models/digits/1"))
    ap.add_argument("--queue", type=int, default=8, help="max_queue_size of the copy")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--worker-cpus", default="",
                    help="pin the worker to these CPUs and the load generator to the others "
                         "(e.g. 0 on a 2-core machine), so the client does not starve the server")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kiln-overload-"))
    pkg = package_copy(Path(args.package), args.queue, tmp)
    model = pkg.parent.name
    c = Cluster(workers=1)
    try:
        c.kiln("deploy", model, "--version", pkg.name, "--replicas", "1", "--package", str(pkg), "--no-wait")
        wait_for("a ready replica", lambda: any(r["state"] == "READY" for r in c.replicas()), timeout=60)
        (name, addr), = c.workers.items()
        pid = c.procs[name].pid
        capacity = 2 * args.queue
        client_cpus = ""
        if args.worker_cpus:
            subprocess.run(["taskset", "-a", "-p", "-c", args.worker_cpus, str(pid)], check=True,
                           stdout=subprocess.DEVNULL)
            mine = set(range(os.cpu_count())) - {int(x) for x in args.worker_cpus.split(",")}
            client_cpus = ",".join(map(str, sorted(mine)))
        s0 = server_stats(addr, model)
        unloaded = loadtest(addr, model, 1, min(args.seconds, 5.0), 1, client_cpus)
        s1 = server_stats(addr, model)
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(rss_kib(pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample)
        rss_before = rss_kib(pid)
        sampler.start()
        over = loadtest(addr, model, 10 * capacity, args.seconds, 8, client_cpus)
        stop.set()
        sampler.join()
        s2 = server_stats(addr, model)
        rss_after = rss_kib(pid)

        print(f"model {model} (copy of {args.package}), max_queue_size {args.queue}, 1 instance; "
              f"capacity {capacity} requests; overload = closed loop at {10 * capacity}; "
              f"worker CPUs {args.worker_cpus or 'any'}, client CPUs {client_cpus or 'any'}")
        print("| run | concurrency | OK/s | OK p50 (ms) | OK p99 (ms) | RESOURCE_EXHAUSTED/s | "
              "rejected p50 (ms) | rejected p99 (ms) | other |")
        print("|---|---|---|---|---|---|---|---|---|")
        bad = 0
        for label, r in (("unloaded", unloaded), ("10x capacity", over)):
            st = r["statuses"]
            rej = st.get("RESOURCE_EXHAUSTED", {"count": 0, "latency_us": None})
            other = {k: v["count"] for k, v in st.items() if k not in ("OK", "RESOURCE_EXHAUSTED")}
            bad += sum(other.values())
            lat, rl = r["latency_us"] or {}, rej["latency_us"] or {}
            print(f"| {label} | {r['load']['concurrency']} | {r['throughput_rps']:.0f} | "
                  f"{ms(lat.get('p50'))} | {ms(lat.get('p99'))} | {rej['count'] / r['measured_s']:.0f} | "
                  f"{ms(rl.get('p50'))} | {ms(rl.get('p99'))} | {other or '-'} |")
        for label, a, b in (("unloaded", s0, s1), ("10x capacity", s1, s2)):
            print(f"server side, {label}: admitted requests' mean time in the worker "
                  f"{avg_us(a, b, 'success'):.0f} µs (queue {avg_us(a, b, 'queue'):.0f} µs, "
                  f"compute {avg_us(a, b, 'compute_infer'):.0f} µs)")
        p99_u, p99_o = unloaded["latency_us"]["p99"], over["latency_us"]["p99"]
        print(f"\nadmitted p99 / unloaded p99 = {p99_o / p99_u:.2f} (target <= 2)")
        print(f"worker RSS (MiB): before {rss_before / 1024:.1f}, during overload first "
              f"{samples[0] / 1024:.1f} max {max(samples) / 1024:.1f} last {samples[-1] / 1024:.1f} "
              f"({len(samples)} samples), after {rss_after / 1024:.1f}")
        print("RSS samples (MiB):", " ".join(f"{x / 1024:.0f}" for x in samples))
        sys.exit(1 if bad else 0)
    finally:
        c.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
