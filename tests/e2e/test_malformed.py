"""Malformed and abusive requests through the gateway: each class gets its exact gRPC status and a
message that names the problem, hundreds of times over, and the cluster neither dies nor grows.

A module cluster (2 workers, `digits` v1 on both) takes every class of bad request N times
(KILN_MALFORMED_N, default 300; concurrently where the class allows), with a good request after
each class. A second, small cluster whose gateway runs `--client-rate-limit 50 --client-burst 10`
checks the per-client rate limit. At the end every Kiln process is still running and the
resident memory (VmRSS) of the gateway and the workers after the full rounds is within
RSS_GROWTH_LIMIT of what it was after one warm-up round of every class. A markdown table of
what was sent and answered is written to $CARGO_TARGET_DIR/test-artifacts/malformed.md.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from harness import ROOT, Cluster, wait_for

N = int(os.environ.get("KILN_MALFORMED_N", "300"))
WARMUP_N = 20
THREADS = 8
# After a warm-up round (allocator arenas, connection pools, the tokio and tonic buffers all
# sized), serving thousands more refused requests must not keep memory. 20 MiB is far below
# what a leak of even a few hundred bytes per request would add over ~5000 requests of which
# many carry kilobytes to megabytes (a leak of the 4 MiB bodies or the 64 KiB names would show
# as hundreds of MiB), and far above the jitter of a debug build's allocator.
RSS_GROWTH_LIMIT = 20 * 1024 * 1024
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # what the harness gives the gateway
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

# class name -> row of the report (filled as the tests run).
RESULTS = {}


def artifacts_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "test-artifacts"


def good_request(**fields):
    req = service_pb2.ModelInferRequest(model_name="digits", id="ok", **fields)
    req.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    req.raw_input_contents.append(np.zeros((1, 64), dtype=np.float32).tobytes())
    return req


def mutated(mutate):
    req = good_request()
    mutate(req, req.inputs[0])
    return req


def set_shape(tensor, shape):
    tensor.ClearField("shape")
    tensor.shape.extend(shape)


def replace_raw(req, *contents):
    req.ClearField("raw_input_contents")
    req.raw_input_contents.extend(contents)


class Case:
    """One class of bad request: `request` is the ModelInferRequest (or, for `garbage`, bytes)
    sent as is; `code` and every string of `named` are what the answer must carry."""

    def __init__(self, name, what, request, code, named, n=None, threads=THREADS, timeout=10.0,
                 raw_bytes=False, max_seconds=None, tolerate_ok=False, also=frozenset()):
        self.name, self.what, self.request = name, what, request
        self.tolerate_ok, self.also = tolerate_ok, also
        self.code, self.named = code, named
        self.n, self.threads, self.timeout = n, threads, timeout
        self.raw_bytes, self.max_seconds = raw_bytes, max_seconds


LONG_NAME = "m" * (64 * 1024)

CASES = [
    Case("unknown model", 'model_name="no-such-model"',
         mutated(lambda r, t: setattr(r, "model_name", "no-such-model")),
         grpc.StatusCode.NOT_FOUND, ["no-such-model"]),
    Case("unknown version", 'model_version="99"',
         mutated(lambda r, t: setattr(r, "model_version", "99")),
         grpc.StatusCode.NOT_FOUND, ['"99"', "digits"]),
    Case("wrong input name", 'input named "pixels" instead of "input"',
         mutated(lambda r, t: setattr(t, "name", "pixels")),
         grpc.StatusCode.INVALID_ARGUMENT, ['"pixels"', "unknown input", "[input]"]),
    Case("wrong datatype", "datatype INT32 instead of FP32",
         mutated(lambda r, t: setattr(t, "datatype", "INT32")),
         grpc.StatusCode.INVALID_ARGUMENT, ['"input"', "FP32", "INT32"]),
    Case("raw length mismatch", "shape [1, 64] FP32 (256 bytes) with 100 raw bytes",
         mutated(lambda r, t: replace_raw(r, b"\0" * 100)),
         grpc.StatusCode.INVALID_ARGUMENT, ['"input"', "raw_input_contents"]),
    Case("negative dimension", "shape [-1, 64]",
         mutated(lambda r, t: set_shape(t, [-1, 64])),
         grpc.StatusCode.INVALID_ARGUMENT, ['"input"', "negative dimension -1"]),
    Case("too many elements", "shape [1, 2^40] with 256 bytes of data",
         mutated(lambda r, t: set_shape(t, [1, 1 << 40])),
         grpc.StatusCode.INVALID_ARGUMENT, ['"input"', "--max-tensor-elements"]),
    Case("batch over --max-batch", "shape [8193, 1] with 256 bytes of data",
         mutated(lambda r, t: set_shape(t, [8193, 1])),
         grpc.StatusCode.INVALID_ARGUMENT, ['"input"', "8193", "--max-batch"]),
    Case("message over --max-message-bytes", f"{MAX_MESSAGE_BYTES + 1024} raw bytes (limit 4 MiB)",
         mutated(lambda r, t: replace_raw(r, b"\0" * (MAX_MESSAGE_BYTES + 1024))),
         grpc.StatusCode.RESOURCE_EXHAUSTED, ["message length too large"], threads=4),
    Case("garbage bytes", "4 KiB of 0xff bytes as the ModelInfer message (not a protobuf)",
         b"\xff" * 4096, grpc.StatusCode.INVALID_ARGUMENT, ["decode"], raw_bytes=True),
    Case("no inputs", "no inputs and no raw_input_contents",
         mutated(lambda r, t: (r.ClearField("inputs"), r.ClearField("raw_input_contents"))),
         grpc.StatusCode.INVALID_ARGUMENT, ['"input"', "missing"]),
    Case("more raw contents than inputs", "1 input, 2 raw_input_contents",
         mutated(lambda r, t: r.raw_input_contents.append(b"\0" * 256)),
         grpc.StatusCode.INVALID_ARGUMENT, ["2 raw_input_contents for 1 inputs"]),
    Case("typed and raw contents", "fp32_contents and raw_input_contents for one input",
         mutated(lambda r, t: t.contents.fp32_contents.extend([0.0] * 64)),
         grpc.StatusCode.INVALID_ARGUMENT, ['"input"', "typed contents", "raw_input_contents"]),
    # grpcio cannot send a deadline that has already passed: grpc-core puts a grpc-timeout of
    # about 1-2 ms on the wire however small the timeout (a plain grpcio echo server sees up to
    # 1.9 ms left on calls made with timeout=1e-6, and answers >90 % of them OK), and its own
    # timer has the same resolution. So a request that is quick enough is served in time and
    # comes back OK; those are tolerated (`tolerate_ok`) and counted, everything else must be
    # DEADLINE_EXCEEDED (from the client's timer, or the gateway's "deadline exceeded after N
    # attempt(s)"), or tonic's own server-side timer on the `grpc-timeout` header, which runs
    # outside every Kiln layer and answers CANCELLED "Timeout expired" when it fires first (seen
    # 2 of 300 in one CI run; tolerated as `also`, and counted in the table).
    Case("expired deadline", "a good request with timeout=0.0001 s",
         good_request(), grpc.StatusCode.DEADLINE_EXCEEDED, ["deadline exceeded"], timeout=0.0001,
         tolerate_ok=True, also={(grpc.StatusCode.CANCELLED, "Timeout expired")}),
    Case("64 KiB model name", "model_name of 65536 bytes",
         mutated(lambda r, t: setattr(r, "model_name", LONG_NAME)),
         grpc.StatusCode.NOT_FOUND, ["unknown model"], max_seconds=1.0),
]


def send_unary(channel, case):
    """Sends `case` once; (status code, details, seconds)."""
    if case.raw_bytes:
        call = channel.unary_unary(MODEL_INFER, request_serializer=None,
                                   response_deserializer=None)
    else:
        call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    started = time.monotonic()
    try:
        call(case.request, timeout=case.timeout)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    return code, details, time.monotonic() - started


def send_stream_pair(channel, bad, good):
    """One ModelStreamInfer stream: a bad message, then a good one. Returns both answers."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    return list(stub.ModelStreamInfer(iter([bad, good]), timeout=10))


def good_infer_ok(cluster):
    """A good request through tritonclient succeeds (and gives 10 probabilities)."""
    client = grpcclient.InferenceServerClient(url=cluster.gateway_addr)
    inp = grpcclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    res = client.infer("digits", [inp], outputs=[grpcclient.InferRequestedOutput("probabilities")],
                       client_timeout=10)
    assert res.as_numpy("probabilities").shape == (1, 10)


def deploy_digits(c, replicas):
    c.kiln("deploy", "digits", "--version", "1", "--replicas", str(replicas),
           "--package", str(ROOT / "models/digits/1"), "--no-wait")
    wait_for(f"{replicas} ready digits replicas",
             lambda: sum(1 for r in c.replicas() if r["state"] == "READY") == replicas, timeout=60)
    gateway = grpcclient.InferenceServerClient(url=c.gateway_addr)
    wait_for("digits ready at the gateway", lambda: gateway.is_model_ready("digits"), timeout=30)


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def kiln_processes(cluster):
    return {name: p for name, p in cluster.procs.items() if name != "etcd"}


@pytest.fixture(scope="module")
def malformed_cluster(request):
    c = Cluster(workers=2)
    try:
        deploy_digits(c, 2)
        c.channel = grpc.insecure_channel(c.gateway_addr, options=CHANNEL_OPTIONS)
        c.rss = {}
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        if request.session.testsfailed:
            print(c.logs())
        if hasattr(c, "channel"):
            c.channel.close()
        c.close()


@pytest.fixture(scope="module")
def limited_cluster(request):
    """One worker; the gateway limits each client to 50 requests/s with a burst of 10."""
    c = Cluster(workers=1, gateway_args=["--client-rate-limit", "50", "--client-burst", "10"])
    try:
        deploy_digits(c, 1)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        if request.session.testsfailed:
            print(c.logs())
        c.close()


def run_case(cluster, case, n):
    """Sends `case` n times; returns {(code, details): count} and the slowest answer's time."""
    with ThreadPoolExecutor(case.threads) as pool:
        answers = list(pool.map(lambda _: send_unary(cluster.channel, case), range(n)))
    seen = {}
    for code, details, _ in answers:
        seen[(code, details)] = seen.get((code, details), 0) + 1
    return seen, max(a[2] for a in answers)


def run_stream_case(cluster, n):
    bad = mutated(lambda r, t: setattr(t, "datatype", "INT32"))
    good = good_request()
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda _: send_stream_pair(cluster.channel, bad, good), range(n)))


def test_warm_up_round_then_measure_rss(malformed_cluster):
    """One smaller round of every class (concurrent, like the full rounds), then the baseline."""
    c = malformed_cluster
    for case in CASES:
        run_case(c, case, WARMUP_N)
    run_stream_case(c, WARMUP_N)
    good_infer_ok(c)
    time.sleep(1)
    c.rss["before"] = {name: rss_bytes(p.pid) for name, p in kiln_processes(c).items()}


def excerpt(details, limit=200):
    one_line = " ".join(details.split())
    return one_line if len(one_line) <= limit else one_line[:limit - 3] + "..."


def record(case_name, what, code, details, count):
    RESULTS[case_name] = (what, code, excerpt(details), count)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_request_gets_its_status(malformed_cluster, case):
    c = malformed_cluster
    n = case.n or N
    seen, slowest = run_case(c, case, n)
    summary = {f"{code.name}: {excerpt(details, 200)}": k for (code, details), k in seen.items()}
    print(f"{case.name} x{n} ({case.what}): {summary}; slowest {slowest * 1000:.0f} ms")
    codes = sorted({code.name for code, _ in seen})
    by_count = sorted(seen.items(), key=lambda kv: -kv[1])
    message = " / ".join(f"{excerpt(details or code.name, 90)} ({count})" if len(seen) > 1
                         else details for (code, details), count in by_count)
    record(case.name, case.what, " / ".join(codes), message, n)
    if case.tolerate_ok:
        assert any(code == case.code for code, _ in seen), summary
        seen = {k: v for k, v in seen.items() if k[0] != grpc.StatusCode.OK}
    seen = {k: v for k, v in seen.items() if k not in case.also}
    for (code, details), count in seen.items():
        assert code == case.code, f"{count} of {n}: {code.name}: {details[:500]}"
        for named in case.named:
            assert named.lower() in details.lower(), \
                f"{count} of {n}: {code.name}: {details[:500]} (no {named!r})"
    if case.max_seconds is not None:
        assert slowest < case.max_seconds, f"slowest answer took {slowest:.2f}s"
    good_infer_ok(c)


def test_bad_stream_message_gets_an_error_message_and_the_stream_goes_on(malformed_cluster):
    c = malformed_cluster
    streams = run_stream_case(c, N)
    errors = set()
    for answers in streams:
        assert len(answers) == 2, answers
        bad, good = answers
        # Answered with its error and its own id (Triton's convention), then the stream goes on.
        assert bad.error_message and bad.infer_response.id == "ok", bad
        errors.add(bad.error_message)
        assert not good.error_message, good.error_message
        assert good.infer_response.id == "ok" and len(good.infer_response.raw_output_contents) == 2
    assert len(errors) == 1, errors
    message = errors.pop()
    print(f"ModelStreamInfer x{N}: bad message answered {message!r}, good message after it OK")
    assert '"input"' in message and "INT32" in message
    record("stream: bad message then good", "ModelStreamInfer: INT32 input, then a good request",
           "error_message (stream OK)", message, N)
    good_infer_ok(c)


def test_client_rate_limit(limited_cluster):
    """200 quick requests from one client at 50/s with a burst of 10: some are refused with
    RESOURCE_EXHAUSTED naming --client-rate-limit, some served; a second later it is served."""
    c = limited_cluster
    case = Case("rate limit", "", good_request(), None, [])
    with grpc.insecure_channel(c.gateway_addr, options=CHANNEL_OPTIONS) as channel:
        time.sleep(1.0)  # the readiness polls above spent some of the bucket
        started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(lambda _: send_unary(channel, case), range(200)))
        elapsed = time.monotonic() - started
        ok = [a for a in answers if a[0] == grpc.StatusCode.OK]
        limited = [a for a in answers if a[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
        other = [a for a in answers if a not in ok and a not in limited]
        print(f"200 requests in {elapsed:.2f}s: {len(ok)} OK, {len(limited)} RESOURCE_EXHAUSTED, "
              f"other {[(a[0].name, a[1]) for a in other]}")
        assert not other
        assert ok and limited
        # At most the burst plus what the bucket refills while the burst is sent.
        assert len(ok) <= 10 + 50 * elapsed + 1, (len(ok), elapsed)
        for _, details, _ in limited:
            assert "--client-rate-limit" in details and "127.0.0.1" in details, details
        time.sleep(1.0)
        again = [send_unary(channel, case) for _ in range(5)]
        assert all(code == grpc.StatusCode.OK for code, _, _ in again), again
    record("per-client rate limit", "200 good requests at once, gateway at "
           "--client-rate-limit 50 --client-burst 10",
           f"RESOURCE_EXHAUSTED ({len(limited)}) / OK ({len(ok)})", limited[0][1], 200)


def test_every_process_is_up_and_memory_stayed_flat(malformed_cluster, limited_cluster):
    c = malformed_cluster
    for cluster in (c, limited_cluster):
        for name, proc in cluster.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
    good_infer_ok(c)
    time.sleep(1)
    after = {name: rss_bytes(p.pid) for name, p in kiln_processes(c).items()}
    before = c.rss.get("before")
    assert before, "the warm-up test did not run"
    mib = 1024 * 1024
    lines = [
        "| class | request | status code | message excerpt | count sent |",
        "|---|---|---|---|---|",
    ]
    for name, (what, code, details, count) in RESULTS.items():
        details = details.replace("|", "\\|")
        lines.append(f"| {name} | {what} | {code} | {details} | {count} |")
    lines += [
        "",
        f"After each class a good request (tritonclient) was served. Warm-up: {WARMUP_N} of each "
        f"class; RSS growth limit {RSS_GROWTH_LIMIT // mib} MiB.",
        "",
        "| process | VmRSS after warm-up (MiB) | VmRSS after all rounds (MiB) | growth (MiB) |",
        "|---|---|---|---|",
    ]
    for name in sorted(before):
        if name.startswith("monitor"):
            continue
        lines.append(f"| {name} | {before[name] / mib:.1f} | {after[name] / mib:.1f} | "
                     f"{(after[name] - before[name]) / mib:+.1f} |")
    table = "\n".join(lines) + "\n"
    out = artifacts_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "malformed.md").write_text(table)
    print(f"\n{table}\nwritten to {out / 'malformed.md'}")
    for name in before:
        if name.startswith("monitor"):
            continue
        growth = after[name] - before[name]
        assert growth < RSS_GROWTH_LIMIT, f"{name} grew {growth / mib:.1f} MiB"
