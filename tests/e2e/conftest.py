import json

import numpy as np
import pytest

from harness import ROOT, Cluster, wait_for


@pytest.fixture(scope="session")
def heldout():
    data = json.loads((ROOT / "models/digits/testdata/heldout.json").read_text())
    return {
        "inputs": np.array(data["inputs"], dtype=np.float32),
        "labels": np.array(data["labels"], dtype=np.int64),
        "ort_probabilities": np.array(data["ort_probabilities"], dtype=np.float32),
    }


@pytest.fixture(scope="module")
def cluster(request):
    """Three workers; `digits` v1 deployed with 2 replicas (the third worker is spare); the
    gateway serves system shared memory."""
    c = Cluster(workers=3, gateway_args=["--shared-memory"])
    try:
        c.kiln("deploy", "digits", "--version", "1", "--replicas", "2",
               "--package", str(ROOT / "models/digits/1"), "--no-wait")
        wait_for("2 ready digits replicas",
                 lambda: sum(1 for r in c.replicas() if r["state"] == "READY") == 2, timeout=60)
        # The gateway learns of them through its own etcd watch, a moment later.
        import tritonclient.grpc as grpcclient
        gateway = grpcclient.InferenceServerClient(url=c.gateway_addr)
        wait_for("digits ready at the gateway", lambda: gateway.is_model_ready("digits"), timeout=30)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        if request.session.testsfailed:
            print(c.logs())
        c.close()
