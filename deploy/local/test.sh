#!/usr/bin/env bash
# Runs Kiln's whole test suite on a fresh machine: installs what it needs (setup.sh), checks
# formatting and lints, runs every Rust test (unit, conformance against real etcd, parity,
# end-to-end with separate processes) and the Python end-to-end tests with real clients.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/local/setup.sh

export KILN_PYTHON="$PWD/.venv/bin/python"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== wgpu backend on a software Vulkan adapter (lavapipe): parity, op by op and per model"
# One invocation for both crates, so burn is built once with ndarray + wgpu; the worker's tests
# run (on flex) only to prove the feature build; kiln-model's wgpu tests use Backend::WgpuCpu.
backends=(-p kiln-model -p kiln-worker --features kiln-model/wgpu,kiln-worker/ndarray,kiln-worker/wgpu)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast "${backends[@]}" -E 'test(/_on_(wgpu|ndarray)/)'
else
  cargo test --locked --no-fail-fast "${backends[@]}" -- _on_wgpu _on_ndarray
fi
echo "== cargo nextest"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "== end-to-end (separate processes, real etcd, tritonclient, perf_analyzer)"
cargo build --bins --locked
.venv/bin/python -m pytest -v -s tests/e2e
