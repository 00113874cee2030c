#!/usr/bin/env python3
"""Retrain Kiln's digits MLP with scikit-learn, save it with joblib, and check it against ONNX.

Runs inside the MLServer venv (which has scikit-learn and joblib through mlserver-sklearn). It
repeats exactly what ``models/digits/train.py`` does before the skl2onnx export (sklearn's
bundled ``load_digits``, the same split, ``MLPClassifier((128, 64), max_iter=300,
random_state=0)``, single-threaded numerics), writes the fitted classifier to ``--out`` and
checks that it predicts the same labels as the ONNX reference outputs stored in
``models/digits/testdata/heldout.json`` (onnxruntime on ``models/digits/1/model.onnx``).

Prints one JSON line with the check's numbers; exits 1 if any label differs.
"""

import argparse
import json
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

# The constants of models/digits/train.py.
SEED = 0
TEST_SIZE = 0.25
HIDDEN = (128, 64)
MAX_ITER = 300


def train() -> tuple[MLPClassifier, np.ndarray]:
    """The fitted classifier and the held-out inputs of train.py's split."""
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, _ = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SEED)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=MAX_ITER, random_state=SEED)
    clf.fit(x_train, y_train)
    return clf, x_test


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", required=True, type=Path, help="models/digits/testdata/heldout.json")
    ap.add_argument("--out", required=True, type=Path, help="where to write model.joblib")
    args = ap.parse_args()

    clf, x_test = train()
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
