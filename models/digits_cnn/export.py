#!/usr/bin/env python3
"""Train and export the zoo package ``models/digits_cnn/``: a small CNN on 8x8 digits.

    /work/venv/bin/python models/digits_cnn/export.py

torch: Conv(1->16, 3x3, pad 1) - ReLU - Conv(16->32, 3x3, pad 1) - ReLU - MaxPool 2 - Flatten -
Linear(512->128) - ReLU - Linear(128->10), then softmax and argmax inside the graph. Trained on
scikit-learn's bundled ``load_digits`` (pixels scaled to 0..1 by the model itself) for a few
epochs on the CPU, exported with the TorchScript exporter (opset 17, dynamic batch).
Input ``input`` FP32 [N, 1, 8, 8] (raw pixels 0..16); outputs ``label`` INT64 [N],
``probabilities`` FP32 [N, 10]. Writes ``1/model.onnx``, ``1/kiln.toml``,
``testdata/reference.json`` (onnxruntime outputs). Fixed seeds, single-threaded torch.
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
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402

NAME = "digits_cnn"
SEED = 0
EPOCHS = 12
BATCH = 64


class DigitsCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
        )

    def logits(self, x):
        return self.classifier(self.features(x / 16.0))

    def forward(self, x):
        logits = self.logits(x)
        return torch.argmax(logits, dim=1), torch.softmax(logits, dim=1)


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    digits = load_digits()
    X = digits.data.astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=SEED
    )

    model = DigitsCnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(X_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH):
            idx = perm[i : i + BATCH]
            loss = nn.functional.cross_entropy(model.logits(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}: loss {total / len(xt):.4f}")
    model.eval()

    path = HERE / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (torch.from_numpy(X_test[:2]),), str(path),
        dynamo=False, opset_version=17,
        input_names=["input"], output_names=["label", "probabilities"],
        dynamic_axes={"input": {0: "N"}, "label": {0: "N"}, "probabilities": {0: "N"}},
    )
    onx = onnx.load(str(path))
    onx.producer_name = "kiln-zoo-digits_cnn"
    onx.doc_string = "Small CNN on sklearn load_digits 8x8; input raw pixels 0..16 as [N,1,8,8]"
    path = zoo_common.write_package(
        HERE, onx, NAME, doc="Small CNN on 8x8 digits (torch, opset 17); see README.md"
    )

    sess = zoo_common.session(path)
    label, prob = sess.run(None, {"input": X_test})
    acc = float((label == y_test).mean())
    with torch.no_grad():
        t_label, t_prob = model(torch.from_numpy(X_test))
    print(f"held-out accuracy (onnxruntime) {acc:.4f} ({int((label == y_test).sum())}/{len(y_test)});"
          f" max |torch - ort| prob {np.abs(t_prob.numpy() - prob).max():.2e};"
          f" label mismatches vs torch {int((t_label.numpy() != label).sum())}")
    top2 = np.sort(prob, axis=1)[:, -2:]
    print(f"smallest top-1/top-2 probability gap {float((top2[:, 1] - top2[:, 0]).min()):.3e}")

    cases = zoo_common.batch_cases(X_test, [1, 3, 40])
    zoo_common.write_reference(HERE, NAME, path, cases, float_tolerance=1e-4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
