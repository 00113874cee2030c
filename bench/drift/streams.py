#!/usr/bin/env python3
"""Scripted drift streams: Kiln's drift judge vs Evidently 0.7.23 on the same windows.

Generates seeded streams (numpy), writes every window as .npy, runs the Kiln example
`services/monitor/examples/drift_windows.rs` (release build) and Evidently's DataDriftPreset
(default per-column stat tests) on the same files, and prints a markdown table of windows until
detection and false alarms per 100 windows at two alarm levels, then how many of Kiln's
uncorrected verdicts equal Evidently's. See docs/MONITORING.md,
"Drift detection accuracy", for the definitions and the recorded result.

    /var/tmp/evidently-venv/bin/python bench/drift/streams.py [--out DIR] [--windows 100]

Data: 10 numeric features x0..x9 ~ N(0, 1) and 2 few-valued features c0, c1 in {0, 1, 2, 3}
with probabilities (0.4, 0.3, 0.2, 0.1) (both Kiln and Evidently then use chi-square or, with a
large reference, Jensen-Shannon). Windows of 500 rows; drift starts with the first window.
Regimes: a 1000-row reference (KS / chi-square) and a 5000-row reference (Wasserstein /
Jensen-Shannon).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

NUMERIC = 10
FEW = 2
FEATURES = NUMERIC + FEW
NAMES = [f"x{i}" for i in range(NUMERIC)] + [f"c{i}" for i in range(FEW)]
PROBS = np.array([0.4, 0.3, 0.2, 0.1])
SWAPPED = PROBS[[3, 1, 2, 0]]  # categories 0 and 3 trade places
ROWS = 500
SHIFTED = [0, 1]  # 20 % of the numeric features

# name -> (truly drifted feature indices, description)
STREAMS = {
    "none": ([], "no drift"),
    "shift": (SHIFTED, "mean +0.5 std on x0, x1"),
    "scale": (SHIFTED, "std x1.5 on x0, x1"),
    "swap": ([NUMERIC], "c0: categories 0 and 3 swap shares (0.4 <-> 0.1)"),
    "gradual": (SHIFTED, "mean shift on x0, x1 ramping 0.05 -> 0.5 std over windows 1-10"),
    "shift_all": (list(range(NUMERIC)), "mean +0.5 std on all 10 numeric features"),
}


def rows(rng, n, stream="none", window=0):
    x = rng.standard_normal((n, NUMERIC))
    c = np.stack([rng.choice(4, size=n, p=PROBS) for _ in range(FEW)], axis=1).astype(float)
    if stream == "shift":
        x[:, SHIFTED] += 0.5
    elif stream == "scale":
        x[:, SHIFTED] *= 1.5
    elif stream == "swap":
        c[:, 0] = rng.choice(4, size=n, p=SWAPPED)
    elif stream == "gradual":
        x[:, SHIFTED] += 0.5 * min(1.0, (window + 1) / 10)
    elif stream == "shift_all":
        x += 0.5
    return np.concatenate([x, c], axis=1)


def generate(out, regime, ref_rows, windows):
    base = 1000 * (1 + ["ks", "wasserstein"].index(regime))
    d = os.path.join(out, regime)
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "reference.npy"), rows(np.random.default_rng(base), ref_rows))
    for s, name in enumerate(STREAMS):
        sd = os.path.join(d, name)
        os.makedirs(sd, exist_ok=True)
        rng = np.random.default_rng(base + 1 + s)
        for w in range(windows):
            np.save(os.path.join(sd, f"w{w:03d}.npy"), rows(rng, ROWS, name, w))
    return d


def kiln_exe(root, profile):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    return os.path.join(target, "release" if profile == "release" else "debug", "examples",
                        "drift_windows")


def start_kiln(exe, d, stream):
    # To a file, not a pipe: a full pipe would stall the process until Evidently is done.
    path = os.path.join(d, f"{stream}.kiln.jsonl")
    with open(path, "w") as f:
        proc = subprocess.Popen([exe, os.path.join(d, "reference.npy"), os.path.join(d, stream)],
                                stdout=f)
    return proc, path


def finish_kiln(started):
    proc, path = started
    assert proc.wait() == 0, proc.returncode
    out = []
    with open(path) as f:
        stdout = f.read()
    for line in stdout.splitlines():
        j = json.loads(line)
        assert j["reason"] == "", j
        out.append({
            "flagged": [f["flagged"] for f in j["features"]],
            "drifted": [f["drifted"] for f in j["features"]],
            "dataset": j["drifted"],
        })
    return out


def evidently_window(ref_df, cur, dd):
    import pandas as pd
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    cur_df = pd.DataFrame(cur, columns=NAMES)
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur_df, data_definition=dd),
        Dataset.from_pandas(ref_df, data_definition=dd))
    drifted = [False] * FEATURES
    dataset = None
    for m in snap.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            method, thr, v = cfg["method"], cfg["threshold"], m["value"]
            # Evidently's verdicts: KS p <= t, chi-square / z p < t, distances >= t.
            if method.startswith("K-S"):
                hit = v <= thr
            elif "p_value" in method:
                hit = v < thr
            else:
                hit = v >= thr
            drifted[NAMES.index(cfg["column"])] = bool(hit)
        elif cfg["type"].endswith("DriftedColumnsCount"):
            dataset = m["value"]["share"] >= cfg["drift_share"]
    assert dataset is not None
    return {"flagged": drifted, "drifted": drifted, "dataset": dataset}


def evidently_fast(ref_df, cur, dd):
    """The same verdicts without the Report's widget rendering: the function ValueDrift calls
    (`get_one_column_drift` with default DataDriftOptions) and DriftedColumnsCount's share rule."""
    import pandas as pd
    from evidently.legacy.calculations.data_drift import get_one_column_drift
    from evidently.legacy.core import ColumnType
    from evidently.legacy.options.data_drift import DataDriftOptions
    from evidently.legacy.metric_results import DatasetColumns, DatasetUtilityColumns

    cur_df = pd.DataFrame(cur, columns=NAMES)
    drifted = []
    for name in NAMES:
        cols = DatasetColumns(
            utility_columns=DatasetUtilityColumns(date=None, id=None, target=None,
                                                  prediction=None),
            target_type=None, task=None, num_feature_names=[name], cat_feature_names=[],
            text_feature_names=[], datetime_feature_names=[], target_names=None)
        r = get_one_column_drift(current_data=cur_df, reference_data=ref_df, column_name=name,
                                 options=DataDriftOptions(), dataset_columns=cols,
                                 column_type=ColumnType.Numerical, agg_data=True)
        drifted.append(bool(r.drift_detected))
    return {"flagged": drifted, "drifted": drifted, "dataset": sum(drifted) >= 0.5 * FEATURES}


def run_evidently(d, stream, windows, checked):
    """Evidently's verdicts per window; the first `checked` windows also through the full
    Report (DataDriftPreset), which must agree."""
    import pandas as pd
    from evidently import DataDefinition

    ref_df = pd.DataFrame(np.load(os.path.join(d, "reference.npy")), columns=NAMES)
    dd = DataDefinition(numerical_columns=NAMES)
    out = []
    for w in range(windows):
        cur = np.load(os.path.join(d, stream, f"w{w:03d}.npy"))
        fast = evidently_fast(ref_df, cur, dd)
        if w < checked:
            full = evidently_window(ref_df, cur, dd)
            assert full == fast, (stream, w, full, fast)
        out.append(fast)
    return out


def score(results, truth, key):
    """(windows until detection or None, false alarms per 100 windows) at one alarm level."""
    n = len(results)
    if key == "dataset":
        dataset_truth = len(truth) >= 0.5 * FEATURES
        alarms = [r["dataset"] for r in results]
        detect = next((i + 1 for i, a in enumerate(alarms) if a), None) if dataset_truth else None
        false = 0 if dataset_truth else sum(alarms)
        return detect, 100.0 * false / n, dataset_truth
    detect = None
    false = 0
    for i, r in enumerate(results):
        flags = r[key]
        if detect is None and any(flags[j] for j in truth):
            detect = i + 1
        if truth:
            false += sum(1 for j in range(FEATURES) if j not in truth and flags[j])
        else:
            false += any(flags)
    return detect, 100.0 * false / n, bool(truth)


def fmt(detect, applicable):
    if not applicable:
        return "n/a"
    return "never" if detect is None else str(detect)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/var/tmp/kiln-drift-streams")
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--regimes", default="ks,wasserstein")
    ap.add_argument("--profile", default="release", choices=["release", "dev"],
                    help="cargo profile of the Kiln example (dev: no cold release build)")
    ap.add_argument("--kiln-bin", help="a built drift_windows example (skips the cargo build)")
    ap.add_argument("--check", type=int, default=5,
                    help="windows per stream also run through the full Evidently Report")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = ["cargo", "build", "--locked", "-p", "kiln-monitor", "--example", "drift_windows"]
    if args.profile == "release":
        build.append("--release")
    if args.kiln_bin:
        exe = args.kiln_bin
    else:
        subprocess.run(build, cwd=root, check=True)
        exe = kiln_exe(root, args.profile)
    lines = [
        "| reference rows | stream | alarm level | detection: Kiln | Evidently "
        "| Kiln uncorrected | false alarms /100: Kiln | Evidently | Kiln uncorrected |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    raw = {}
    regimes = args.regimes.split(",")
    ref_rows = {"ks": 1000, "wasserstein": 5000}
    dirs = {r: generate(args.out, r, ref_rows[r], args.windows) for r in regimes}
    # Kiln (one process per stream, in the background) while Evidently runs here.
    procs = {(r, s): start_kiln(exe, dirs[r], s) for r in regimes for s in STREAMS}
    for regime in regimes:
        d = dirs[regime]
        for stream, (truth, _) in STREAMS.items():
            t0 = time.time()
            ev = run_evidently(d, stream, args.windows, args.check)
            t1 = time.time()
            kiln = finish_kiln(procs[(regime, stream)])
            print(f"{regime}/{stream}: evidently {t1 - t0:.1f} s, kiln done "
                  f"{time.time() - t1:.1f} s later", file=sys.stderr)
            assert len(kiln) == len(ev) == args.windows
            raw[f"{regime}/{stream}"] = {"kiln": kiln, "evidently": ev}
            for level, key in (("any feature", "flagged"), ("dataset drift", "dataset")):
                k = score(kiln, truth, key)
                e = score(ev, truth, key)
                u = score(kiln, truth, "drifted" if key == "flagged" else key)
                lines.append(
                    f"| {ref_rows[regime]} | {stream} | {level} | {fmt(k[0], k[2])} | {fmt(e[0], e[2])} "
                    f"| {fmt(u[0], u[2])} | {k[1]:.1f} | {e[1]:.1f} | {u[1]:.1f} |")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(raw, f)
    print("\n".join(lines))
    print(agreement(raw))


def agreement(raw):
    """How often Kiln's uncorrected verdicts equal Evidently's on the same windows."""
    same = total = same_ds = total_ds = 0
    for r in raw.values():
        for k, e in zip(r["kiln"], r["evidently"]):
            same += sum(a == b for a, b in zip(k["drifted"], e["drifted"]))
            total += len(e["drifted"])
            same_ds += k["dataset"] == e["dataset"]
            total_ds += 1
    return (f"\nKiln's uncorrected verdicts equal Evidently's in {same} of {total} "
            f"feature-windows and {same_ds} of {total_ds} dataset verdicts.")


if __name__ == "__main__":
    main()
