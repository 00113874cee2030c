"""End to end: real etcd, monitor, gateway and workers as separate processes, driven by real
clients (tritonclient, Triton's perf_analyzer, the `kiln` CLI)."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from harness import LEASE_TTL_SECS, wait_for


def client(addr):
    return grpcclient.InferenceServerClient(url=addr)


def infer(addr, rows):
    inp = grpcclient.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    outs = [grpcclient.InferRequestedOutput("label"), grpcclient.InferRequestedOutput("probabilities")]
    return client(addr).infer("digits", [inp], outputs=outs)


def test_metadata_and_config_match_the_package(cluster):
    c = client(cluster.gateway_addr)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("digits")
    md = c.get_model_metadata("digits", as_json=True)
    assert md["name"] == "digits" and md["versions"] == ["1"]
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in md["outputs"]] == [
        ("label", "INT64", ["-1"]), ("probabilities", "FP32", ["-1", "10"])]
    cfg = c.get_model_config("digits", as_json=True)["config"]
    assert cfg["name"] == "digits" and int(cfg["max_batch_size"]) == 64
    assert cfg["input"][0]["name"] == "input" and cfg["input"][0]["data_type"] == "TYPE_FP32"
    assert [int(d) for d in cfg["input"][0]["dims"]] == [64]
    assert [o["name"] for o in cfg["output"]] == ["label", "probabilities"]


def test_tritonclient_accuracy_on_heldout(cluster, heldout):
    x, y = heldout["inputs"], heldout["labels"]
    labels, probs = [], []
    for start in range(0, len(x), 64):
        res = infer(cluster.gateway_addr, x[start:start + 64])
        labels.append(res.as_numpy("label"))
        probs.append(res.as_numpy("probabilities"))
    labels, probs = np.concatenate(labels), np.concatenate(probs)
    accuracy = float((labels == y).mean())
    max_diff = float(np.abs(probs - heldout["ort_probabilities"]).max())
    print(f"tritonclient via gateway: accuracy {accuracy:.4f} on {len(y)} rows, "
          f"max |kiln - onnxruntime| {max_diff:.2e}")
    assert accuracy >= 0.95
    assert max_diff <= 1e-5
    # One row at a time too (batch 1 is what most callers send).
    one = infer(cluster.gateway_addr, x[:1])
    assert one.as_numpy("label")[0] == labels[0]


def test_tritonclient_class_count_gets_the_top_classes(cluster, heldout):
    # Triton's classification extension: InferRequestedOutput(class_count=N) answers with the
    # N largest entries per row as BYTES "value:index", largest first.
    x = heldout["inputs"][:8]
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outs = [grpcclient.InferRequestedOutput("probabilities", class_count=3),
            grpcclient.InferRequestedOutput("label")]
    res = client(cluster.gateway_addr).infer("digits", [inp], outputs=outs)
    top = res.as_numpy("probabilities")
    print(f"class_count=3, first row: {top[0].tolist()}")
    assert top.shape == (8, 3)
    probs = heldout["ort_probabilities"][:8]
    for row, expected in zip(top, probs):
        parsed = [entry.decode().split(":") for entry in row]
        indices = [int(i) for _, i in parsed]
        values = [float(v) for v, _ in parsed]
        assert indices == list(np.argsort(-expected, kind="stable")[:3])
        assert np.allclose(values, expected[indices], atol=1e-5)
        assert values == sorted(values, reverse=True)
    assert list(res.as_numpy("label")) == [int(row[0].decode().split(":")[1]) for row in top]


def raw_request(**overrides):
    req = service_pb2.ModelInferRequest(model_name="digits", id="bad")
    tensor = req.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    req.raw_input_contents.append(np.zeros((1, 64), dtype=np.float32).tobytes())
    for key, value in overrides.items():
        value(req, tensor) if key == "mutate" else setattr(req, key, value)
    return req


BAD_INPUTS = {
    "unknown model": (lambda r, t: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    "unknown version": (lambda r, t: setattr(r, "model_version", "99"), grpc.StatusCode.NOT_FOUND, "99"),
    "wrong datatype": (lambda r, t: setattr(t, "datatype", "INT32"), grpc.StatusCode.INVALID_ARGUMENT, "input"),
    "wrong shape": (lambda r, t: (t.ClearField("shape"), t.shape.extend([1, 63])),
                    grpc.StatusCode.INVALID_ARGUMENT, "input"),
    "raw length mismatch": (lambda r, t: (r.ClearField("raw_input_contents"),
                                          r.raw_input_contents.append(b"\0" * 100)),
                            grpc.StatusCode.INVALID_ARGUMENT, "input"),
    "missing input": (lambda r, t: (r.ClearField("inputs"), r.ClearField("raw_input_contents")),
                      grpc.StatusCode.INVALID_ARGUMENT, "input"),
    "extra input": (lambda r, t: (r.inputs.add(name="extra", datatype="FP32", shape=[1, 1]),
                                  r.raw_input_contents.append(b"\0" * 4)),
                    grpc.StatusCode.INVALID_ARGUMENT, "extra"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_the_right_status_and_the_server_stays_up(cluster, case):
    mutate, code, named = BAD_INPUTS[case]
    with grpc.insecure_channel(cluster.gateway_addr) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(raw_request(mutate=mutate), timeout=10)
        print(f"{case}: {err.value.code().name}: {err.value.details()}")
        assert err.value.code() == code, err.value.details()
        assert named in err.value.details()
        ok = stub.ModelInfer(raw_request(), timeout=10)
        assert ok.id == "bad" and len(ok.raw_output_contents) == 2


def test_message_over_the_limit_is_resource_exhausted(cluster):
    opts = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(cluster.gateway_addr, options=opts) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = raw_request()
        req.raw_input_contents[0] = b"\0" * (cluster.max_message_bytes + 1024)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
        assert stub.ModelInfer(raw_request(), timeout=10).id == "bad"


def test_log_settings_switch_on_the_gateways_request_log(cluster, heldout):
    """tritonclient's logging calls: read the settings, turn on verbose logging at run time (the
    gateway then logs each request), refuse what Kiln cannot do with INVALID_ARGUMENT."""
    c = client(cluster.gateway_addr)
    assert c.get_log_settings().settings["log_verbose_level"].uint32_param == 0
    log = cluster.dir / "gateway.log"
    infer(cluster.gateway_addr, heldout["inputs"][:1])
    assert "inference request" not in log.read_text()
    try:
        after = c.update_log_settings({"log_verbose_level": 1})
        assert after.settings["log_verbose_level"].uint32_param == 1
        assert after.settings["log_info"].bool_param
        infer(cluster.gateway_addr, heldout["inputs"][:1])
        wait_for("the request in the gateway's log", lambda: "inference request" in log.read_text())
        with pytest.raises(InferenceServerException) as refused:
            c.update_log_settings({"log_file": "/tmp/kiln.log"})
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value
        assert "log_file" in refused.value.message()
    finally:
        c.update_log_settings({"log_verbose_level": 0})
    assert "logging" in c.get_server_metadata().extensions


def perf_analyzer_env():
    import nvidia.cuda_runtime
    lib = Path(nvidia.cuda_runtime.__path__[0]) / "lib"
    return dict(os.environ, LD_LIBRARY_PATH=f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}")


def test_perf_analyzer_runs_clean_at_concurrency_4(cluster):
    pa = Path(sys.executable).parent / "perf_analyzer"
    out = subprocess.run(
        [pa, "-m", "digits", "-u", cluster.gateway_addr, "-i", "grpc", "-b", "1",
         "--concurrency-range", "4", "--measurement-interval", "1500", "--max-trials", "10",
         "--stability-percentage", "50"],
        capture_output=True, text=True, timeout=180, env=perf_analyzer_env())
    print(out.stdout[-3000:], out.stderr[-2000:])
    assert out.returncode == 0, out.stderr
    assert "Throughput" in out.stdout
    assert "error" not in out.stdout.lower() and "failed" not in out.stderr.lower()


def test_tritonclient_system_shared_memory(cluster, heldout):
    # Inputs and outputs through POSIX shared memory, as tritonclient's shm utilities do it.
    import tritonclient.utils.shared_memory as shm
    x = heldout["inputs"][:4]
    c = client(cluster.gateway_addr)
    c.unregister_system_shared_memory()
    in_handle = shm.create_shared_memory_region("kiln_in", "/kiln_e2e_in", x.nbytes)
    out_handle = shm.create_shared_memory_region("kiln_out", "/kiln_e2e_out", 4 * 10 * 4)
    try:
        shm.set_shared_memory_region(in_handle, [x])
        c.register_system_shared_memory("kiln_in", "/kiln_e2e_in", x.nbytes)
        c.register_system_shared_memory("kiln_out", "/kiln_e2e_out", 4 * 10 * 4)
        status = c.get_system_shared_memory_status(as_json=True)
        assert {r["name"] for r in status["regions"].values()} == {"kiln_in", "kiln_out"}, status
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_shared_memory("kiln_in", x.nbytes)
        probs = grpcclient.InferRequestedOutput("probabilities")
        probs.set_shared_memory("kiln_out", 4 * 10 * 4)
        res = c.infer("digits", [inp], outputs=[probs, grpcclient.InferRequestedOutput("label")])
        got = shm.get_contents_as_numpy(out_handle, np.float32, [4, 10])
        print(f"shared memory: probabilities of 4 rows read from /kiln_e2e_out, "
              f"max |kiln - onnxruntime| {np.abs(got - heldout['ort_probabilities'][:4]).max():.2e}")
        assert np.abs(got - heldout["ort_probabilities"][:4]).max() <= 1e-5
        assert list(res.as_numpy("label")) == list(got.argmax(axis=1))
    finally:
        c.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


def test_perf_analyzer_with_system_shared_memory(cluster):
    pa = Path(sys.executable).parent / "perf_analyzer"
    out = subprocess.run(
        [pa, "-m", "digits", "-u", cluster.gateway_addr, "-i", "grpc", "-b", "1",
         "--shared-memory", "system", "--output-shared-memory-size", "1024",
         "--concurrency-range", "2", "--measurement-interval", "1000", "--max-trials", "10",
         "--stability-percentage", "50"],
        capture_output=True, text=True, timeout=180, env=perf_analyzer_env())
    print(out.stdout[-2000:], out.stderr[-2000:])
    assert out.returncode == 0, out.stderr
    assert "Throughput" in out.stdout
    assert client(cluster.gateway_addr).get_system_shared_memory_status(as_json=True).get(
        "regions", {}) == {}, "perf_analyzer unregisters what it registered"


def success_count(addr):
    stats = client(addr).get_inference_statistics("digits", as_json=True)
    return sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0))
               for m in stats.get("model_stats", []))


def test_kill_minus_9_one_of_two_workers(cluster, heldout):
    ready = [r for r in cluster.replicas() if r["state"] == "READY"]
    holders = sorted(r["worker_id"] for r in ready)
    assert len(holders) == 2
    victim, survivor = holders
    spare = next(w for w in cluster.workers if w not in holders)
    x = heldout["inputs"][:1]

    failures, sent, stop = [], [0], threading.Event()

    def load():
        while not stop.is_set():
            try:
                infer(cluster.gateway_addr, x)
            except Exception as e:
                failures.append(repr(e))
            sent[0] += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(0.3)
        killed_at = time.monotonic()
        cluster.kill(victim)
        wait_for("victim's replica to leave etcd",
                 lambda: all(r["worker_id"] != victim for r in cluster.replicas()),
                 timeout=LEASE_TTL_SECS + 1)
        gone_after = time.monotonic() - killed_at
        # From here on every request must land on a live worker.
        live = [survivor, spare]
        stop.set()
        loader.join()
        before = sum(success_count(cluster.workers[w]) for w in live)
        for _ in range(40):
            infer(cluster.gateway_addr, x)
        after = sum(success_count(cluster.workers[w]) for w in live)
        assert after - before == 40
        wait_for("replacement replica READY on the spare worker",
                 lambda: any(r["worker_id"] == spare and r["state"] == "READY"
                             for r in cluster.replicas()), timeout=30)
        reassigned_after = time.monotonic() - killed_at
    finally:
        stop.set()
        loader.join()
    print(f"kill -9 {victim}: replica gone from routing after {gone_after:.2f}s "
          f"(lease TTL {LEASE_TTL_SECS}s), replacement READY on {spare} after {reassigned_after:.2f}s; "
          f"{sent[0]} requests during the kill, {len(failures)} failed")
    assert gone_after <= LEASE_TTL_SECS + 1
