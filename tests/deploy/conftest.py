"""Fixtures of the deployment-file tests: the repository, the workspace's binaries and their
`--help`, the Dockerfiles and compose.yaml as parsed data.

No Docker engine is needed: the files are read as text (Dockerfiles) or YAML (compose,
Prometheus), and checked against the binaries built from this checkout (`target/debug` unless
KILN_BIN_DIR or CARGO_TARGET_DIR says otherwise, the rule of tests/e2e/harness.py).
"""

import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml


from dockerfiles import DOCKER, DOCKERFILES, Dockerfile, Service
from k8s import Render, kustomizers, missing, render_text

ROOT = Path(__file__).resolve().parents[2]


def bin_dir() -> Path:
    if os.environ.get("KILN_BIN_DIR"):
        return Path(os.environ["KILN_BIN_DIR"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug"


class Option:
    """One long option of a clap `--help` page."""

    def __init__(self, name, takes_value):
        self.name = name
        self.takes_value = takes_value
        self.text = ""

    @property
    def env(self):
        m = re.search(r"\[env: ([A-Z0-9_]+)[=\]]", self.text)
        return m.group(1) if m else None

    @property
    def default(self):
        m = re.search(r"\[default: ([^\]]*)\]", self.text)
        return m.group(1) if m else None

    @property
    def aliases(self):
        found = []
        for m in re.finditer(r"\[aliases?: ([^\]]*)\]", self.text):
            found += [a.strip().lstrip("-") for a in m.group(1).split(",")]
        return found


class Help:
    """A parsed `--help` page: long options (with env variable, default, aliases) and
    subcommands."""

    OPTION = re.compile(r"^\s+(?:-[A-Za-z0-9], )?--([a-z0-9][a-z0-9-]*)(?: <[^>]+>)?")

    def __init__(self, text):
        self.text = text
        self.options = {}
        self.commands = []
        current = None
        section = None
        for line in text.splitlines():
            if re.match(r"^[A-Z][A-Za-z ]*:$", line):
                section = line[:-1]
                current = None
                continue
            m = self.OPTION.match(line)
            if section == "Options" and m:
                current = Option(m.group(1), "<" in m.group(0))
                self.options[current.name] = current
                current.text = line[m.end():]
                continue
            if section == "Commands":
                cm = re.match(r"^  ([a-z][a-z0-9-]*)\s", line)
                if cm:
                    self.commands.append(cm.group(1))
                continue
            if current is not None:
                current.text += " " + line.strip()

    def accepts(self, flag):
        """The option named `flag` (or an alias of it), or None."""
        if flag in self.options:
            return self.options[flag]
        for option in self.options.values():
            if flag in option.aliases:
                return option
        return None

    def env_names(self):
        return {o.env: o for o in self.options.values() if o.env}


@lru_cache(maxsize=None)
def help_of(binary, *subcommand):
    path = bin_dir() / binary
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build --bins` first (or set KILN_BIN_DIR)")
    # Without KILN_* in the environment, so that `[env: X=value]` does not show our values.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    out = subprocess.run([str(path), *subcommand, "--help"], capture_output=True, text=True,
                         env=env, timeout=30, check=True)
    return Help(out.stdout)


@pytest.fixture(scope="session")
def kiln_help():
    return help_of


@pytest.fixture(scope="session")
def tools():
    found = kustomizers()
    if not found:
        missing("no kustomize (nor kubectl) found")
    return found


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


@pytest.fixture(scope="session")
def dockerfiles():
    return {name: Dockerfile(DOCKER / name) for name in DOCKERFILES}


@pytest.fixture(scope="session")
def compose():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="session")
def services(compose, dockerfiles, kiln_help):
    return {name: Service(name, spec, dockerfiles, kiln_help)
            for name, spec in compose["services"].items()}
