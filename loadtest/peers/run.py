#!/usr/bin/env python3
"""Peer benchmark: Kiln (through the gateway and direct to a worker), MLServer and Triton, all
serving the same digits MLP, driven with the same load by perf_analyzer and kiln-loadtest.

One command does everything (see loadtest/peers/README.md):

    .venv/bin/python loadtest/peers/run.py

1. Installs, once, MLServer 1.7.1 (+ mlserver-sklearn) and PyTriton 0.7.0 (tritonserver 2.51)
   into git-ignored venvs under ``.peers/`` (install.py; pinned; pip cache in
   ``.peers/pip-cache``). perf_analyzer comes from ``.venv`` (deploy/local/setup.sh), Kiln from
   the existing release binaries (``KILN_BIN_DIR``, default ``target/release``; nothing is built).
2. For each target in turn (only that one running): starts it, checks that the 450 held-out
   digits get the ONNX reference labels, then for each concurrency level runs perf_analyzer and
   kiln-loadtest (gRPC, batch 1, closed loop) and reads, around each tool run, the CPU time of
   the server's process trees (/proc/PID/stat utime+stime) and the server's own count of
   successful inferences: server CPU µs per inference = CPU delta / inference delta.
3. Prints and writes to ``--out`` (``results.json``, ``results.md``, ``raw/``): the table
   target × tool × concurrency → throughput, p50, p99, server and client CPU µs/inference; the
   ratios Kiln-gateway / MLServer and / Triton at concurrency 16; and the agreement between
   kiln-loadtest and perf_analyzer on the same target and load.

Before each measurement the machine is given up to ``--quiet-wait`` seconds to become quiet
(other processes < 0.3 of a core); the CPU that other processes took during each measurement
is recorded (``other cores``), so a contended run can be recognised.
"""

import argparse
import datetime as dt
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
os.environ.setdefault("KILN_BIN_DIR", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"))

import install  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402
import servers  # noqa: E402
import tools  # noqa: E402

ALL_TARGETS = ("kiln-gateway", "kiln-worker", "mlserver", "triton")
ALL_TOOLS = ("perf_analyzer", "kiln-loadtest")
AGREEMENT_PCT = 10.0
GOALS = {"gateway_vs_mlserver": 15.0, "gateway_vs_triton": 8.0, "p99_us": 3000, "cpu_us": 60.0}


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def busy_cores(interval_s: float = 2.0) -> float:
    """Cores the machine kept busy over `interval_s`."""
    b0, _ = busy_jiffies()
    time.sleep(interval_s)
    b1, _ = busy_jiffies()
    return (b1 - b0) / tools.TICKS / interval_s


def wait_quiet(max_wait_s: float, threshold: float = 0.3) -> float:
    """Waits (up to `max_wait_s`) until the machine is quiet; returns the last busy reading."""
    end = time.monotonic() + max_wait_s
    busy = busy_cores()
    while busy > threshold and time.monotonic() < end:
        print(f"    machine busy ({busy:.2f} cores used by others); waiting...", flush=True)
        busy = busy_cores(3.0)
    return busy


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the load generators)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(target, tool: str, level: int, args, raw_dir: Path) -> dict:
    """One tool run at one concurrency against a running target, with CPU accounting."""
    quiet = wait_quiet(args.quiet_wait)
    row = {"target": target.name, "tool": tool, "concurrency": level, "busy_before_cores": round(quiet, 2)}
    roots = target.cpu_roots()
    n0, cpu0, cli0 = target.inferences(), tools.tree_cpu(roots), children_cpu()
    b0, _ = busy_jiffies()
    t0 = time.monotonic()
    try:
        if tool == "perf_analyzer":
            r = tools.run_perf_analyzer(ROOT / ".venv", target.url, level, args.seconds, pin=args.client_pin)
        else:
            r = tools.run_kiln_loadtest(Path(os.environ["KILN_BIN_DIR"]) / "kiln-loadtest", target.url,
                                        level, args.seconds, pin=args.client_pin)
    except tools.ToolError as e:
        row["error"] = str(e)[-1500:]
        (raw_dir / f"{target.name}-{tool}-c{level}.txt").write_text(str(e))
        print(f"    {tool} c={level}: FAILED: {str(e).splitlines()[0]}", flush=True)
        return row
    wall = time.monotonic() - t0
    b1, _ = busy_jiffies()
    n1, cpu1, cli1 = target.inferences(), tools.tree_cpu(roots), children_cpu()
    n = n1 - n0
    server_s, client_s = tools.cpu_delta(cpu0, cpu1), cli1 - cli0
    (raw_dir / f"{target.name}-{tool}-c{level}.txt").write_text(
        " ".join(map(str, r["argv"])) + "\n\n" + r["output"])
    if tool == "kiln-loadtest":
        (raw_dir / f"{target.name}-{tool}-c{level}.json").write_text(json.dumps(r["report"], indent=1))
    per_process = {}
    for pid, t in cpu1.items():
        key = f"{tools.process_name(pid)}[{pid}]"
        per_process[key] = round(1e6 * (t - cpu0.get(pid, 0.0)) / n, 1) if n else None
    row.update({
        "throughput": round(r["throughput"], 1), "p50_us": r["p50_us"], "p99_us": r["p99_us"],
        "stable": r.get("stable", True), "stability_pct": r.get("stability_pct"),
        "attempts": r.get("attempts", 1), "errors": r.get("errors", 0),
        "inferences": n, "wall_s": round(wall, 2),
        "server_cpu_us_per_inf": round(1e6 * server_s / n, 1) if n else None,
        "server_cpu_us_by_process": per_process,
        "client_cpu_us_per_inf": round(1e6 * client_s / n, 1) if n else None,
        "other_cores": round(max(0.0, (b1 - b0) / tools.TICKS - server_s - client_s) / wall, 2),
    })
    print(f"    {tool:13s} c={level:<3d} {row['throughput']:9.0f} infer/s  p50 {row['p50_us']} µs  "
          f"p99 {row['p99_us']} µs  server {row['server_cpu_us_per_inf']} µs/inf  "
          f"client {row['client_cpu_us_per_inf']} µs/inf  others {row['other_cores']} cores"
          f"{'' if row['stable'] else '  (UNSTABLE)'}", flush=True)
    return row


def make_targets(names: list[str], pythons: dict) -> tuple[list, servers.KilnCluster]:
    """Target objects in the requested order (the two Kiln ones share one cluster)."""
    kiln = servers.KilnCluster()
    made = []
    for name in names:
        if name == "kiln-gateway":
            made.append(servers.KilnTarget(kiln, via_gateway=True))
        elif name == "kiln-worker":
            made.append(servers.KilnTarget(kiln, via_gateway=False))
        elif name == "mlserver":
            made.append(servers.MLServerTarget(pythons["mlserver"]))
        elif name == "triton":
            made.append(servers.TritonTarget(pythons["triton"]))
    return made, kiln


def machine_info() -> dict:
    """nproc, CPU model, memory, OS, load, date, git commit."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    os_name = next((line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                    if line.startswith("PRETTY_NAME")), platform.platform())
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(int(mem) / 2**20, 1), "os": os_name,
            "kernel": platform.release(), "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "git_commit": commit}


def versions(pythons: dict) -> dict:
    """Versions of everything measured."""
    bins = Path(os.environ["KILN_BIN_DIR"])
    v = {}
    for b in ("kiln-gateway", "kiln-worker", "kiln-loadtest"):
        out = subprocess.run([str(bins / b), "--version"], capture_output=True, text=True)
        v[b] = out.stdout.strip() or "?"
        v[f"{b} mtime"] = dt.datetime.fromtimestamp((bins / b).stat().st_mtime, dt.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
    v["perf_analyzer"] = "tritonclient " + next(
        (line.split("==")[1] for line in install.freeze(ROOT / ".venv/bin/python").splitlines()
         if line.lower().startswith("tritonclient==")), "?")
    for name, py in pythons.items():
        v[f"{name} venv (pip freeze)"] = install.freeze(py).split()
    return v


def pct(a, b):
    """(a - b) / b in %, or None."""
    return None if a is None or b in (None, 0) else round(100.0 * (a - b) / b, 1)


def summarize(rows: list[dict], levels: list[int]) -> dict:
    """Ratios at c=16, goal checks and tool agreement."""
    ok = {(r["target"], r["tool"], r["concurrency"]): r for r in rows if "error" not in r}
    c = 16 if 16 in levels else max(levels)
    ratios = {}
    for tool in ALL_TOOLS:
        gw = ok.get(("kiln-gateway", tool, c))
        for peer in ("mlserver", "triton"):
            p = ok.get((peer, tool, c))
            if gw and p and p["throughput"]:
                ratios[f"{tool}: kiln-gateway / {peer} throughput at c={c}"] = round(gw["throughput"] / p["throughput"], 2)
    agreement = []
    for (target, tool, level), pa in sorted(ok.items()):
        if tool != "perf_analyzer":
            continue
        lt = ok.get((target, "kiln-loadtest", level))
        if not lt:
            continue
        dthr, dp50 = pct(lt["throughput"], pa["throughput"]), pct(lt["p50_us"], pa["p50_us"])
        agreement.append({"target": target, "concurrency": level,
                          "pa_throughput": pa["throughput"], "lt_throughput": lt["throughput"], "throughput_diff_pct": dthr,
                          "pa_p50_us": pa["p50_us"], "lt_p50_us": lt["p50_us"], "p50_diff_pct": dp50,
                          "within_10pct": dthr is not None and dp50 is not None
                          and abs(dthr) <= AGREEMENT_PCT and abs(dp50) <= AGREEMENT_PCT})
    goals = {}
    for tool in ALL_TOOLS:
        gw = ok.get(("kiln-gateway", tool, c))
        if not gw:
            continue
        g = {"throughput": gw["throughput"], "p99_us": gw["p99_us"], "cpu_us": gw["server_cpu_us_per_inf"]}
        g["p99_ok"] = gw["p99_us"] is not None and gw["p99_us"] <= GOALS["p99_us"]
        g["cpu_ok"] = gw["server_cpu_us_per_inf"] is not None and gw["server_cpu_us_per_inf"] <= GOALS["cpu_us"]
        for peer, key in (("mlserver", "gateway_vs_mlserver"), ("triton", "gateway_vs_triton")):
            r = ratios.get(f"{tool}: kiln-gateway / {peer} throughput at c={c}")
            g[f"vs_{peer}"] = r
            g[f"vs_{peer}_ok"] = r is not None and r >= GOALS[key]
        goals[tool] = g
    return {"ratio_concurrency": c, "ratios": ratios, "agreement": agreement, "goals": goals}


def fmt(v, digits=0):
    if v is None:
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(rows: list[dict], summary: dict, meta: dict) -> str:
    """The tables as Markdown."""
    out = [f"Machine: {meta['machine']['nproc']} CPUs ({meta['machine']['cpu_model']}), "
           f"{meta['machine']['os']}; {meta['machine']['date_utc']}; commit {meta['machine']['git_commit']}.",
           f"Command: `{meta['command']}`; server CPUs: {meta['server_cpus']}, load generator CPUs: "
           f"{meta['client_cpus']}.", "",
           "| target | tool | concurrency | throughput (infer/s) | p50 (µs) | p99 (µs) | server CPU µs/infer | "
           "client CPU µs/infer | other processes (cores) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['target']} | {r['tool']} | {r['concurrency']} | failed: "
                       f"{r['error'].splitlines()[0][:80]} | | | | | |")
            continue
        mark = ("" if r.get("stable", True) else " (-s 50)" if r.get("stability_pct") == 50
                else " (never stable: mean of last 3 windows)")
        out.append(f"| {r['target']} | {r['tool']} | {r['concurrency']} | {r['throughput']:.0f}{mark} | "
                   f"{fmt(r['p50_us'])} | {fmt(r['p99_us'])} | {fmt(r['server_cpu_us_per_inf'], 1)} | "
                   f"{fmt(r['client_cpu_us_per_inf'], 1)} | {fmt(r['other_cores'], 2)} |")
    for t in meta.get("target_errors", []):
        out.append(f"\n**{t['target']} not measured**: {t['error'].splitlines()[0][:300]}")
    c = summary["ratio_concurrency"]
    out += ["", f"Ratios at concurrency {c} (throughput):", ""]
    out += [f"- {k}: **{v:.2f}×**" for k, v in summary["ratios"].items()] or ["- (not available)"]
    out += ["", f"Goal at c={c} through the gateway (≥ 15× MLServer, ≥ 8× Triton, p99 ≤ 3 ms, "
            "gateway + worker CPU ≤ 60 µs/inference):", ""]
    def verdict(ok, value):
        return "not measured" if value is None else "met" if ok else "NOT met"

    for tool, g in summary["goals"].items():
        out.append(f"- {tool}: {g['throughput']:.0f} infer/s, ×{fmt(g.get('vs_mlserver'), 2)} MLServer "
                   f"({verdict(g.get('vs_mlserver_ok'), g.get('vs_mlserver'))}), ×{fmt(g.get('vs_triton'), 2)} Triton "
                   f"({verdict(g.get('vs_triton_ok'), g.get('vs_triton'))}), p99 {fmt(g['p99_us'])} µs "
                   f"({'met' if g['p99_ok'] else 'NOT met'}), CPU {fmt(g['cpu_us'], 1)} µs/inference "
                   f"({'met' if g['cpu_ok'] else 'NOT met'})")
    out += ["", "Agreement, kiln-loadtest vs perf_analyzer (same target and load; (LT − PA) / PA):", "",
            "| target | concurrency | PA infer/s | LT infer/s | Δ throughput | PA p50 (µs) | LT p50 (µs) | Δ p50 | within 10 % |",
            "|---|---|---|---|---|---|---|---|---|"]
    for a in summary["agreement"]:
        out.append(f"| {a['target']} | {a['concurrency']} | {a['pa_throughput']:.0f} | {a['lt_throughput']:.0f} | "
                   f"{fmt(a['throughput_diff_pct'], 1)} % | {a['pa_p50_us']} | {a['lt_p50_us']} | "
                   f"{fmt(a['p50_diff_pct'], 1)} % | {'yes' if a['within_10pct'] else 'no'} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,4,16,64", help="concurrency levels (default 1,4,16,64)")
    ap.add_argument("--seconds", type=float, default=9.0,
                    help="measured seconds per run: kiln-loadtest's --duration (after 2 s warm-up); "
                         "perf_analyzer windows of seconds/3 (it reports the last 3 windows)")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS), help=f"subset of {','.join(ALL_TARGETS)}")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help=f"subset of {','.join(ALL_TOOLS)}")
    ap.add_argument("--out", type=Path, default=None,
                    help="output directory (default .peers/results/<UTC timestamp>)")
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="seconds to wait, before each measurement, for other processes to use < 0.3 core")
    ap.add_argument("--skip-install", action="store_true", help="do not check/install the peer venvs")
    ap.add_argument("--render", type=Path, metavar="DIR",
                    help="only rewrite DIR/results.md from DIR/results.json (no measurement)")
    ap.add_argument("--server-cpus", default="",
                    help="pin every server process to these CPUs (e.g. 0) and the load generators to the "
                         "others; default: no pinning (client and server share all cores)")
    args = ap.parse_args()
    if args.render:
        saved = json.loads((args.render / "results.json").read_text())
        summary = summarize(saved["rows"], saved["meta"]["levels"])
        (args.render / "results.md").write_text(markdown(saved["rows"], summary, saved["meta"]))
        print((args.render / "results.md").read_text())
        return 0
    args.client_pin = ()
    if args.server_cpus:
        server_cpus = {int(x) for x in args.server_cpus.split(",")}
        client_cpus = sorted(set(range(os.cpu_count())) - server_cpus)
        if not client_cpus:
            ap.error("--server-cpus leaves no CPU for the load generators")
        args.client_pin = ("taskset", "-c", ",".join(map(str, client_cpus)))
    levels = [int(x) for x in args.levels.split(",")]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    tool_names = [t.strip() for t in args.tools.split(",") if t.strip()]
    if bad := [t for t in targets if t not in ALL_TARGETS] + [t for t in tool_names if t not in ALL_TOOLS]:
        ap.error(f"unknown target/tool: {bad}")
    out = args.out or ROOT / ".peers/results" / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    bins = Path(os.environ["KILN_BIN_DIR"])
    missing = [b for b in ("kiln", "kiln-gateway", "kiln-worker", "kiln-monitor", "kiln-loadtest") if not (bins / b).exists()]
    if missing:
        sys.exit(f"missing release binaries in {bins}: {missing} (build them first: cargo build --release --bins)")
    tools.perf_analyzer_cmd(ROOT / ".venv")

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell without job control starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    pythons = {}
    peers = ROOT / ".peers"
    for name in ("mlserver", "triton"):
        if name in targets:
            spec = install.SPECS[name]
            pythons[name] = install.venv_python(peers, spec) if args.skip_install else install.ensure(peers, spec)

    meta = {"command": " ".join([".venv/bin/python", "loadtest/peers/run.py", *sys.argv[1:]]),
            "machine": machine_info(), "levels": levels, "seconds": args.seconds,
            "targets": targets, "tools": tool_names, "target_errors": [],
            "server_cpus": args.server_cpus or "all (shared with the load generators)",
            "client_cpus": args.client_pin[-1] if args.client_pin else "all"}
    print(f"machine: {meta['machine']}", flush=True)
    meta["versions"] = versions(pythons)
    heldout = servers.load_heldout()
    made, kiln = make_targets(targets, pythons)
    rows = []
    try:
        for i, target in enumerate(made):
            print(f"== {target.name}: {target.description}", flush=True)
            t0 = time.monotonic()
            try:
                target.start()
                check = servers.check_labels(target, heldout)
                if getattr(target, "parity", None):
                    check["retrained_sklearn"] = target.parity
                meta[f"check {target.name}"] = check
                print(f"  up in {time.monotonic() - t0:.0f} s at {target.url}; held-out check: {check}", flush=True)
                if args.server_cpus:
                    roots = ([p.pid for p in kiln.cluster.procs.values()] if target.name.startswith("kiln")
                             else target.cpu_roots())
                    tools.pin_processes(tools.tree_pids(roots), args.server_cpus)
                if check["label_mismatches_vs_onnx"]:
                    raise RuntimeError(f"{target.name} gives {check['label_mismatches_vs_onnx']} labels "
                                       "different from the ONNX reference")
                for level in levels:
                    for tool in tool_names:
                        rows.append(measure(target, tool, level, args, raw))
            except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError,
                    InferenceServerException, json.JSONDecodeError) as e:
                print(f"  {target.name} FAILED: {e}", flush=True)
                meta["target_errors"].append({"target": target.name, "error": str(e)[-3000:]})
                (raw / f"{target.name}-server.log").write_text(target.logs())
            finally:
                if target.name.startswith("kiln") and (i + 1 == len(made) or not made[i + 1].name.startswith("kiln")):
                    (raw / "kiln-cluster.log").write_text(target.logs())
                    kiln.stop()
                elif not target.name.startswith("kiln"):
                    if target.logs():
                        (raw / f"{target.name}-server.log").write_text(target.logs()[-200_000:])
                    target.stop()
    finally:
        for target in made:
            target.stop()
        kiln.stop()

    summary = summarize(rows, levels)
    md = markdown(rows, summary, meta)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1))
    (out / "results.md").write_text(md)
    print("\n" + md)
    print(f"written: {out}/results.md, results.json, raw/", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
