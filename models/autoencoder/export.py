#!/usr/bin/env python3
"""Train and export the zoo package ``models/autoencoder/``: a digits autoencoder anomaly scorer.

    /work/venv/bin/python models/autoencoder/export.py

torch: encoder Linear(64->32) - ReLU - Linear(32->8), decoder Linear(8->32) - ReLU -
Linear(32->64) - Sigmoid, trained on scikit-learn's bundled ``load_digits`` (pixels scaled to
0..1 inside the graph). Outputs ``reconstruction`` FP32 [N, 64] (in input units, 0..16) and
``score`` FP32 [N], the mean squared reconstruction error of the row in 0..1 units, computed
in the graph: an anomaly score (higher = less digit-like). Exported with the TorchScript
exporter (opset 17, dynamic batch). Writes ``1/model.onnx``, ``1/kiln.toml`` and
``testdata/reference.json`` (onnxruntime outputs on held-out digits and on anomalies).
Fixed seeds, single-threaded torch.
"""

import sys
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import zoo_common  # noqa: E402  (sets single-threaded numerics before numpy loads)
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402

NAME = "autoencoder"
SEED = 0
EPOCHS = 100
BATCH = 64
SCALE = 16.0


class Autoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
        self.decoder = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64), nn.Sigmoid())

    def reconstruct01(self, x01):
        return self.decoder(self.encoder(x01))

    def forward(self, x):
        x01 = x / SCALE
        r01 = self.reconstruct01(x01)
        score = torch.mean((r01 - x01) ** 2, dim=1)
        return r01 * SCALE, score


def anomalies(rng, clean):
    """Non-digit inputs in the same value range: uniform noise, and digits with a block of
    pixels set to full intensity."""
    noise = rng.integers(0, 17, size=(len(clean) // 2, 64)).astype(np.float32)
    blocked = clean[len(clean) // 2 :].copy().reshape(-1, 8, 8)
    blocked[:, 2:6, 2:6] = 16.0
    return np.concatenate([noise, blocked.reshape(-1, 64)])


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    digits = load_digits()
    X = digits.data.astype(np.float32)
    X_train, X_test = train_test_split(X, test_size=0.25, stratify=digits.target,
                                       random_state=SEED)

    model = Autoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt = torch.from_numpy(X_train) / SCALE
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH):
            xb = xt[perm[i : i + BATCH]]
            loss = nn.functional.mse_loss(model.reconstruct01(xb), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}: train mse {total / len(xt):.5f}")
    model.eval()

    path = HERE / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (torch.from_numpy(X_test[:2]),), str(path),
        dynamo=False, opset_version=17,
        input_names=["input"], output_names=["reconstruction", "score"],
        dynamic_axes={"input": {0: "N"}, "reconstruction": {0: "N"}, "score": {0: "N"}},
    )
    onx = onnx.load(str(path))
    onx.producer_name = "kiln-zoo-autoencoder"
    onx.doc_string = "Autoencoder 64-32-8-32-64 on sklearn load_digits; score = row MSE (0..1 units)"
    path = zoo_common.write_package(
        HERE, onx, NAME, doc="Digits autoencoder anomaly scorer (torch, opset 17); see README.md"
    )

    sess = zoo_common.session(path)
    bad = anomalies(rng, X_test[:100])
    _, s_clean = sess.run(None, {"input": X_test})
    _, s_bad = sess.run(None, {"input": bad})
    with torch.no_grad():
        _, t_score = model(torch.from_numpy(X_test))
    auc = roc_auc_score(np.r_[np.zeros(len(s_clean)), np.ones(len(s_bad))], np.r_[s_clean, s_bad])
    print(f"held-out mean score {s_clean.mean():.5f}; anomalies mean score {s_bad.mean():.5f};"
          f" ROC AUC held-out digits vs anomalies {auc:.4f};"
          f" max |torch - ort| score {np.abs(t_score.numpy() - s_clean).max():.2e}")

    mixed = np.concatenate([X_test[200:220], bad[:10], bad[-10:]])
    cases = zoo_common.batch_cases(X_test, [1, 6])
    cases.append(("mixed_40", {"input": np.ascontiguousarray(mixed)}))
    zoo_common.write_reference(HERE, NAME, path, cases, float_tolerance=1e-4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
