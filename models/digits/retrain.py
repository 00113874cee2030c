#!/usr/bin/env python3
"""Retrain the digits model on drifted data and write a new model package.

    python models/digits/retrain.py --version 2 --scenario faded --out DIR

The training split of ``load_digits`` drifted by ``--scenario`` (see ``drift.py``) stands in
for freshly labelled live data. Writes DIR/model.onnx, kiln.toml (version ``--version``),
reference.csv (500 drifted training rows: the new version's drift reference) and metrics.json
(held-out accuracy on drifted held-out data, onnxruntime). ``retrain.sh`` wraps it as the
monitor's retrain hook (profile + register). Needs numpy, scikit-learn, skl2onnx, onnx,
onnxruntime (deploy/local/requirements-test.txt).
"""

import argparse
import csv
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from fit import N_FEATURES, SEED, fit, split  # noqa: E402  (pins numerics to one thread first)
import drift  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from train import KILN_TOML, N_REFERENCE, TARGET_OPSET  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", required=True)
    ap.add_argument("--scenario", default="faded", help="drift scenario of the fresh data")
    ap.add_argument("--out", required=True, type=Path, help="package directory to write")
    a = ap.parse_args()

    X_train, X_test, y_train, y_test = split()
    X_train, X_test = drift.apply(a.scenario, X_train), drift.apply(a.scenario, X_test)
    clf = fit(X_train, y_train)
    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        target_opset=TARGET_OPSET,
        options={id(clf): {"zipmap": False}},
    )
    onx.producer_name = "kiln-digits-retrain"
    onx.doc_string = f"MLPClassifier(128, 64) retrained on load_digits drifted by {a.scenario!r}"
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "model.onnx").write_bytes(onx.SerializeToString())

    sess = ort.InferenceSession(str(a.out / "model.onnx"), providers=["CPUExecutionProvider"])
    label = sess.run(["label"], {"input": X_test})[0]
    acc = float((label == y_test).mean())
    (a.out / "metrics.json").write_text(json.dumps(
        {"test_accuracy": round(acc, 6), "scenario": a.scenario,
         "n_train": int(len(y_train)), "n_test": int(len(y_test))}, indent=2) + "\n")
    toml = KILN_TOML.format(in_dims=N_FEATURES, label_dims="", prob_dims=10)
    toml = toml.replace('version = "1"', f'version = "{a.version}"', 1)
    (a.out / "kiln.toml").write_text(toml)

    rng = np.random.default_rng(SEED)
    idx = np.sort(rng.choice(len(X_train), size=N_REFERENCE, replace=False))
    with open(a.out / "reference.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"f{i}" for i in range(N_FEATURES)])
        for row in X_train[idx]:
            w.writerow([repr(float(v)) for v in row])
    print(f"retrained digits/{a.version} on {a.scenario!r} data: held-out accuracy {acc:.4f} -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
