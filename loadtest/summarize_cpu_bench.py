#!/usr/bin/env python3
"""Markdown tables from the raw output of deploy/gpu/cpu_bench.sh and deploy/gpu/overload.sh.

    python3 loadtest/summarize_cpu_bench.py DIR

DIR holds, per overload run LABEL (`wW` for W worker CPUs in cpu_bench.sh, BACKEND-MODEL-kK-cC
in overload.sh), `overload-LABEL-{unloaded,over}.json` (kiln-loadtest), `overload-LABEL-rss.txt`
(KiB every 0.5 s) and `overload-LABEL-m{0,1,2}.txt` (the worker's /metrics before the unloaded
run, between the runs, after the overload), with PACED=1 also `-{capacity,paced}.json` and
`-m{3,4}.txt` (around the paced run), and `overload-LABEL-{over,paced}-cpu.txt` (the worker's
CPU use during those phases, from deploy/gpu/lib.sh's cpu_during); and per model and batching
mode `batching-MODEL-LABEL-cC.txt` (perf_analyzer -v) with `.m0`/`.m1` (/metrics around it).
"""

import json
import re
import sys
from pathlib import Path


def counters(path: Path) -> dict:
    """Sum of each metric family over its series (one model version here)."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m and "_bucket" not in m.group(1):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def delta(a: dict, b: dict, key: str) -> float:
    return b.get(key, 0.0) - a.get(key, 0.0)


def natural(name: str) -> list:
    """Sort key: w2 before w10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def ms(us) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def phase_runs(d: Path, phase: str) -> list:
    """(label, kiln-loadtest JSON) of every `overload-LABEL-PHASE.json`, in natural order."""
    paths = sorted(d.glob(f"overload-*-{phase}.json"), key=lambda p: natural(p.name))
    return [(p.name[len("overload-"):-len(f"-{phase}.json")], json.loads(p.read_text())) for p in paths]


def admitted_us(a: dict, b: dict) -> float:
    """Mean time in the worker per successful request between two /metrics readings."""
    n = delta(a, b, "nv_inference_request_success")
    return delta(a, b, "nv_inference_request_duration_us") / max(n, 1)


def busy(d: Path, w: str, phase: str, run: dict) -> str:
    """How busy the worker's CPUs (`overload-LABEL-PHASE-cpu.txt`: CPUS CPU_S WALL_S) and the
    load generator's (`client_cpu` of its JSON) were during a phase: "server / client"."""
    f = d / f"overload-{w}-{phase}-cpu.txt"
    server = "-"
    if f.exists():
        cpus, cpu_s, wall = f.read_text().split()
        server = f"{100 * float(cpu_s) / max(float(wall), 1e-9) / max(int(cpus), 1):.0f} % of {cpus}"
    c = run.get("client_cpu")
    client = f"{100 * c['utilization']:.0f} % of {c['cpus']}" if c else "-"
    return f"{server} / {client}"


def overload(d: Path) -> None:
    runs = phase_runs(d, "over")
    if not runs:
        return
    print("| run | unloaded p50 / p99 (ms) | 10×: OK/s | OK p50 (ms) | OK p99 (ms) | "
          "p99 ratio | RESOURCE_EXHAUSTED/s | refused p50 / p99 (ms) | other | admitted time in worker, "
          "unloaded → 10× (µs) | avg batch at 10× | CPUs busy at 10×, server / client | "
          "RSS MiB first / max / last |")
    print("|" + "---|" * 13)
    for w, over in runs:
        unl = json.loads((d / f"overload-{w}-unloaded.json").read_text())
        m = [counters(d / f"overload-{w}-m{i}.txt") for i in range(3)]

        def avg_batch(a, b):
            execs = delta(a, b, "nv_inference_exec_count")
            return f"{delta(a, b, 'nv_inference_count') / execs:.2f}" if execs else "-"

        st = over["statuses"]
        rej = st.get("RESOURCE_EXHAUSTED", {"count": 0, "latency_us": None})
        rl = rej["latency_us"] or {}
        other = {k: v["count"] for k, v in st.items() if k not in ("OK", "RESOURCE_EXHAUSTED")}
        rss = [int(x) / 1024 for x in (d / f"overload-{w}-rss.txt").read_text().split()]
        ul, ol = unl["latency_us"], over["latency_us"]
        print(f"| {w} | {ms(ul['p50'])} / {ms(ul['p99'])} | {over['throughput_rps']:.0f} | {ms(ol['p50'])} | "
              f"{ms(ol['p99'])} | {ol['p99'] / ul['p99']:.2f} | {rej['count'] / over['measured_s']:.0f} | "
              f"{ms(rl.get('p50'))} / {ms(rl.get('p99'))} | {other or 'none'} | "
              f"{admitted_us(m[0], m[1]):.0f} → {admitted_us(m[1], m[2]):.0f} | {avg_batch(m[1], m[2])} | "
              f"{busy(d, w, 'over', over)} | "
              f"{rss[0]:.0f} / {max(rss):.0f} / {rss[-1]:.0f} |" if rss else "| - |")


def paced(d: Path) -> None:
    """The PACED=1 phase of overload.sh: 10x the sustained rate, open loop, bounded callers."""
    runs = phase_runs(d, "paced")
    if not runs:
        return
    print("\n| run | sustained at capacity (OK/s) | offered (req/s) | OK/s | OK p50 (ms) | OK p99 (ms) | "
          "p99 ratio | RESOURCE_EXHAUSTED/s | not sent | admitted time in worker (µs) | "
          "CPUs busy, server / client |")
    print("|" + "---|" * 11)
    for w, r in runs:
        cap = json.loads((d / f"overload-{w}-capacity.json").read_text())
        unl = json.loads((d / f"overload-{w}-unloaded.json").read_text())
        a, b = counters(d / f"overload-{w}-m3.txt"), counters(d / f"overload-{w}-m4.txt")
        worker_us = admitted_us(a, b)
        rej = r["statuses"].get("RESOURCE_EXHAUSTED", {"count": 0})
        lat = r["latency_us"] or {}
        ratio = f"{lat['p99'] / unl['latency_us']['p99']:.2f}" if lat.get("p99") else "-"
        print(f"| {w} | {cap['throughput_rps']:.0f} | {r['intended'] / r['measured_s']:.0f} | "
              f"{r['throughput_rps']:.0f} | {ms(lat.get('p50'))} | {ms(lat.get('p99'))} | {ratio} | "
              f"{rej['count'] / r['measured_s']:.0f} | {r['not_sent']} | {worker_us:.0f} | "
              f"{busy(d, w, 'paced', r)} |")


def perf(path: Path) -> dict:
    a, b = counters(path.with_suffix(".m0")), counters(path.with_suffix(".m1"))
    execs = delta(a, b, "nv_inference_exec_count")
    batch = delta(a, b, "nv_inference_count") / execs if execs else None
    if path.with_suffix(".json").exists():  # kiln-loadtest
        r = json.loads(path.with_suffix(".json").read_text())
        lat = r["latency_us"] or {}
        return {"thr": r["inferences_per_s"], "p50": lat.get("p50"), "p99": lat.get("p99"), "batch": batch}
    text = path.read_text()
    # The last "Concurrency: N, throughput: X infer/sec, latency Y usec" summary and the last
    # stable pass's percentiles.
    thr = re.findall(r"Throughput: ([0-9.]+) infer/sec", text)
    p50 = re.findall(r"p50 latency: ([0-9]+) usec", text)
    p99 = re.findall(r"p99 latency: ([0-9]+) usec", text)
    return {
        "thr": float(thr[-1]) if thr else None,
        "p50": int(p50[-1]) if p50 else None,
        "p99": int(p99[-1]) if p99 else None,
        "batch": batch,
    }


def batching(d: Path) -> None:
    files = sorted(d.glob("batching-*-c*.txt"))
    if not files:
        return
    rows = {}
    for f in files:
        m = re.match(r"batching-(.+)-(on|off-\d+)-c(\d+)\.txt", f.name)
        if m:
            rows[(m[1], m[2], int(m[3]))] = perf(f)
    print("\n| model | worker | concurrency | throughput (infer/s) | p50 (µs) | p99 (µs) | avg executed batch |")
    print("|---|---|---|---|---|---|---|")
    for (model, label, c), r in sorted(rows.items()):
        name = "batching on" if label == "on" else f"batching off, {label[4:]} compute threads"
        batch = "-" if r["batch"] is None else f"{r['batch']:.2f}"
        print(f"| {model} | {name} | {c} | {r['thr'] or 0:.0f} | {r['p50']} | {r['p99']} | {batch} |")
    print()
    for model in sorted({k[0] for k in rows}):
        on64, on1 = rows.get((model, "on", 64)), rows.get((model, "on", 1))
        for label in sorted({k[1] for k in rows if k[0] == model and k[1] != "on"}):
            off64, off1 = rows.get((model, label, 64)), rows.get((model, label, 1))
            if on64 and off64 and on64["thr"] and off64["thr"] and on1 and off1 and on1["p50"] and off1["p50"]:
                print(f"- {model}, vs {label}: c=64 throughput ×{on64['thr'] / off64['thr']:.2f}; "
                      f"c=1 p50 {100 * (on1['p50'] / off1['p50'] - 1):+.1f} %")


def main() -> None:
    d = Path(sys.argv[1])
    print((d / "machine.txt").read_text() if (d / "machine.txt").exists() else "")
    overload(d)
    paced(d)
    batching(d)


if __name__ == "__main__":
    main()
