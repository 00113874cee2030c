#!/usr/bin/env python3
"""Writes the serialized ``inference.ModelConfigResponse`` that MLServer is made to answer.

Runs in the project venv (``.venv``, tritonclient's protos). MLServer has no ModelConfig RPC;
``mlserver_serve.py`` answers these bytes for ``digits``: max_batch_size 64, input ``input``
FP32 [64], output ``predict_proba`` FP64 [10] (what its sklearn runtime returns).

    .venv/bin/python loadtest/peers/model_config.py OUT_FILE
"""

import sys
from pathlib import Path

from tritonclient.grpc import model_config_pb2, service_pb2


def response() -> bytes:
    """The serialized ModelConfigResponse."""
    cfg = model_config_pb2.ModelConfig(name="digits", platform="mlserver_sklearn", max_batch_size=64)
    cfg.input.add(name="input", data_type=model_config_pb2.TYPE_FP32, dims=[64])
    cfg.output.add(name="predict_proba", data_type=model_config_pb2.TYPE_FP64, dims=[10])
    return service_pb2.ModelConfigResponse(config=cfg).SerializeToString()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    Path(sys.argv[1]).write_bytes(response())
