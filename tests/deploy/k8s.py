"""What the deploy/k8s tests (test_k8s_*.py) share: the kustomizations and how they are
rendered, the rendered objects with look-ups (Render), and the images, flags, env variables and
metrics the manifests refer to. The fixtures `tools` and `rendered` are in conftest.py.
"""

import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from dockerfiles import DOCKER, Dockerfile, exec_form


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


VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


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


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def selects(selector, labels):
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get(
        "matchExpressions")


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


def covers(names, host):
    """Whether a certificate for `names` (DNS SANs, `*.` wildcards of one label) matches host."""
    return any(host == n or (n.startswith("*.") and "." in host
                             and host.split(".", 1)[1] == n[2:]) for n in names)
