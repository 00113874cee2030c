#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/ (run from anywhere; needs the
repository's .venv for tritonclient's ModelInferRequest and numpy).

Seeds are valid examples made from the demo models (requests with held-out rows, the packages'
kiln.toml and model.onnx files, the per-op ONNX fixtures of shared/model/tests/fixtures/ops.json)
plus a few edge cases each. File names are content hashes, as libFuzzer names its own finds, so
rerunning this leaves unchanged seeds unchanged."""

import base64
import hashlib
import json
import random
import struct
from pathlib import Path

from tritonclient.grpc import service_pb2 as pb

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
MODELS = ROOT / "models"
CORPUS = FUZZ / "corpus"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


# --- infer_request: protobuf ModelInferRequest ------------------------------------------------

def request(model, inputs, raw, version="", outputs=(), params=None, req_id=""):
    """inputs: [(name, datatype, shape, values)]"""
    r = pb.ModelInferRequest(model_name=model, model_version=version, id=req_id)
    for k, v in (params or {}).items():
        if isinstance(v, bool):
            r.parameters[k].bool_param = v
        elif isinstance(v, int):
            if v < 0:
                r.parameters[k].int64_param = v
            else:
                r.parameters[k].uint64_param = v
        else:
            r.parameters[k].string_param = v
    for name, dt, shape, values in inputs:
        t = r.inputs.add(name=name, datatype=dt, shape=shape)
        if raw:
            r.raw_input_contents.append(raw_bytes(dt, values))
        else:
            c = t.contents
            {
                "FP32": c.fp32_contents, "FP64": c.fp64_contents, "INT32": c.int_contents,
                "INT64": c.int64_contents, "UINT8": c.uint_contents, "BOOL": c.bool_contents,
                "BYTES": c.bytes_contents, "FP16": c.fp32_contents,
            }[dt].extend(values)
    for o in outputs:
        r.outputs.add(name=o)
    return r.SerializeToString()


def raw_bytes(dt, values):
    if dt == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    fmt = {"FP32": "f", "FP64": "d", "INT32": "i", "INT64": "q", "UINT8": "B", "BOOL": "?",
           "FP16": "e"}[dt]
    return struct.pack("<%d%s" % (len(values), fmt), *values)


def infer_request_seeds():
    held = json.loads((MODELS / "digits/testdata/heldout.json").read_text())["inputs"]
    rows = lambda n: [x for row in held[:n] for x in row]
    t = "infer_request"
    for raw in (False, True):
        write(t, request("digits", [("input", "FP32", [1, 64], rows(1))], raw))
        write(t, request("digits", [("input", "FP32", [3, 64], rows(3))], raw, version="1",
                         outputs=["probabilities"], params={"priority": 1, "timeout": 1000},
                         req_id="seed"))
        write(t, request("digits", [("input", "FP32", [2, 64], rows(2))], raw,
                         outputs=["label", "probabilities"]))
        write(t, request("logreg", [("input", "FP32", [2, 4], [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3])], raw))
        write(t, request("digits_cnn", [("input", "FP32", [2, 1, 8, 8], rows(2))], raw, outputs=["label"]))
        write(t, request("typed", [
            ("f32", "FP32", [2, 2, 3], [float(i) for i in range(12)]),
            ("f64", "FP64", [2, 2], [0.5, -1.5, 1e300, -0.0]),
            ("i32", "INT32", [2], [-7, 2**31 - 1]),
            ("i64", "INT64", [2, 2, 1], [1, -1, 2**63 - 1, -2**63]),
            ("u8", "UINT8", [2, 4], [0, 1, 254, 255, 7, 8, 9, 10]),
            ("bool", "BOOL", [2, 1], [True, False]),
            ("bytes", "BYTES", [2, 2], [b"ab", b"", b"\x00\xff", b"kiln"]),
        ], raw, outputs=["z"]))
        write(t, request("unbatched", [
            ("ids", "INT64", [3, 2], [1, 2, 3, 4, 5, 6]),
            ("text", "BYTES", [], [b"hello"]),
        ], raw))
        write(t, request("half", [("x", "FP16", [1, 2], [0.5, 1.0])], raw))
    # Edge cases (all refused by the worker).
    write(t, b"")
    write(t, request("digits", [("input", "FP32", [65, 64], [0.0] * 65 * 64)], True))
    write(t, request("digits", [("input", "FP32", [0, 64], [])], False))
    write(t, request("digits", [("input", "FP32", [1, -1], [])], False))
    write(t, request("digits", [("input", "FP32", [1, 2**62, 2**62], [])], True))
    write(t, request("digits", [("input", "FP64", [1, 64], rows(1))], False))
    write(t, request("digits", [("input", "FP32", [1, 64], rows(1)[:63])], False))
    write(t, request("digits", [("input", "FP32", [1, 64], rows(1)), ("input", "FP32", [1, 64], rows(1))], False))
    write(t, request("digits", [("input", "FP32", [1, 64], rows(1))], False, outputs=["nope"]))
    write(t, request("digits", [("input", "FP32", [1, 64], rows(1))], False, outputs=["label", "label"]))
    write(t, request("digits", [("input", "FP32", [1, 64], [float("nan"), float("inf"), -float("inf")] + rows(1)[3:])], True))
    mixed = pb.ModelInferRequest()
    mixed.ParseFromString(request("digits", [("input", "FP32", [1, 64], rows(1))], True))
    mixed.inputs[0].contents.fp32_contents.extend([1.0])
    write(t, mixed.SerializeToString())
    write(t, request("unbatched", [("ids", "INT64", [1, 2], [1, 2]), ("text", "BYTES", [], [b"x"])], True)[:-2])


# --- infer_request_structured: bytes for arbitrary's Unstructured ------------------------------

def structured_seeds():
    rng = random.Random(20261127)
    write("infer_request_structured", b"")
    for n in (16, 64, 256, 1024, 4096):
        for _ in range(3):
            write("infer_request_structured", bytes(rng.randrange(256) for _ in range(n)))


# --- onnx_load: ONNX model files ----------------------------------------------------------------

def onnx_seeds():
    for model in ("logreg", "mlp_pipeline", "autoencoder", "gbt", "transformer", "digits"):
        write("onnx_load", (MODELS / model / "1/model.onnx").read_bytes())
    cases = json.loads((ROOT / "shared/model/tests/fixtures/ops.json").read_text())
    for case in cases:
        write("onnx_load", base64.b64decode(case["model_b64"]))
    write("onnx_load", b"")


# --- manifest: kiln.toml -----------------------------------------------------------------------

MANIFEST_EDGES = [
    # every knob
    """name = "m-1.x"
version = "7"
format = "onnx"
model_file = "sub/model.onnx"
max_batch_size = 8
reference = "reference.csv"
instance_count = 64

[[inputs]]
name = "a"
datatype = "BYTES"
dims = [-1, 3]

[[inputs]]
name = "b"
datatype = "BOOL"
dims = []

[[outputs]]
name = "y"
datatype = "INT64"
dims = [2, -1]

[batching]
max_queue_delay_microseconds = 100
preferred_batch_size = [4, 8]
max_queue_size = 1
default_timeout_microseconds = 250000
""",
    # no batch dimension, defaults
    "name='u'\nversion='1'\nmax_batch_size=0\n[[inputs]]\nname='x'\ndatatype='FP64'\ndims=[2]\n"
    "[[outputs]]\nname='y'\ndatatype='UINT8'\ndims=[1]\n",
    # inline tables
    "name='i'\nversion='1'\ninputs=[{name='x',datatype='INT32',dims=[1]}]\n"
    "outputs=[{name='y',datatype='FP16',dims=[-1]}]\nbatching={max_queue_size=0}\n",
    # refused: escaping model_file, zero dim, instance_count 0, unknown key, wrong type
    "name='e'\nversion='1'\nmodel_file='../x.onnx'\n[[inputs]]\nname='x'\ndatatype='FP32'\ndims=[1]\n"
    "[[outputs]]\nname='y'\ndatatype='FP32'\ndims=[1]\n",
    "name='z'\nversion='1'\n[[inputs]]\nname='x'\ndatatype='FP32'\ndims=[0]\n"
    "[[outputs]]\nname='y'\ndatatype='FP32'\ndims=[-2]\n",
    "name='n'\nversion='1'\ninstance_count=0\nextra=1\n[[inputs]]\nname='x'\ndatatype='FLOAT'\ndims=[1]\n"
    "[[outputs]]\nname='y'\ndatatype='FP32'\ndims=[1]\n",
    "name='t'\nversion=1\nmax_batch_size=-1\n[[inputs]]\nname='x'\ndatatype='FP32'\ndims=[9223372036854775807]\n",
    "",
]


def manifest_seeds():
    for toml in sorted(MODELS.glob("*/1/kiln.toml")):
        write("manifest", toml.read_bytes())
    for text in MANIFEST_EDGES:
        write("manifest", text)


# --- grpc_timeout: header values and version lists --------------------------------------------

def timeout_seeds():
    for v in ["250m", "3S", "1H", "99999999H", "99999999n", "0u", "5M", "123456789S", "m",
              "", "1x", "-1S", " 1S", "1\n2\n10\n9a\nlatest\n01", "1\n10\n2"]:
        write("grpc_timeout", v)


if __name__ == "__main__":
    infer_request_seeds()
    structured_seeds()
    onnx_seeds()
    manifest_seeds()
    timeout_seeds()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")
