"""What the deploy/docker tests (test_dockerfiles.py, test_compose.py) and the deploy/k8s tests
share: a Dockerfile parser, the compose services with their binaries' `--help`, and how a
command line's flags are checked against it. The fixtures are in conftest.py.
"""

import json
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest


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


def hadolint():
    venv = Path(sys.executable).parent / "hadolint"
    return str(venv) if venv.exists() else shutil.which("hadolint")


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


def kiln_services(services):
    return {n: s for n, s in services.items() if s.binary}


def addresses(value):
    """(host, port) of each comma-separated `host:port` or URL."""
    found = []
    for part in value.split(","):
        url = urlsplit(part if "://" in part else f"tcp://{part}")
        found.append((url.hostname, url.port))
    return found
