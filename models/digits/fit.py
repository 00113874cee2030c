"""The digits MLP's data split and training, with scikit-learn only.

Shared by ``train.py`` (which exports the fitted model to ONNX) and by the peer benchmark's
``loadtest/peers/digits_sklearn.py`` (which serves the same fitted model from MLServer, in a venv
without the ONNX tools). Importing it pins the numeric libraries to one thread, before numpy
loads, so that reruns are bit-for-bit reproducible.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

SEED = 0
TEST_SIZE = 0.25
HIDDEN = (128, 64)
MAX_ITER = 300
N_FEATURES = 64


def split():
    """sklearn's bundled digits as float32 pixels 0..16 and int64 labels, split
    (X_train, X_test, y_train, y_test), stratified, seeded."""
    digits = load_digits()
    X = digits.data.astype(np.float32)  # raw pixel intensities 0..16
    y = digits.target.astype(np.int64)
    assert X.shape[1] == N_FEATURES
    return train_test_split(X, y, test_size=TEST_SIZE, stratify=y, random_state=SEED)


def fit(X_train, y_train) -> MLPClassifier:
    """The MLP trained on the training split."""
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=MAX_ITER, random_state=SEED)
    clf.fit(X_train, y_train)
    return clf
