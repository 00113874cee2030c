#!/usr/bin/env python3
"""Retrain Kiln's digits MLP with scikit-learn, save it with joblib, and check it against ONNX.

Runs inside the MLServer venv (which has scikit-learn and joblib through mlserver-sklearn). It
runs the same split and training as ``models/digits/train.py`` (``models/digits/fit.py``, which
needs only scikit-learn), writes the fitted classifier to ``--out`` and
checks that it predicts the same labels as the ONNX reference outputs stored in
``models/digits/testdata/heldout.json`` (onnxruntime on ``models/digits/1/model.onnx``).

Prints one JSON line with the check's numbers; exits 1 if any label differs.
"""

import argparse
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models" / "digits"))

from fit import fit, split  # noqa: E402  (pins numerics to one thread before numpy loads)
import joblib  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", required=True, type=Path, help="models/digits/testdata/heldout.json")
    ap.add_argument("--out", required=True, type=Path, help="where to write model.joblib")
    args = ap.parse_args()

    x_train, x_test, y_train, _ = split()
    clf = fit(x_train, y_train)
    ref = json.loads(args.heldout.read_text())
    inputs = np.array(ref["inputs"], dtype=np.float32)
    ort_label = np.array(ref["ort_label"], dtype=np.int64)
    ort_prob = np.array(ref["ort_probabilities"], dtype=np.float32)
    same_split = bool(np.array_equal(inputs, x_test))
    label = clf.predict(inputs)
    prob = clf.predict_proba(inputs)
    mismatches = int((label != ort_label).sum())
    report = {
        "sklearn": sklearn.__version__,
        "rows": int(len(inputs)),
        "same_split_as_train_py": same_split,
        "label_mismatches_vs_onnx": mismatches,
        "max_abs_prob_diff_vs_onnx": float(np.abs(prob - ort_prob).max()),
        "iterations": int(clf.n_iter_),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(clf, args.out)
    print(json.dumps(report))
    return 0 if mismatches == 0 and same_split else 1


if __name__ == "__main__":
    sys.exit(main())
