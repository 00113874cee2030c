#!/usr/bin/env bash
# Issue 3's CPU benchmarks on a machine with more cores than the 2-core development machine
# (the GPU machine has 16), run from the repository root after deploy/gpu/prepare.sh (which also
# packs kiln-loadtest). The server and the load generator get disjoint CPUs (taskset), so the
# client never takes the server's cores:
#   1. overload: one worker (`kiln up --workers 1`, pinned to 1, 2, 4 then 8 CPUs) serving a copy
#      of digits with max_queue_size 8 and one instance (capacity 16 requests), driven by
#      kiln-loadtest on CPUs 8-15: concurrency 1 (unloaded), then a closed loop of 160 (10x);
#      the process's RSS every 0.5 s;
#   2. dynamic batching on the flex CPU backend: perf_analyzer (CPUs 8-15), batch-1 requests to
#      a worker on CPUs 0-7, concurrency 1 and 64, for digits and digits_cnn, with batching, and
#      without (default 2 compute threads, and 8).
# Raw results (kiln-loadtest JSON, perf_analyzer output, RSS samples, /metrics) go to $OUT;
# loadtest/summarize_cpu_bench.py turns them into the tables of docs/BENCHMARKS.md.
set -uo pipefail
OUT="${OUT:-$PWD/cpubench-out}"
mkdir -p "$OUT"
. "$(dirname "$0")/lib.sh"
unpack
OVERLOAD_SECONDS="${OVERLOAD_SECONDS:-5}"
# perf_analyzer (the reference) or kiln-loadtest (faster: perf_analyzer spends tens of seconds
# between passes at 50k+ requests/s) for the batching runs.
BATCH_TOOL="${BATCH_TOOL:-perf_analyzer}"
BATCH_SECONDS="${BATCH_SECONDS:-3}"
CLIENT_CPUS="${CLIENT_CPUS:-8-15}"
WORKER_CPU_COUNTS="${WORKER_CPU_COUNTS:-1 2 4 8}"
SERVER_CPUS="${SERVER_CPUS:-0-7}"
BATCH_THREADS="${BATCH_THREADS:-8}"
{ nproc; grep -m1 'model name' /proc/cpuinfo; date -u; } | tee "$OUT/machine.txt"

echo "== 1. overload"
pkgs=$(mktemp -d)
cp -r models/digits "$pkgs/digits"
sed -i 's/max_queue_size = 1024/max_queue_size = 8/' "$pkgs/digits/1/kiln.toml"
sed -i '1i instance_count = 1' "$pkgs/digits/1/kiln.toml"
grep -q 'max_queue_size = 8' "$pkgs/digits/1/kiln.toml" || { echo "queue not bounded"; exit 1; }
for wc in $WORKER_CPU_COUNTS; do
    cpus="0-$((wc - 1))"
    up "$cpus" "$pkgs" digits:1 "overload-w$wc" || continue
    lt() { # label, concurrency, connections, seconds
        timeout 60 taskset -c $CLIENT_CPUS "$B/kiln-loadtest" --url 127.0.0.1:9001 --model digits \
            --concurrency "$2" --connections "$3" --warmup 1s --duration "${4}s" \
            --json "$OUT/overload-w$wc-$1.json" > "$OUT/overload-w$wc-$1.txt" 2>&1
    }
    lt warmup 160 8 2
    metrics "$OUT/overload-w$wc-m0.txt"
    lt unloaded 1 1 3
    metrics "$OUT/overload-w$wc-m1.txt"
    pid=$UP_PID
    (while kill -0 "$pid" 2>/dev/null; do rss "$pid"; sleep 0.5; done) > "$OUT/overload-w$wc-rss.txt" &
    sampler=$!
    lt over 160 8 "$OVERLOAD_SECONDS"
    kill $sampler 2>/dev/null
    metrics "$OUT/overload-w$wc-m2.txt"
    echo "worker on $wc CPUs: $(grep -E 'OK|RESOURCE' "$OUT/overload-w$wc-over.txt" | head -4 | tr -s ' ' | tr '\n' ';')"
    down
done

echo "== 2. dynamic batching on flex (CPU)"
bench() { # model, input shape, label, extra kiln-up flags...
    local model=$1 shape=$2 label=$3; shift 3
    up "$SERVER_CPUS" models "$model:1" "batching-$model-$label" "$@" || return 1
    timeout 60 taskset -c $CLIENT_CPUS "$B/kiln-loadtest" --url 127.0.0.1:9001 --model "$model" \
        --concurrency 64 --connections 8 --warmup 0s --duration 1s >/dev/null 2>&1
    for c in 1 64; do
        local f="$OUT/batching-$model-$label-c$c"
        metrics "$f.m0"
        if [ "$BATCH_TOOL" = perf_analyzer ]; then
            timeout 90 taskset -c $CLIENT_CPUS "$B/perf_analyzer" -v -m "$model" -i grpc -u 127.0.0.1:9001 \
                --concurrency-range "$c" --shape "input:$shape" -p 1500 --max-trials 6 -s 20 > "$f.txt" 2>&1
        else
            timeout 60 taskset -c $CLIENT_CPUS "$B/kiln-loadtest" --url 127.0.0.1:9001 --model "$model" \
                --concurrency "$c" --connections $(( c < 8 ? c : 8 )) --warmup 1s --duration "${BATCH_SECONDS}s" \
                --json "$f.json" > "$f.txt" 2>&1
        fi
        metrics "$f.m1"
        echo "$model $label c=$c: $(grep -E 'Throughput|p50 latency|throughput' "$f.txt" | tail -2 | tr -s ' ' | tr '\n' ';')"
    done
    down
}
for spec in digits:64 digits_cnn:1,8,8; do
    model=${spec%%:*} shape=${spec#*:}
    bench "$model" "$shape" on
    bench "$model" "$shape" off-2 --no-dynamic-batching
    bench "$model" "$shape" "off-$BATCH_THREADS" --no-dynamic-batching --compute-threads "$BATCH_THREADS"
done
rm -rf "$pkgs"
