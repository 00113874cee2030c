#!/usr/bin/env python3
"""Train and export the zoo package ``models/gbt/``: gradient-boosted trees on breast_cancer.

    /work/venv/bin/python models/gbt/export.py

scikit-learn ``GradientBoostingClassifier`` (60 trees of depth 3) on the bundled
breast_cancer data set (569 rows, 30 features, 2 classes: 0 = malignant, 1 = benign), exported
with skl2onnx (``zipmap=False``, target ai.onnx.ml opset 3: ``TreeEnsembleClassifier``): output
``label`` INT64 [N], ``probabilities`` FP32 [N, 2]. Writes ``1/model.onnx``, ``1/kiln.toml``
and ``testdata/reference.json`` (onnxruntime outputs). Fixed seeds: reruns are byte-identical.
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
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

NAME = "gbt"
SEED = 0


def main():
    data = load_breast_cancer()
    X = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=SEED
    )
    clf = GradientBoostingClassifier(n_estimators=60, max_depth=3, learning_rate=0.1,
                                     random_state=SEED)
    clf.fit(X_train, y_train)

    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, X.shape[1]]))],
        target_opset={"": 15, "ai.onnx.ml": 3},
        options={id(clf): {"zipmap": False}},
    )
    onx.producer_name = "kiln-zoo-gbt"
    onx.doc_string = "GradientBoostingClassifier(60 trees, depth 3) on sklearn load_breast_cancer"
    assert [o.name for o in onx.graph.output] == ["label", "probabilities"]
    path = zoo_common.write_package(
        HERE, onx, NAME,
        doc="GradientBoostingClassifier on breast_cancer (skl2onnx, zipmap=False); see README.md",
    )

    sess = zoo_common.session(path)
    label, prob = sess.run(None, {"input": X_test})
    acc = float((label == y_test).mean())
    sk = clf.predict_proba(X_test)
    print(f"held-out accuracy (onnxruntime) {acc:.4f} ({int((label == y_test).sum())}/{len(y_test)});"
          f" label mismatches vs sklearn {int((clf.predict(X_test) != label).sum())};"
          f" max |sklearn - ort| prob {np.abs(sk - prob).max():.2e}")

    cases = zoo_common.batch_cases(X_test, [1, 7, 48])
    zoo_common.write_reference(HERE, NAME, path, cases, float_tolerance=1e-5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
