"""deploy/k8s wiring: images built by deploy/docker, flags and KILN_* variables the binaries
accept, references that resolve, volumes, probes, Services, NetworkPolicies, the etcd members
and the endpoints Kiln dials (see test_k8s_render.py for the whole list)."""

import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dockerfiles import command_flags
from k8s import (
    ROOT, K8S, NAMESPACE, RENDERED, PROD, USER_SECRETS, EXTERNAL_ETCD_SECRETS, docker_images,
    compose_images, split_image, binary_of, kiln_containers, VAR, env_value, expand, flag_value,
    port_of,
)


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
