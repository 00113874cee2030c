#!/usr/bin/env bash
# The GPU check, run on a machine with an NVIDIA GPU from the repository root after
# deploy/gpu/prepare.sh has filled .gpupack/ (or .gpucheck/) and .gl/ (results:
# docs/BENCHMARKS.md):
#   1. parity of every model package on wgpu (Vulkan on the GPU) against the flex CPU backend,
#      and a throughput table for batch 1 ... 1024 on both;
#   2. the dynamic batcher on the GPU: perf_analyzer, batch-1 requests direct to one worker, at
#      concurrency 1 and 64, with dynamic batching on and off (same machine, same run), and the
#      same on the flex CPU backend.
# Results go to $OUT (default ./gpucheck-out).
set -uo pipefail
OUT="${OUT:-$PWD/gpucheck-out}"
mkdir -p "$OUT"
. "$(dirname "$0")/lib.sh"
unpack
SECONDS_PER_BATCH="${SECONDS_PER_BATCH:-0.25}"
BATCHES="${BATCHES:-1,2,4,8,16,32,64,128,256,512,1024}"
BENCH_BACKENDS="${BENCH_BACKENDS:-wgpu flex}"
vulkan_setup
{ nvidia-smi -L; nproc; date -u; ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null; } | tee "$OUT/machine.txt"
# GPU utilisation and memory, once a second, to show the work ran on the GPU.
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$OUT/smi.csv" 2>&1 &

echo "== 1. parity and throughput: wgpu vs flex"
"$B/backend_check" --backend wgpu --baseline flex --models models \
    --batches "$BATCHES" --seconds "$SECONDS_PER_BATCH" \
    2>&1 | tee "$OUT/backend_check.md"
parity=${PIPESTATUS[0]}

echo "== 2. dynamic batching through a worker (perf_analyzer, batch 1)"
counts() { # the worker's inference and execution counters (avg batch = delta ratio)
    echo "$1: $(curl -s 127.0.0.1:9101/metrics | grep -E '^nv_inference_(count|exec_count)\{model="digits"' | tr '\n' ' ')"
}
bench() { # backend, label, extra kiln-up flags...
    local backend=$1 label=$2; shift 2
    "$B/kiln" up --backend "$backend" --workers 1 --deploy digits:1 --models models "$@" \
        > "/tmp/up-$backend-$label.log" 2>&1 &
    local pid=$!
    for _ in $(seq 240); do
        grep -q '^Call ' "/tmp/up-$backend-$label.log" && break
        kill -0 $pid 2>/dev/null || { echo "kiln up exited:"; tail -5 "/tmp/up-$backend-$label.log"; return 1; }
        sleep 0.5
    done
    # Warm-up: the first calls of each batch size compile and tune kernels on a GPU backend.
    "$B/perf_analyzer" -m digits -i grpc -u 127.0.0.1:9001 --concurrency-range 64 \
        --shape input:64 -p 1000 --max-trials 3 >/dev/null 2>&1
    for c in 1 64; do
        echo "-- $backend $label concurrency $c" | tee -a "$OUT/batching.txt"
        counts "before" | tee -a "$OUT/batching.txt"
        "$B/perf_analyzer" -v -m digits -i grpc -u 127.0.0.1:9001 --concurrency-range "$c" \
            --shape input:64 -p 1500 --max-trials 6 -s 20 2>&1 \
            | grep -E 'Pass \[|Throughput|p50 latency|p99 latency|Avg request latency|Inference count|Execution count|Successful|Failed' \
            | tee -a "$OUT/batching.txt"
        counts "after" | tee -a "$OUT/batching.txt"
    done
    kill -INT $pid 2>/dev/null; wait $pid
    { echo "== kiln up --backend $backend ($label)"; cat "/tmp/up-$backend-$label.log"; } >> "$OUT/up.log"
}
for backend in $BENCH_BACKENDS; do
    bench "$backend" batching 2>&1 | sed "s/^/[$backend batching] /"
    bench "$backend" no-batching --no-dynamic-batching 2>&1 | sed "s/^/[$backend no-batching] /"
done
exit "$parity"
