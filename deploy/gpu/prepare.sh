#!/usr/bin/env bash
# Builds and gathers what deploy/gpu/check.sh needs on a GPU machine that has no network and no
# Rust toolchain: release binaries with the wgpu backend (stripped), perf_analyzer with the two
# shared libraries it needs, and the Vulkan loader package. They land in .gpucheck/, packed as
# .gpupack/gpucheck.tar.xz (~25 MB; the binaries alone are ~140 MB), and .gl/, all git-ignored
# through .git/info/exclude; carry .gpupack and .gl to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in .gpucheck .gpupack .gl; do
    grep -qx "/$d/" .git/info/exclude || echo "/$d/" >> .git/info/exclude
done
cargo build --release --locked -p kiln --features wgpu --bin kiln
cargo build --release --locked -p kiln-model --features wgpu --example backend_check
cargo build --release --locked -p kiln-loadtest
target="${CARGO_TARGET_DIR:-target}/release"
rm -rf .gpucheck && mkdir -p .gpucheck/lib
strip -o .gpucheck/kiln "$target/kiln"
strip -o .gpucheck/backend_check "$target/examples/backend_check"
# perf_analyzer from the tritonclient wheel (deploy/local/setup.sh installs it in .venv).
cp .venv/bin/perf_analyzer .gpucheck/
cp .venv/lib/python3*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12 .gpucheck/lib/
cp /usr/lib/x86_64-linux-gnu/libb64.so.0d .gpucheck/lib/
# The Vulkan loader and the GL dispatch libraries the NVIDIA ICD links (libGLX_nvidia needs
# libglvnd); the ICD itself comes with the machine's driver. Without them wgpu finds no adapter.
mkdir -p .gl /tmp/kiln-apt-amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/kiln-apt-amd64'
ls .gl/libglx0_*.deb >/dev/null 2>&1 || {
    apt-get $o update -qq
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
}
strip -o .gpucheck/kiln-loadtest "$target/kiln-loadtest"
mkdir -p .gpupack
tar -cf - --exclude=kiln-loadtest .gpucheck | xz -T0 -6 > .gpupack/gpucheck.tar.xz
# Packed alone so the CPU benchmarks (deploy/gpu/cpu_bench.sh) can ship a new one cheaply.
tar -cf - .gpucheck/kiln-loadtest | xz -T0 -6 > .gpupack/loadtest.tar.xz
du -sh .gpucheck .gpupack .gl
