"""deploy/k8s TLS: dev is plaintext; prod passes the TLS flags to every service, with
certificates that cover the names each is dialled by; etcd requires client certificates or
authenticates; the README covers every overlay."""

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from k8s import (
    K8S, NAMESPACE, RENDERED, PROD, KILN_BINARIES, USER_SECRETS, EXTERNAL_ETCD_SECRETS, binary_of,
    kiln_containers, expand, flag_value, covers,
)


@pytest.mark.parametrize("target", ["base", "overlays/dev"])
def test_dev_is_plaintext(rendered, target):
    r = rendered(target)
    assert r.config_value(next(c["metadata"]["name"] for c in r.of("ConfigMap")
                               if c["metadata"]["name"].startswith("kiln-config")),
                          "url-scheme") == "http"
    for w, _, c in kiln_containers(r):
        assert not [a for a in c["args"] if a.startswith(("--tls-", "--etcd-"))], w["metadata"]
    assert not r.of("Certificate")


@pytest.mark.parametrize("target", PROD)
def test_prod_passes_tls_flags_to_every_service(rendered, target):
    r = rendered(target)
    issued = r.issued_secrets()
    containers = kiln_containers(r)
    assert {binary_of(c) for _, _, c in containers} == KILN_BINARIES
    for w, spec, c in containers:
        name = w["metadata"]["name"]
        where = f"{target}: {name}"
        for flag in ("tls-cert", "tls-key", "tls-ca", "tls-client-auth", "etcd-ca", "etcd-cert",
                     "etcd-key"):
            assert flag_value(c, flag), f"{where}: no --{flag}"
        assert flag_value(c, "tls-client-auth") in ("none", "optional", "required"), where
        if binary_of(c) in ("kiln-worker", "kiln-monitor"):
            # Only Kiln's own services call them.
            assert flag_value(c, "tls-client-auth") == "required", where
        # Certificate, key and CA come from one Secret, as cert-manager writes it.
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}

        def secret_of(path):
            mount = next(m for m in mounts if Path(path).is_relative_to(m))
            return volumes[mounts[mount]]["secret"]["secretName"], Path(path).name

        tls = {secret_of(flag_value(c, f)) for f in ("tls-cert", "tls-key", "tls-ca")}
        assert {f for _, f in tls} == {"tls.crt", "tls.key", "ca.crt"}, where
        (secret,) = {s for s, _ in tls}
        cert = issued[secret]["spec"]
        assert {"server auth", "client auth"} <= set(cert["usages"]), f"{where}: mutual TLS"
        etcd = {secret_of(flag_value(c, f)) for f in ("etcd-ca", "etcd-cert", "etcd-key")}
        assert {f for _, f in etcd} == {"tls.crt", "tls.key", "ca.crt"}, where
        (etcd_secret,) = {s for s, _ in etcd}
        assert etcd_secret in issued or "external-etcd" in target, where
        # The names the service is dialled by are in its certificate.
        if binary_of(c) == "kiln-monitor":
            url = expand(r, c, flag_value(c, "instance-name"), POD_NAME=f"{name}-0",
                         POD_NAMESPACE=NAMESPACE)
            assert urlsplit(url).scheme == "https", where
            assert covers(cert["dnsNames"], urlsplit(url).hostname), (url, cert["dnsNames"])
            assert flag_value(c, "tokens-file"), where
        if binary_of(c) == "kiln-worker":
            addr = expand(r, c, "$(KILN_ADVERTISE_ADDR)", POD_NAME=f"{name}-abc12",
                          POD_NAMESPACE=NAMESPACE)
            host = addr.rsplit(":", 1)[0]
            assert covers(cert["dnsNames"], host), (addr, cert["dnsNames"])
            # The name resolves: the pod's hostname in the headless Service of its subdomain.
            sub = spec.get("subdomain")
            assert sub and host.startswith(f"{name}-abc12.{sub}."), where
            assert r.get("Service", sub)["spec"]["clusterIP"] == "None"
        if binary_of(c) == "kiln-gateway":
            assert flag_value(c, "tokens-file"), where
            for host in (name, f"{name}.{NAMESPACE}.svc"):
                assert covers(cert["dnsNames"], host), (host, cert["dnsNames"])
    config = next(c for c in r.of("ConfigMap") if c["metadata"]["name"].startswith("kiln-config"))
    assert config["data"]["url-scheme"] == "https"
    assert all(urlsplit(e).scheme == "https" for e in config["data"]["etcd-endpoints"].split(","))
    for cert in r.of("Certificate"):
        issuer = cert["spec"]["issuerRef"]
        assert r.get(issuer.get("kind", "Issuer"), issuer["name"]), cert["metadata"]["name"]


def test_prod_etcd_requires_client_certificates(rendered):
    r = rendered("overlays/prod")
    c = r.get("StatefulSet", "etcd")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ETCD_CLIENT_CERT_AUTH"] == "true" and env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    cert = r.issued_secrets()["kiln-etcd-tls"]["spec"]
    for member in range(3):
        host = f"etcd-{member}.etcd.{NAMESPACE}.svc"
        assert covers(cert["dnsNames"], host), host
        for var in ("ETCD_ADVERTISE_CLIENT_URLS", "ETCD_INITIAL_ADVERTISE_PEER_URLS"):
            url = expand(r, c, f"$({var})", POD_NAME=f"etcd-{member}", POD_NAMESPACE=NAMESPACE)
            assert url.startswith("https://") and urlsplit(url).hostname == host
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    for var in ("ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_TRUSTED_CA_FILE", "ETCD_PEER_CERT_FILE",
                "ETCD_PEER_KEY_FILE", "ETCD_PEER_TRUSTED_CA_FILE"):
        assert any(Path(env[var]).is_relative_to(m) for m in mounts), var
    assert "client auth" in r.issued_secrets()["kiln-etcd-client-tls"]["spec"]["usages"]


def test_external_etcd_authenticates(rendered):
    r = rendered("overlays/prod-external-etcd")
    for w, _, c in kiln_containers(r):
        assert flag_value(c, "etcd-user"), w["metadata"]["name"]
        password = next(e for e in c["env"] if e["name"] == "KILN_ETCD_PASSWORD")
        assert password["valueFrom"]["secretKeyRef"]["name"] == "kiln-etcd-auth"
        assert not [a for a in c["args"] if a.startswith("--etcd-password")], (
            "the password comes from a Secret, not the command line")


def test_readme_covers_every_overlay():
    readme = (K8S / "README.md").read_text()
    for target in RENDERED[1:] + ["components/external-etcd"]:
        assert f"deploy/k8s/{target}" in readme, target
    for needed in ("tools.sh", "prometheus-adapter", "nvidia.com/gpu", "cert-manager",
                   *sorted(USER_SECRETS), *sorted(EXTERNAL_ETCD_SECRETS)):
        assert needed in readme, needed
