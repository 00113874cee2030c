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
echo "== other backends compile (ndarray, wgpu)"
cargo check -p kiln-worker --features ndarray,wgpu --locked
echo "== wgpu backend on a software Vulkan adapter (lavapipe): parity, op by op and per model"
# kiln-model's *_on_wgpu_* tests run Backend::WgpuCpu (the same cases as on flex).
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast --cargo-profile gpu-test -p kiln-model --features wgpu \
    -E 'test(/_on_wgpu/)'
else
  cargo test --locked --no-fail-fast --profile gpu-test -p kiln-model --features wgpu -- _on_wgpu
fi
echo "== cargo nextest"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "== end-to-end (separate processes, real etcd, tritonclient, perf_analyzer); deploy/docker files"
cargo build --bins --locked
# tests/deploy: the Dockerfiles, compose.yaml and prometheus.yml against the binaries' --help.
.venv/bin/python -m pytest -v -s tests/e2e tests/deploy

echo "== fuzzing: every cargo-fuzz target for a bounded time from the committed corpus (fuzz/run.sh)"
fuzz/run.sh "${KILN_FUZZ_SECONDS:-30}"
