#!/usr/bin/env python3
"""Train and export the zoo package ``models/mlp_pipeline/``: StandardScaler + MLP on wine.

    /work/venv/bin/python models/mlp_pipeline/export.py

scikit-learn ``Pipeline(StandardScaler, MLPClassifier(hidden_layer_sizes=(32,)))`` on the
bundled wine data set (178 rows, 13 features with very different scales, 3 classes), exported
with skl2onnx (``zipmap=False``): output ``label`` INT64 [N], ``probabilities`` FP32 [N, 3].
Writes ``1/model.onnx``, ``1/kiln.toml`` and ``testdata/reference.json`` (onnxruntime outputs).
Fixed seeds, single-threaded: reruns are byte-identical.
"""

import sys
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import zoo_common  # noqa: E402  (sets single-threaded numerics before numpy loads)
import numpy as np  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.datasets import load_wine  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

NAME = "mlp_pipeline"
SEED = 0


def main():
    data = load_wine()
    X = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=SEED
    )
    pipe = Pipeline([
        ("scale", StandardScaler()),
        ("mlp", MLPClassifier(hidden_layer_sizes=(32,), max_iter=2000, random_state=SEED)),
    ])
    pipe.fit(X_train, y_train)

    onx = to_onnx(
        pipe,
        initial_types=[("input", FloatTensorType([None, X.shape[1]]))],
        target_opset={"": 15, "ai.onnx.ml": 3},
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
    )
    onx.producer_name = "kiln-zoo-mlp_pipeline"
    onx.doc_string = "Pipeline(StandardScaler, MLPClassifier(32)) on sklearn load_wine"
    assert [o.name for o in onx.graph.output] == ["label", "probabilities"]
    path = zoo_common.write_package(
        HERE, onx, NAME,
        doc="StandardScaler + MLPClassifier on wine (skl2onnx, zipmap=False); see README.md",
    )

    sess = zoo_common.session(path)
    label, prob = sess.run(None, {"input": X_test})
    acc = float((label == y_test).mean())
    sk = pipe.predict_proba(X_test)
    print(f"held-out accuracy (onnxruntime) {acc:.4f} ({int((label == y_test).sum())}/{len(y_test)});"
          f" max |sklearn - ort| prob {np.abs(sk - prob).max():.2e}")

    cases = zoo_common.batch_cases(X_test, [1, 5, 48])
    zoo_common.write_reference(HERE, NAME, path, cases, float_tolerance=1e-5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
