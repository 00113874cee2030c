"""Helpers shared by the model zoo's export scripts (``models/<name>/export.py``).

Not a model package (it has no ``1/`` directory). Each export script puts ``models/`` on
``sys.path`` and imports this module. Everything here needs only numpy, onnx and onnxruntime.

``testdata/reference.json`` format, read by ``shared/model/tests/zoo.rs``::

    {
      "model": "<name>",
      "generator": "models/<name>/export.py",
      "onnxruntime": "1.32.0",
      "float_tolerance": 1e-4,   # |kiln - ort| <= tol * max(1, |ort|) for FP32 outputs
      "cases": [
        {"name": "batch_1",
         "inputs":  [{"name", "datatype", "shape", "data"}, ...],
         "outputs": [{"name", "datatype", "shape", "data"}, ...]},   # every output, manifest order
        ...
      ]
    }

Tensors are flat, row-major; ``datatype`` is the v2 name (``FP32``, ``INT64``, ``BYTES``). FP32
values are written as Python floats of the float32 values (exact; json writes the shortest
round-trip repr). BYTES elements are UTF-8 strings. INT64 and BYTES outputs must match exactly.
"""

import json
import os

# Single-threaded numerics so that reruns are bit-for-bit reproducible.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

ONNX_TO_V2 = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.STRING: "BYTES",
}


def datatype_of(arr):
    arr = np.asarray(arr)
    if arr.dtype == np.float32:
        return "FP32"
    if arr.dtype == np.int64:
        return "INT64"
    if arr.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    raise SystemExit(f"unsupported reference dtype {arr.dtype}")


def tensor_json(name, arr):
    arr = np.asarray(arr)
    datatype = datatype_of(arr)
    flat = arr.ravel()
    if datatype == "FP32":
        data = [float(x) for x in flat]
    elif datatype == "INT64":
        data = [int(x) for x in flat]
    else:
        data = [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def per_item_dims(value_info):
    """ONNX value_info shape without the leading (batch) dimension; all must be fixed."""
    dims = value_info.type.tensor_type.shape.dim
    out = []
    for d in dims[1:]:
        if not d.HasField("dim_value"):
            raise SystemExit(f"{value_info.name}: non-batch dim is symbolic: {d}")
        out.append(int(d.dim_value))
    return out


def check_batch_dynamic(model):
    """Every graph input and output must have a symbolic (or absent) leading dimension."""
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not dims:
            raise SystemExit(f"{vi.name}: no shape")
        if dims[0].HasField("dim_value"):
            raise SystemExit(f"{vi.name}: batch dimension is fixed ({dims[0].dim_value})")


def set_shape(model, name, dims):
    """Overwrites the declared shape of graph input/output ``name`` (str = symbolic dim)."""
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name == name:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in dims:
                dim = shape.dim.add()
                if isinstance(d, str):
                    dim.dim_param = d
                else:
                    dim.dim_value = d
            return
    raise SystemExit(f"no graph input or output {name}")


def kiln_toml(model, name, max_batch_size=64, doc=""):
    """The package manifest text for an ONNX model with a dynamic batch dimension."""
    check_batch_dynamic(model)
    lines = [
        f"# {doc}" if doc else None,
        f'name = "{name}"',
        'version = "1"',
        'format = "onnx"',
        'model_file = "model.onnx"',
        f"max_batch_size = {max_batch_size}",
    ]
    lines = [x for x in lines if x is not None]
    for section, infos in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        for vi in infos:
            elem = vi.type.tensor_type.elem_type
            if elem not in ONNX_TO_V2:
                raise SystemExit(f"{vi.name}: element type {elem} not mapped")
            dims = ", ".join(str(d) for d in per_item_dims(vi))
            lines += [
                "",
                f"[[{section}]]",
                f'name = "{vi.name}"',
                f'datatype = "{ONNX_TO_V2[elem]}"',
                f"dims = [{dims}]  # per-item dims, batch dimension excluded",
            ]
    lines += [
        "",
        "[batching]",
        "max_queue_delay_microseconds = 0",
        "preferred_batch_size = []",
        "max_queue_size = 1024",
    ]
    return "\n".join(lines) + "\n"


def ops_used(model):
    return sorted({(n.domain or "ai.onnx", n.op_type) for n in model.graph.node})


def write_package(here, model, name, max_batch_size=64, doc=""):
    """Writes ``1/model.onnx`` and ``1/kiln.toml`` under the model's directory ``here``."""
    # Some converters list opset imports in set order, or one domain twice: sort and dedupe them
    # so that reruns are byte-identical and each domain is imported once.
    versions = {}
    for o in model.opset_import:
        if versions.setdefault(o.domain, o.version) != o.version:
            raise SystemExit(f"opset domain {o.domain!r} imported at two versions")
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    onnx.checker.check_model(model, full_check=True)
    pkg = here / "1"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "model.onnx").write_bytes(model.SerializeToString())
    (pkg / "kiln.toml").write_text(kiln_toml(model, name, max_batch_size, doc))
    size = (pkg / "model.onnx").stat().st_size
    print(f"{name}: model.onnx {size} bytes; ops {ops_used(model)}")
    return pkg / "model.onnx"


def write_reference(here, name, model_path, cases, float_tolerance):
    """Runs every case through onnxruntime and writes ``testdata/reference.json``.

    ``cases``: list of (case name, {input name: array}). Returns {case name: [outputs]}.
    """
    sess = session(model_path)
    out_names = [o.name for o in sess.get_outputs()]
    doc = {
        "model": name,
        "generator": f"models/{name}/export.py",
        "onnxruntime": ort.__version__,
        "float_tolerance": float_tolerance,
        "cases": [],
    }
    results = {}
    for case_name, feeds in cases:
        outs = sess.run(out_names, feeds)
        results[case_name] = outs
        doc["cases"].append(
            {
                "name": case_name,
                "inputs": [tensor_json(k, v) for k, v in feeds.items()],
                "outputs": [tensor_json(k, v) for k, v in zip(out_names, outs)],
            }
        )
    testdata = here / "testdata"
    testdata.mkdir(parents=True, exist_ok=True)
    with open(testdata / "reference.json", "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    return results


def batch_cases(x, sizes, input_name="input"):
    """Consecutive slices of ``x`` of the given sizes, as reference cases."""
    cases, start = [], 0
    for n in sizes:
        if start + n > len(x):
            raise SystemExit(f"not enough rows for batch sizes {sizes}")
        cases.append((f"batch_{n}", {input_name: np.ascontiguousarray(x[start : start + n])}))
        start += n
    return cases
