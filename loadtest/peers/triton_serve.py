#!/usr/bin/env python3
"""Serve Kiln's digits model on a real Triton Inference Server through PyTriton.

Runs inside the Triton venv (``.peers/triton``: ``nvidia-pytriton==0.7.0``, which bundles
tritonserver 2.51 and its Python backend). The bound inference function runs onnxruntime
(one intra-op thread) on the very file Kiln serves, ``models/digits/1/model.onnx``, over the
batch Triton's dynamic batcher formed. Configuration comparable to Kiln's digits package:
``max_batch_size`` 64, dynamic batching with ``max_queue_delay_microseconds`` 0, one model
instance; input ``input`` FP32 [64], outputs ``label`` INT64 [1] (Kiln: a per-item scalar;
Triton with batching needs at least one per-item dimension) and ``probabilities`` FP32 [10].

PyTriton protects some endpoints with an access token (header
``triton-grpc-protocol-triton-access-token``; ``--access-token`` sets it). Its default list
includes ``statistics``, but perf_analyzer (2.50) reads ModelStatistics after every measurement
window and cannot send gRPC headers, so statistics is left open here; the other default
restrictions (model-repository, shared-memory, trace, logging) stay. Stops on SIGTERM or SIGINT.
"""

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig  # noqa: E402


def make_infer(model_path: Path):
    """The batched inference function over one onnxruntime session."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])

    @batch
    def infer(input):  # noqa: A002 - the tensor is named `input` in the protocol
        label, probabilities = sess.run(["label", "probabilities"], {"input": input.astype(np.float32, copy=False)})
        return {"label": label.reshape(-1, 1).astype(np.int64), "probabilities": probabilities}

    return infer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="models/digits/1/model.onnx")
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--access-token", required=True)
    ap.add_argument("--max-batch-size", type=int, default=64)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    config = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port,
                          metrics_port=args.metrics_port, log_verbose=0)
    security = TritonSecurityConfig(
        access_token=args.access_token,
        restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name="digits",
            infer_func=make_infer(args.model),
            inputs=[Tensor(name="input", dtype=np.float32, shape=(64,))],
            outputs=[Tensor(name="label", dtype=np.int64, shape=(1,)),
                     Tensor(name="probabilities", dtype=np.float32, shape=(10,))],
            config=ModelConfig(max_batch_size=args.max_batch_size,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
            strict=False,
        )
        print(f"triton_serve: serving digits on grpc 127.0.0.1:{args.grpc_port}", flush=True)
        try:
            triton.serve()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
