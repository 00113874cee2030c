#!/usr/bin/env python3
"""Train and export Kiln's demo model package ``models/digits/1/``.

Run from anywhere with the project venv:

    /work/venv/bin/python models/digits/train.py

Everything is derived from scikit-learn's bundled ``load_digits`` data set
(no network access), with fixed seeds, so rerunning produces byte-identical
files.

Outputs (paths relative to ``models/digits/``):
  1/model.onnx          MLP classifier exported by skl2onnx (no ZipMap)
  1/kiln.toml           package manifest parsed by the Rust side
  1/metrics.json        held-out accuracy measured with onnxruntime
  1/reference.csv       500 training rows, drift-detection reference
  testdata/heldout.json held-out inputs, labels and onnxruntime outputs
  testdata/heldout.npy  held-out inputs, float32 [N, 64]
  testdata/heldout_labels.npy  held-out labels, int64 [N]
"""

import csv
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from fit import N_FEATURES, SEED, fit, split  # noqa: E402  (pins numerics to one thread first)
from zoo_common import per_item_dims  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402

N_REFERENCE = 500
TARGET_OPSET = {"": 15, "ai.onnx.ml": 3}
N_CLASSES = 10

PKG = HERE / "1"
TESTDATA = HERE / "testdata"

KILN_TOML = """\
name = "digits"
version = "1"
format = "onnx"
model_file = "model.onnx"
max_batch_size = 64
reference = "reference.csv"

[[inputs]]
name = "input"
datatype = "FP32"
dims = [{in_dims}]          # per-item dims, batch dimension excluded

[[outputs]]
name = "label"
datatype = "INT64"
dims = [{label_dims}]            # per-item scalar (ONNX shape [N])

[[outputs]]
name = "probabilities"
datatype = "FP32"
dims = [{prob_dims}]          # ONNX shape [N, 10]

[batching]
max_queue_delay_microseconds = 0
preferred_batch_size = []
max_queue_size = 1024
"""


def fmt_dims(dims):
    return ", ".join(str(d) for d in dims)


def main():
    np.set_printoptions(precision=4, suppress=True, linewidth=120)

    X_train, X_test, y_train, y_test = split()
    clf = fit(X_train, y_train)
    print(f"sklearn: iterations={clf.n_iter_} train_acc={clf.score(X_train, y_train):.4f} "
          f"test_acc={clf.score(X_test, y_test):.4f}")

    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        target_opset=TARGET_OPSET,
        options={id(clf): {"zipmap": False}},
    )
    onx.producer_name = "kiln-digits-train"
    onx.doc_string = "MLPClassifier(128, 64) on sklearn load_digits; input raw pixels 0..16 as float32"
    onnx.checker.check_model(onx)

    out_names = [o.name for o in onx.graph.output]
    assert out_names == ["label", "probabilities"], out_names
    assert [i.name for i in onx.graph.input] == ["input"]
    main_opset = {o.domain: o.version for o in onx.opset_import}.get("", None)
    assert main_opset is not None and 13 <= main_opset <= 17, main_opset

    outputs = {o.name: o for o in onx.graph.output}
    in_dims = per_item_dims(onx.graph.input[0])
    label_dims = per_item_dims(outputs["label"])
    prob_dims = per_item_dims(outputs["probabilities"])
    assert in_dims == [N_FEATURES], in_dims
    assert prob_dims == [N_CLASSES], prob_dims

    PKG.mkdir(parents=True, exist_ok=True)
    TESTDATA.mkdir(parents=True, exist_ok=True)
    (PKG / "model.onnx").write_bytes(onx.SerializeToString())

    # --- evaluate the exported model with onnxruntime ---------------------
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        str(PKG / "model.onnx"), so, providers=["CPUExecutionProvider"]
    )
    ort_label, ort_prob = sess.run(["label", "probabilities"], {"input": X_test})
    assert ort_label.dtype == np.int64 and ort_prob.dtype == np.float32
    assert list(ort_label.shape[1:]) == label_dims, (ort_label.shape, label_dims)
    assert list(ort_prob.shape[1:]) == prob_dims

    sk_label = clf.predict(X_test)
    sk_prob = clf.predict_proba(X_test)
    n_label_mismatch = int((sk_label != ort_label).sum())
    max_prob_diff = float(np.abs(sk_prob - ort_prob).max())
    print(f"parity sklearn vs onnxruntime: label mismatches={n_label_mismatch} "
          f"max |dprob|={max_prob_diff:.3e}")

    test_acc = float((ort_label == y_test).mean())
    print(f"onnxruntime test accuracy: {test_acc:.4f} ({int((ort_label == y_test).sum())}/{len(y_test)})")

    metrics = {
        "test_accuracy": round(test_acc, 6),
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
    }
    (PKG / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    # --- manifest -----------------------------------------------------------
    (PKG / "kiln.toml").write_text(KILN_TOML.format(
        in_dims=fmt_dims(in_dims),
        label_dims=fmt_dims(label_dims),
        prob_dims=fmt_dims(prob_dims),
    ))

    # --- parity test data ---------------------------------------------------
    # float() of a float32 value is exact as a double; Python's json writes the
    # shortest repr that round-trips, so parsing back to f64 and casting to
    # f32 recovers the exact float32 value.
    heldout = {
        "inputs": [[float(v) for v in row] for row in X_test],
        "labels": [int(v) for v in y_test],
        "ort_label": [int(v) for v in ort_label],
        "ort_probabilities": [[float(v) for v in row] for row in ort_prob],
    }
    with open(TESTDATA / "heldout.json", "w") as f:
        json.dump(heldout, f, separators=(",", ":"))
        f.write("\n")
    np.save(TESTDATA / "heldout.npy", np.ascontiguousarray(X_test, dtype=np.float32))
    np.save(TESTDATA / "heldout_labels.npy", np.ascontiguousarray(y_test, dtype=np.int64))

    # --- drift reference ------------------------------------------------------
    rng = np.random.default_rng(SEED)
    idx = np.sort(rng.choice(len(X_train), size=N_REFERENCE, replace=False))
    with open(PKG / "reference.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"f{i}" for i in range(N_FEATURES)])
        for row in X_train[idx]:
            w.writerow([repr(float(v)) for v in row])

    # --- a sample, for eyeballing ---------------------------------------------
    print("sample input[0] (8x8):")
    print(X_test[0].reshape(8, 8))
    print(f"sample label={y_test[0]} ort_label={ort_label[0]}")
    print(f"sample probabilities={ort_prob[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
