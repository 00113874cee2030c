"""Every hop on mutual TLS, and who is refused.

A cluster of separate processes where client → gateway, gateway → worker, worker → monitor,
gateway → monitor, CLI → monitor and every service → etcd run mutual TLS with certificates from
`kiln certs dev`, and the gateway and the monitor accept bearer tokens from one token file
(`kiln token new`). Then: a client with a certificate and an inference token is served (Triton's
own `tritonclient`); without a certificate, with a certificate from another CA, without a token,
with a forged token or over plaintext it is refused; an inference token on an admin call
(kiln.v1.Admin through the CLI, RepositoryModelLoad through the gateway) gets PERMISSION_DENIED;
the plaintext health port answers probes; kiln-loadtest drives the secure gateway with the same
flags as the CLI; a reissued gateway certificate, and a token added or revoked in the token
file, are picked up without a restart.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from harness import ROOT, bin_dir, free_port, wait_for

RELOAD_SECS = 1


def kiln(*args, check=True):
    return subprocess.run([str(bin_dir() / "kiln"), *map(str, args)], capture_output=True,
                          text=True, check=check, cwd=ROOT, timeout=120)


def new_token(client, role):
    token, line = kiln("token", "new", "--client", client, "--role", role).stdout.split("\n")[:2]
    return token, line


class SecureCluster:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="kiln-mtls-"))
        self.certs = self.dir / "certs"
        kiln("certs", "dev", "--out", self.certs)
        kiln("certs", "dev", "--out", self.dir / "rogue", "--name", "client")
        self.app, app_line = new_token("app", "infer")
        self.ops, ops_line = new_token("ops", "admin")
        self.gateway_token, gateway_line = new_token("gateway", "admin")
        tokens = self.dir / "tokens"
        self.token_lines = [app_line, ops_line, gateway_line]
        tokens.write_text("# kiln tokens\n" + "".join(f"{line}\n" for line in self.token_lines))
        self.tokens = tokens
        self.procs = {}
        self.etcd = f"https://127.0.0.1:{free_port()}"
        self.monitor = f"127.0.0.1:{free_port()}"
        self.gateway_port = free_port()
        self.gateway = f"localhost:{self.gateway_port}"
        self.gateway_health = f"127.0.0.1:{free_port()}"
        self.worker = f"127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        c = self.certs
        self.spawn("etcd", [
            "etcd", "--name", "mtls", "--data-dir", self.dir / "etcd",
            "--listen-client-urls", self.etcd, "--advertise-client-urls", self.etcd,
            "--cert-file", c / "etcd.pem", "--key-file", c / "etcd.key",
            "--client-cert-auth", "--trusted-ca-file", c / "ca.pem",
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"mtls={peer}", "--log-level", "error",
        ])
        self.spawn("monitor", [
            bin_dir() / "kiln-monitor", *self.common("monitor"),
            "--grpc-addr", self.monitor, "--http-addr", f"127.0.0.1:{free_port()}",
            "--lease-ttl-secs", "2", "--repository", self.dir / "repository",
            "--tokens-file", tokens, "--tokens-reload-secs", RELOAD_SECS,
        ])
        self.spawn("w1", [
            bin_dir() / "kiln-worker", *self.common("worker"), "--id", "w1",
            "--grpc-addr", self.worker, "--http-addr", f"127.0.0.1:{free_port()}",
            "--lease-ttl-secs", "2", "--telemetry-interval-secs", "1",
        ])
        self.spawn("gateway", [
            bin_dir() / "kiln-gateway", *self.common("gateway"),
            "--grpc-addr", f"127.0.0.1:{self.gateway_port}", "--http-addr", f"127.0.0.1:{free_port()}",
            "--health-addr", self.gateway_health, "--tokens-file", tokens,
            "--tokens-reload-secs", RELOAD_SECS, "--admin-token", self.gateway_token,
        ])

    def common(self, name):
        c = self.certs
        return [
            "--etcd", self.etcd, "--etcd-ca", c / "ca.pem",
            "--etcd-cert", c / f"{name}.pem", "--etcd-key", c / f"{name}.key",
            "--tls-cert", c / f"{name}.pem", "--tls-key", c / f"{name}.key",
            "--tls-ca", c / "ca.pem", "--tls-reload-secs", RELOAD_SECS,
        ]

    def spawn(self, name, argv):
        log = open(self.dir / f"{name}.log", "a")
        env = dict(os.environ, RUST_LOG="info")
        self.procs[name] = subprocess.Popen([str(a) for a in argv], stdout=log,
                                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def cli(self, *args, token=None, cert="client", check=True):
        c = self.certs
        tls = ["--tls-ca", c / "ca.pem"]
        if cert:
            tls += ["--tls-cert", c / f"{cert}.pem", "--tls-key", c / f"{cert}.key"]
        auth = ["--token", token] if token else []
        return kiln("--admin", f"https://{self.monitor}", *tls, *auth, *args, check=check)

    def client(self, cert="client", certs_dir=None):
        d = certs_dir or self.certs
        kwargs = dict(ssl=True, root_certificates=str(self.certs / "ca.pem"))
        if cert:
            kwargs.update(private_key=str(d / f"{cert}.key"),
                          certificate_chain=str(d / f"{cert}.pem"))
        return grpcclient.InferenceServerClient(url=self.gateway, **kwargs)

    def log(self, name):
        return (self.dir / f"{name}.log").read_text()

    def logs(self):
        return "\n".join(f"==== {f.name}\n{f.read_text()[-3000:]}" for f in sorted(self.dir.glob("*.log")))

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def secure():
    c = SecureCluster()
    try:
        wait_for("the worker registered", lambda: "w1" in c.cli("workers", token=c.ops, check=False).stdout,
                 timeout=60)
        c.cli("deploy", "digits", "--version", "1", "--replicas", "1",
              "--package", ROOT / "models/digits/1", "--no-wait", token=c.ops)
        auth = {"authorization": f"Bearer {c.app}"}
        wait_for("digits ready at the gateway",
                 lambda: c.client().is_model_ready("digits", headers=auth), timeout=60)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.close()


def infer(client, rows, token):
    x = grpcclient.InferInput("input", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    headers = {"authorization": f"Bearer {token}"} if token else None
    return client.infer("digits", [x], headers=headers).as_numpy("probabilities")


def refusal(call):
    with pytest.raises(InferenceServerException) as e:
        call()
    return e.value.status(), e.value.message()


def test_a_client_with_certificate_and_token_is_served(secure, heldout):
    probs = infer(secure.client(), heldout["inputs"][:8], secure.app)
    assert probs.shape == (8, 10)
    np.testing.assert_allclose(probs, heldout["ort_probabilities"][:8], atol=1e-4)


def test_clients_without_a_valid_certificate_or_token_are_refused(secure, heldout):
    rows = heldout["inputs"][:1]
    status, message = refusal(lambda: infer(secure.client(cert=None), rows, secure.app))
    assert status == "StatusCode.UNAUTHENTICATED" and "client certificate" in message, message
    status, message = refusal(lambda: infer(secure.client(), rows, None))
    assert status == "StatusCode.UNAUTHENTICATED" and "missing bearer token" in message, message
    status, message = refusal(lambda: infer(secure.client(), rows, "kiln_" + "0" * 64))
    assert status == "StatusCode.UNAUTHENTICATED" and "invalid bearer token" in message, message
    # A certificate from another CA: refused in the TLS handshake (no call reaches a service).
    status, _ = refusal(lambda: infer(secure.client(certs_dir=secure.dir / "rogue"), rows, secure.app))
    assert status in ("StatusCode.UNAVAILABLE", "StatusCode.UNKNOWN"), status
    # Plaintext to a TLS port.
    plain = grpcclient.InferenceServerClient(url=secure.gateway)
    status, _ = refusal(lambda: infer(plain, rows, secure.app))
    assert status == "StatusCode.UNAVAILABLE", status
    # The worker serves the gateway only: a caller without a client certificate is refused.
    creds = grpc.ssl_channel_credentials((secure.certs / "ca.pem").read_bytes())
    with grpc.secure_channel(secure.worker, creds) as ch:
        ready = ch.unary_unary("/inference.GRPCInferenceService/ServerReady",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            ready(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value


def test_admin_calls_with_a_client_token_are_denied(secure):
    denied = secure.cli("workers", token=secure.app, check=False)
    assert denied.returncode != 0
    assert "permission denied" in denied.stderr and "role infer" in denied.stderr, denied.stderr
    status, message = refusal(lambda: secure.client().load_model(
        "digits", headers={"authorization": f"Bearer {secure.app}"}))
    assert status == "StatusCode.PERMISSION_DENIED", (status, message)
    # Without the client certificate the admin token alone is not enough either.
    unauth = secure.cli("workers", token=secure.ops, cert=None, check=False)
    assert unauth.returncode != 0, unauth.stderr
    assert "unauthenticated" in unauth.stderr and "client certificate" in unauth.stderr, unauth.stderr
    # The admin token works, through the CLI and through the gateway's repository extension.
    assert "w1" in secure.cli("workers", token=secure.ops).stdout
    secure.client().load_model("digits", headers={"authorization": f"Bearer {secure.ops}"})


def test_the_plaintext_health_port_answers_probes(secure):
    with grpc.insecure_channel(secure.gateway_health) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert check(b"", timeout=10) == b"\x08\x01"  # status: SERVING


def loadtest(secure, out, *credentials):
    c = secure.certs
    argv = [bin_dir() / "kiln-loadtest", "--url", secure.gateway, "--model", "digits",
            "--concurrency", "4", "--connections", "2", "--warmup", "0s", "--requests", "200",
            "--tls-ca", c / "ca.pem", "--tls-cert", c / "client.pem", "--tls-key", c / "client.key",
            "--json", out, *credentials]
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_the_load_generator_reaches_a_secure_gateway(secure):
    out = secure.dir / "lt.json"
    run = loadtest(secure, out, "--token", secure.app)
    assert run.returncode == 0, run.stderr
    statuses = json.loads(out.read_text())["statuses"]
    assert set(statuses) == {"OK"} and statuses["OK"]["count"] == 200, statuses
    # Without the token it stops at the model's metadata, saying why.
    refused = loadtest(secure, secure.dir / "lt-none.json")
    assert refused.returncode != 0 and "missing bearer token" in refused.stderr, refused.stderr


def test_a_reissued_certificate_is_served_without_a_restart(secure, heldout):
    before = secure.log("gateway").count("TLS certificates reloaded")
    time.sleep(0.01)
    kiln("certs", "dev", "--out", secure.certs, "--name", "gateway", "--san", "rotated.example")
    wait_for("the gateway reloaded its certificate",
             lambda: secure.log("gateway").count("TLS certificates reloaded") > before, timeout=30)
    assert secure.procs["gateway"].poll() is None
    probs = infer(secure.client(), heldout["inputs"][:2], secure.app)
    assert probs.shape == (2, 10)


def test_a_token_added_or_revoked_applies_without_a_restart(secure, heldout):
    rows = heldout["inputs"][:1]
    late, late_line = new_token("late", "admin")
    status, message = refusal(lambda: infer(secure.client(), rows, late))
    assert status == "StatusCode.UNAUTHENTICATED" and "invalid bearer token" in message, message
    app_line, ops_line, gateway_line = secure.token_lines
    try:
        # Add `late`, revoke `app` and `ops`: the gateway and the monitor both follow the file.
        secure.tokens.write_text(f"{gateway_line}\n{late_line}\n")
        wait_for("the gateway accepts the added token",
                 lambda: infer(secure.client(), rows, late) is not None, timeout=30)
        status, message = refusal(lambda: infer(secure.client(), rows, secure.app))
        assert status == "StatusCode.UNAUTHENTICATED" and "invalid bearer token" in message, message
        wait_for("the monitor accepts the added token",
                 lambda: "w1" in secure.cli("workers", token=late, check=False).stdout, timeout=30)
        revoked = secure.cli("workers", token=secure.ops, check=False)
        assert revoked.returncode != 0 and "invalid bearer token" in revoked.stderr, revoked.stderr
        # A token file that does not parse keeps the tokens in force.
        secure.tokens.write_text("late admin md5:00\n")
        wait_for("the gateway refused the broken file",
                 lambda: "token file reload failed" in secure.log("gateway"), timeout=30)
        assert infer(secure.client(), rows, late) is not None
    finally:
        secure.tokens.write_text("".join(f"{line}\n" for line in secure.token_lines))
    wait_for("the gateway accepts the restored token",
             lambda: infer(secure.client(), rows, secure.app) is not None, timeout=30)
    wait_for("the monitor accepts the restored token",
             lambda: "w1" in secure.cli("workers", token=secure.ops, check=False).stdout, timeout=30)
    assert secure.procs["gateway"].poll() is None and secure.procs["monitor"].poll() is None
