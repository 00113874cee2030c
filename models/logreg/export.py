#!/usr/bin/env python3
"""Train and export the zoo package ``models/logreg/``: multinomial logistic regression on iris.

    /work/venv/bin/python models/logreg/export.py

scikit-learn ``LogisticRegression`` on the bundled iris data set (150 rows, 4 features, 3
classes), with the class labels as species names (strings), exported with skl2onnx
(``zipmap=False``): output ``label`` is BYTES (the species name), ``probabilities`` FP32 [N, 3].
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
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

NAME = "logreg"
SEED = 0


def main():
    iris = load_iris()
    X = iris.data.astype(np.float32)
    y = np.asarray(iris.target_names)[iris.target]  # species names
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=SEED
    )
    clf = LogisticRegression(max_iter=1000, random_state=SEED)
    clf.fit(X_train, y_train)

    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, 4]))],
        target_opset={"": 15, "ai.onnx.ml": 3},
        options={id(clf): {"zipmap": False}},
    )
    onx.producer_name = "kiln-zoo-logreg"
    onx.doc_string = "LogisticRegression on sklearn load_iris; label = species name"
    assert [o.name for o in onx.graph.output] == ["label", "probabilities"]
    path = zoo_common.write_package(
        HERE, onx, NAME, doc="LogisticRegression on iris (skl2onnx, zipmap=False); see README.md"
    )

    sess = zoo_common.session(path)
    label, prob = sess.run(None, {"input": X_test})
    acc = float((label == y_test).mean())
    sk = clf.predict_proba(X_test)
    print(f"held-out accuracy (onnxruntime) {acc:.4f} ({int((label == y_test).sum())}/{len(y_test)});"
          f" max |sklearn - ort| prob {np.abs(sk - prob).max():.2e}")

    cases = zoo_common.batch_cases(X_test, [1, 4, 40])
    zoo_common.write_reference(HERE, NAME, path, cases, float_tolerance=1e-5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
