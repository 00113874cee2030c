#!/usr/bin/env python3
"""Export the zoo package ``models/transformer/``: one transformer encoder block.

    /work/venv/bin/python models/transformer/export.py

The block is torch's ``nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64,
activation="gelu", batch_first=True, norm_first=False, dropout=0)``: multi-head self-attention,
residual + LayerNorm, feed-forward with exact (erf) GELU, residual + LayerNorm. Weights are
seeded random (the block is untrained: this package tests the op mix, not a task); the LayerNorm
affine parameters are randomized too so that they matter. Input ``input`` FP32 [N, 16, 32]
(sequence length fixed at 16, batch dynamic); output ``output`` FP32 [N, 16, 32]. Exported
with the TorchScript exporter, opset 17.

torch 2.15's TorchScript exporter cannot trace ``nn.TransformerEncoderLayer`` itself
(``scaled_dot_product_attention(): argument 'is_causal' must be bool, not Tensor``), so
``EncoderBlock`` below spells out the same computation with the layer's own parameters; the
script checks that both agree in torch before exporting. Writes ``1/model.onnx``, ``1/kiln.toml`` and
``testdata/reference.json`` (onnxruntime outputs). Fixed seeds.
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
from torch import nn  # noqa: E402

NAME = "transformer"
SEED = 0
SEQ = 16
D_MODEL = 32


class EncoderBlock(nn.Module):
    """``nn.TransformerEncoderLayer``'s post-norm forward pass, written out."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.heads = layer.self_attn.num_heads
        self.head_dim = D_MODEL // self.heads

    def split_heads(self, t):
        # [N, S, D] -> [N, H, S, Dh]
        return t.reshape(-1, SEQ, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        layer = self.layer
        attn = layer.self_attn
        q, k, v = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        weights = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim**0.5, dim=-1)
        ctx = (weights @ v).transpose(1, 2).reshape(-1, SEQ, D_MODEL)
        x = layer.norm1(x + attn.out_proj(ctx))
        ff = layer.linear2(nn.functional.gelu(layer.linear1(x)))
        return layer.norm2(x + ff)


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    block = nn.TransformerEncoderLayer(
        d_model=D_MODEL, nhead=4, dim_feedforward=64, dropout=0.0, activation="gelu",
        batch_first=True, norm_first=False,
    )
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):
            norm.weight.copy_(1.0 + 0.1 * torch.randn(D_MODEL))
            norm.bias.copy_(0.1 * torch.randn(D_MODEL))
    block.eval()
    layer, block = block, EncoderBlock(block).eval()

    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((48, SEQ, D_MODEL)).astype(np.float32)

    path = HERE / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        block, (torch.from_numpy(x[:2]),), str(path),
        dynamo=False, opset_version=17,
        input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
    )
    onx = onnx.load(str(path))
    # The exporter leaves the output's non-batch dims symbolic; they are fixed.
    zoo_common.set_shape(onx, "output", ["N", SEQ, D_MODEL])
    onx.producer_name = "kiln-zoo-transformer"
    onx.doc_string = "nn.TransformerEncoderLayer(d_model=32, nhead=4, ff=64, gelu), seeded weights"
    path = zoo_common.write_package(
        HERE, onx, NAME, doc="One transformer encoder block (torch, opset 17); see README.md"
    )

    sess = zoo_common.session(path)
    (out,) = sess.run(None, {"input": x})
    with torch.no_grad():
        t_out = block(torch.from_numpy(x)).numpy()
        t_ref = layer(torch.from_numpy(x)).numpy()
    gap = float(np.abs(t_out - t_ref).max())
    print(f"max |EncoderBlock - nn.TransformerEncoderLayer| {gap:.2e}")
    assert gap < 1e-5, gap
    print(f"max |torch - ort| {np.abs(t_out - out).max():.2e}; output range "
          f"[{out.min():.3f}, {out.max():.3f}]")

    cases = zoo_common.batch_cases(x, [1, 3, 12])
    zoo_common.write_reference(HERE, NAME, path, cases, float_tolerance=1e-4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
