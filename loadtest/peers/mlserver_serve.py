#!/usr/bin/env python3
"""Serve the digits MLP (scikit-learn, joblib) on MLServer with its ``mlserver-sklearn`` runtime.

Runs inside the MLServer venv (``.peers/mlserver``). Writes MLServer's ``settings.json`` and the
model's ``model-settings.json`` into ``--workdir`` and starts MLServer as ``mlserver start``
would, with one addition: MLServer implements no ``ModelConfig`` RPC, and both perf_analyzer and
kiln-loadtest read the model's batch size and input dims from it. This launcher therefore
registers a second gRPC handler on MLServer's own server for
``/inference.GRPCInferenceService/ModelConfig`` only, answering fixed bytes: the serialized
``inference.ModelConfigResponse`` given with ``--model-config`` (``run.py`` builds it with
tritonclient's protos in the project venv: max_batch_size 64, input ``input`` FP32 [64], output
``predict_proba`` FP64 [10]; tritonclient's protos cannot be imported here, they clash with
MLServer's own ``inference.*`` messages in protobuf's default pool). Every other RPC, ModelInfer
included, is MLServer's unchanged.

Settings (stated in the benchmark entry): ``debug`` off (MLServer's default ``debug: true`` logs
every request), one parallel inference worker (its default), no adaptive batching (its
default), metrics on (its default; the benchmark counts inferences from
``model_infer_request_success``). The runtime is told to answer ``predict_proba`` (one forward
pass per request, the class probabilities as FP64 [N, 10]); MLServer's sklearn runtime computes
one method per requested output, so also answering the label would run the network twice.
"""

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

import grpc
from mlserver.cli.serve import load_settings
from mlserver.grpc import server as mlserver_grpc
from mlserver.server import MLServer
from mlserver.utils import install_uvloop_event_loop

MODEL = "digits"


def requested_name(request: bytes) -> str:
    """Field 1 (``name``) of a serialized ``inference.ModelConfigRequest``."""
    i = 0
    while i < len(request):
        key, i = _varint(request, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            size, i = _varint(request, i)
            if field == 1:
                return request[i:i + size].decode()
            i += size
        elif wire == 0:
            _, i = _varint(request, i)
        else:
            break
    return ""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def patch_model_config(answer: bytes) -> None:
    """Make MLServer's gRPC server also answer ModelConfig (raw bytes in, fixed bytes out)."""
    original = mlserver_grpc.GRPCServer._create_server

    async def model_config(request: bytes, context) -> bytes:
        name = requested_name(request)
        if name != MODEL:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}")
        return answer

    def create_server(self):
        server = original(self)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {"ModelConfig": grpc.unary_unary_rpc_method_handler(model_config)}),))
        return server

    mlserver_grpc.GRPCServer._create_server = create_server


def write_settings(workdir: Path, model_dir: Path, args: argparse.Namespace) -> None:
    """settings.json (server) and digits/model-settings.json (model) under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "settings.json").write_text(json.dumps({
        "debug": False,
        "host": "127.0.0.1",
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        "metrics_dir": str(workdir / ".metrics"),
        "environments_dir": str(workdir / ".envs"),
        "parallel_workers": args.parallel_workers,
    }, indent=2))
    (workdir / MODEL).mkdir(exist_ok=True)
    (workdir / MODEL / "model-settings.json").write_text(json.dumps({
        "name": MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 10]}],
        "parameters": {"uri": str(model_dir / "model.joblib"), "version": "1",
                       "extra": {"predict_fn": "predict_proba"}},
    }, indent=2))


async def serve(workdir: Path) -> None:
    """`mlserver start workdir`, in this process."""
    settings, models = await load_settings(str(workdir))
    await MLServer(settings).start(models)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, type=Path, help="directory holding model.joblib")
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--parallel-workers", type=int, default=1)
    ap.add_argument("--model-config", required=True, type=Path,
                    help="file with the serialized inference.ModelConfigResponse to answer")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    write_settings(args.workdir, args.model_dir, args)
    patch_model_config(args.model_config.read_bytes())
    install_uvloop_event_loop()
    asyncio.run(serve(args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
