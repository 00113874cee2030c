"""Keeps deploy/docker/compose.yaml and prometheus.yml in step with the binaries, without a
Docker engine:

- compose.yaml: every `--flag` (and KILN_* variable) a service passes is accepted by its binary's
  `--help`, bind addresses are 0.0.0.0, published ports are bound, every address that names a
  service is one that service binds, volumes and model paths line up.
- prometheus.yml: every target is a compose service's metrics port, every service is scraped.
"""

import re
import tomllib
from pathlib import Path

import yaml

from dockerfiles import DOCKER, addresses, bind_options, kiln_services


def test_compose_has_the_cluster(services):
    binaries = sorted(s.binary or s.spec["image"].split(":")[0] for s in services.values())
    assert binaries == ["kiln", "kiln-gateway", "kiln-monitor", "kiln-worker", "kiln-worker",
                        "prom/prometheus", "quay.io/coreos/etcd"]
    assert re.fullmatch(r"quay\.io/coreos/etcd:v3\.5\.\d+", services["etcd"].spec["image"])


def test_every_flag_and_variable_is_accepted_by_the_binary(services):
    """Resolving the services parses each command against its binary's --help (Service);
    KILN_* variables in `environment` must be ones the binary reads."""
    for name, s in kiln_services(services).items():
        envs = s.help.env_names()
        for key in s.environment:
            if key.startswith("KILN_"):
                assert key in envs, f"{name}: {s.binary} reads no {key}"


def test_bind_addresses_are_explicit_and_all_interfaces(services):
    for name, s in kiln_services(services).items():
        if s.binary == "kiln":
            continue
        for flag in bind_options(s.help):
            assert flag in s.flags, f"{name}: set --{flag} explicitly"
            assert s.flags[flag][-1].startswith("0.0.0.0:"), f"{name}: --{flag} must bind 0.0.0.0"
    etcd = services["etcd"]
    for word in etcd.command:
        if word.startswith("--listen-"):
            assert "//0.0.0.0:" in word, word


def test_published_ports_are_bound(services):
    host_ports = []
    for name, s in services.items():
        binds = s.binds()
        for mapping in s.spec.get("ports", []):
            parts = str(mapping).split(":")
            container = int(parts[-1].split("/")[0])
            assert container in binds, f"{name} publishes {container} but binds {sorted(binds)}"
            host_ports.append(int(parts[-2]) if len(parts) > 1 else container)
    assert len(host_ports) == len(set(host_ports)), f"host ports published twice: {host_ports}"


def test_healthchecks_keep_up_with_overridden_ports(services):
    """The images' HEALTHCHECK probes the port in the binary's env variable: a command that
    moves --http-addr elsewhere would leave it probing nothing."""
    for name, s in kiln_services(services).items():
        if s.binary == "kiln" or "http-addr" not in s.flags:
            continue
        option = s.help.options["http-addr"]
        image_port = s.df.env(s.stage)[option.env].rsplit(":", 1)[1]
        assert s.environment.get(option.env, "").endswith(":" + image_port) or \
            s.flags["http-addr"][-1].endswith(":" + image_port), name


def test_every_address_naming_a_service_is_bound_by_it(services):
    monitors = [n for n, s in services.items() if s.binary == "kiln-monitor"]
    checked = 0
    for name, s in kiln_services(services).items():
        values = [(f, v) for f in ("etcd", "admin", "monitor", "instance-name", "advertise-addr")
                  if f in s.flags for v in s.flags[f]]
        values += [(k, v) for k, v in s.environment.items() if k in ("KILN_ADMIN", "KILN_ETCD")]
        for flag, value in values:
            for host, port in addresses(value):
                assert host in services, f"{name}: {flag} {value}: no service {host}"
                assert port in services[host].binds(), f"{name}: {host} does not bind {port}"
                if flag in ("admin", "monitor", "instance-name", "KILN_ADMIN"):
                    assert host in monitors
                    assert services[host].binds()[port] == "grpc-addr"
                checked += 1
    assert checked >= 10


def test_monitor_publishes_a_dialable_instance_name(services):
    """Gateways and workers without --admin/--monitor find the monitor through the election
    value, its --instance-name (default: the bound address, 0.0.0.0:8101 here): it must be an
    http:// URL naming the monitor's service."""
    for name, s in kiln_services(services).items():
        if s.binary == "kiln-monitor":
            url = s.flags["instance-name"][-1]
            assert url.startswith("http://")
            assert addresses(url) == [(name, int(s.value("grpc-addr").rsplit(":", 1)[1]))]


def test_workers_are_distinct_and_advertise_their_service(services):
    workers = {n: s for n, s in kiln_services(services).items() if s.binary == "kiln-worker"}
    assert len(workers) == 2
    ids = [s.flags["id"][-1] for s in workers.values()]
    assert len(set(ids)) == len(ids), ids
    for name, s in workers.items():
        grpc_port = int(s.value("grpc-addr").rsplit(":", 1)[1])
        assert addresses(s.flags["advertise-addr"][-1]) == [(name, grpc_port)]


def test_model_paths_line_up(services, compose):
    monitor = next(s for s in services.values() if s.binary == "kiln-monitor")
    repository = monitor.flags["repository"][-1]
    repo_volume = monitor.mounts()[repository]
    assert repo_volume in compose.get("volumes", {}), "the repository is a named volume"
    workers = [s for s in services.values() if s.binary == "kiln-worker"]
    for w in workers:
        # Workers load the copies at the monitor's --repository path.
        assert w.mounts().get(repository) == repo_volume, f"{w.name}: mount {repository}"
        assert w.flags["package-root"][-1] == repository

    deploy = next(s for s in services.values() if s.binary == "kiln")
    assert deploy.subcommand == ("deploy",)
    assert deploy.spec.get("restart") == "no"
    package = deploy.flags["package"][-1]
    # The monitor reads the package: under its --package-root, on one of its mounts, and the
    # mount's source is the repository's models/ with that package in it.
    assert Path(package).is_relative_to(monitor.flags["package-root"][-1])
    mount = next(m for m in monitor.mounts() if Path(package).is_relative_to(m))
    source = (DOCKER / monitor.mounts()[mount]).resolve() / Path(package).relative_to(mount)
    manifest = tomllib.loads((source / "kiln.toml").read_text())
    positionals = [w for w in deploy.command[1:] if not w.startswith("--")]
    assert manifest["name"] == positionals[0]
    assert manifest["version"] == deploy.flags["version"][-1]
    assert int(deploy.flags["replicas"][-1]) <= len(workers)


def test_depends_on_healthy_services_have_a_healthcheck(services):
    for name, s in services.items():
        depends = s.spec.get("depends_on", {})
        if isinstance(depends, list):
            depends = {d: {} for d in depends}
        for other, cond in depends.items():
            assert other in services, f"{name} depends on unknown {other}"
            if cond.get("condition") == "service_healthy":
                assert services[other].has_healthcheck(), f"{other} has no healthcheck"
    deploy = next(s for s in services.values() if s.binary == "kiln")
    needed = {n for n, s in services.items() if s.binary in ("kiln-monitor", "kiln-worker")}
    assert needed <= set(deploy.spec["depends_on"]), "deploy waits for the monitor and workers"


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes", {}))
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
            elif source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: {source} does not exist"


def test_prometheus_scrapes_every_service(services):
    prometheus = next(s for s in services.values() if "prometheus" in s.spec.get("image", ""))
    mount = prometheus.mounts()["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((DOCKER / mount).read_text())
    scraped = set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    host = prometheus.name
                assert host in services, f"{job['job_name']}: no service {host}"
                assert int(port) == services[host].metrics_port(), target
                scraped.add(host)
    one_shot = {n for n, s in services.items() if s.spec.get("restart") == "no"}
    assert scraped == set(services) - one_shot
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    # docs/OPERATIONS.md §8 alerts on up{job="kiln-worker"}.
    assert {"kiln-gateway", "kiln-monitor", "kiln-worker"} <= jobs
