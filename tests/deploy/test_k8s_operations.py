"""deploy/k8s operations: disruption budgets, autoscalers on exported metrics, unprivileged
pods with resources, ServiceMonitors and the Grafana dashboard."""

import json
import re
from urllib.parse import urlsplit

import pytest
import yaml

from dockerfiles import DOCKER
from k8s import (
    NAMESPACE, RENDERED, binary_of, env_value, flag_value, port_of, selects, is_exported,
    adapter_rules,
)


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
