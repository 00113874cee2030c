"""Monitoring through the real cluster (issue 6, first slice): workers profile the traffic they
serve and push it to the monitor, which compares it with the version's reference profile
(models/digits/1/reference.profile.pb, built by `kiln profile`)."""

import json
import shutil

import numpy as np

from harness import ROOT, Cluster, wait_for
from test_control_plane import deploy, digits_v2, ready
from tritonclient.grpc import service_pb2, service_pb2_grpc
import grpc


def send(c, rows, version):
    req = service_pb2.ModelInferRequest(model_name="digits", model_version=version)
    with grpc.insecure_channel(c.gateway_addr) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        for start in range(0, len(rows), 8):
            batch = rows[start:start + 8]
            del req.inputs[:]
            del req.raw_input_contents[:]
            req.inputs.add(name="input", datatype="FP32", shape=list(batch.shape))
            req.raw_input_contents.append(batch.tobytes())
            stub.ModelInfer(req, timeout=10)


def report(c, version):
    out = c.kiln("drift", "digits", "--version", version, "-o", "json")
    return json.loads(out.stdout)


def test_live_traffic_is_compared_with_the_reference(heldout):
    c = Cluster(workers=1)
    try:
        deploy(c, "digits", 1)
        deploy(c, "digits", 1, "2", digits_v2(c))
        wait_for("both versions ready", lambda: len(ready(c)) == 2, timeout=60)
        x = heldout["inputs"]
        send(c, x, "1")  # held-out digits: the reference's distribution
        shifted = np.clip(x + 6.0, 0, 16).astype(np.float32)  # brighter everywhere
        send(c, shifted, "2")
        same = wait_for("v1 judged", lambda: (r := report(c, "1"))["sample_count"] >= 200 and r,
                        timeout=30)
        moved = wait_for("v2 judged", lambda: (r := report(c, "2"))["sample_count"] >= 200 and r,
                         timeout=30)
        for name, r in [("held-out", same), ("shifted +6", moved)]:
            print(f"{name}: {r['sample_count']} live rows vs {r['reference_count']} reference rows, "
                  f"{r['drifted_features']} of {len(r['features'])} features drifted "
                  f"(share {r['drift_share']:.2f}), dataset drift {r['drifted']}")
        assert not same["drifted"]
        assert moved["drifted"]
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.close()
