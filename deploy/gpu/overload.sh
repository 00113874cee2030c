#!/usr/bin/env bash
# Issue 3's overload point on the device machine, run from the repository root after
# deploy/gpu/prepare.sh: does a worker under a closed loop at 10x its capacity refuse the excess
# fast (RESOURCE_EXHAUSTED), keep the admitted requests' p99 within 2x the unloaded p99, and keep
# its RSS flat?
#
# Each run (RUNS, specs BACKEND:MODEL:INSTANCES:CONNECTIONS:POLICY) starts one worker (`kiln up
# --workers 1`, pinned to SERVER_CPUS) serving a copy of the model with `max_queue_size = QUEUE`,
# `max_batch_size = QUEUE` and `instance_count = INSTANCES`. POLICY `queue` queues up to QUEUE
# requests behind running batches; `busy` sets `refuse_when_busy = true` and
# `max_queue_delay_microseconds = BUSY_DELAY_US` (requests are admitted only while an instance
# forms a batch, which waits that long to fill). Its capacity, the most requests it holds at once,
# is the queue plus one batch in compute per instance: QUEUE * (1 + INSTANCES). kiln-loadtest (pinned to CLIENT_CPUS) then drives: a warm-up at 10x
# (wgpu compiles and tunes its kernels per batch size on first use), concurrency 1 (unloaded),
# and a closed loop of 10x capacity while the worker's RSS is sampled every 0.5 s; the worker's
# /metrics before and after each phase give the server-side breakdown, and the worker's CPU time
# over the overload phases (LABEL-over-cpu.txt) says how busy its CPUs were, beside the load
# generator's own figure (client_cpu in its JSON): a closed loop's callers wait at whichever
# side is short of CPU.
# PACED=1 adds the other reading of "10x capacity": 10x the request rate the worker sustains
# (measured by a closed loop at its capacity), sent on a fixed schedule by at most 10x capacity
# callers (kiln-loadtest --rate R --max-in-flight N: latency from the intended send time).
# INTAKE_NICE=N passes `kiln up --intake-nice N` (request intake N above compute; default: the
# worker's, 10 on wgpu, 0 on the CPU backends).
# Raw results go to $OUT; loadtest/summarize_cpu_bench.py turns them into a table.
set -uo pipefail
OUT="${OUT:-$PWD/overload-out}"
mkdir -p "$OUT"
. "$(dirname "$0")/lib.sh"
unpack
RUNS="${RUNS:-wgpu:digits:1:8:queue wgpu:digits:1:8:busy wgpu:transformer:1:8:busy wgpu:digits_cnn:1:8:busy flex:digits:1:8:busy}"
QUEUE="${QUEUE:-8}"
BUSY_DELAY_US="${BUSY_DELAY_US:-100}"
INTAKE_NICE="${INTAKE_NICE:-}"
PACED="${PACED:-}"
SERVER_CPUS="${SERVER_CPUS:-0-7}"
CLIENT_CPUS="${CLIENT_CPUS:-8-15}"
OVERLOAD_SECONDS="${OVERLOAD_SECONDS:-5}"
UNLOADED_SECONDS="${UNLOADED_SECONDS:-3}"
case "$RUNS" in *wgpu*) vulkan_setup ;; esac
{ nproc; grep -m1 'model name' /proc/cpuinfo; nvidia-smi -L 2>/dev/null; date -u; } | tee "$OUT/machine.txt"

pkgs=$(mktemp -d)
trap 'rm -rf "$pkgs"' EXIT
for spec in $RUNS; do
    IFS=: read -r backend model k conns policy <<< "$spec"
    label="$backend-$model-k$k-c$conns-$policy-n${INTAKE_NICE:-default}"
    capacity=$((QUEUE * (1 + k)))
    n=$((10 * capacity))
    rm -rf "${pkgs:?}/$model" && cp -r "models/$model" "$pkgs/$model"
    toml="$pkgs/$model/1/kiln.toml"
    sed -i "s/^max_queue_size = .*/max_queue_size = $QUEUE/; s/^max_batch_size = .*/max_batch_size = $QUEUE/" "$toml"
    sed -i "1i instance_count = $k" "$toml"
    if [ "$policy" = busy ]; then
        sed -i "s/^max_queue_delay_microseconds = .*/max_queue_delay_microseconds = $BUSY_DELAY_US/" "$toml"
        sed -i "s/^\[batching\]/[batching]\nrefuse_when_busy = true/" "$toml"
        grep -q "refuse_when_busy = true" "$toml" || { echo "$label: policy not set"; continue; }
    fi
    grep -q "max_queue_size = $QUEUE" "$toml" || { echo "$label: queue not bounded"; continue; }
    up "$SERVER_CPUS" "$pkgs" "$model:1" "overload-$label" --backend "$backend" ${INTAKE_NICE:+--intake-nice "$INTAKE_NICE"} || continue
    lt() { # phase, load (--concurrency N or --rate R --max-in-flight N), connections, seconds, warm-up
        local load=(--concurrency "$2")
        case "$2" in rate=*) load=(--rate "${2#rate=}" --max-in-flight "$n") ;; esac
        timeout 60 taskset -c "$CLIENT_CPUS" "$B/kiln-loadtest" --url 127.0.0.1:9001 --model "$model" \
            "${load[@]}" --connections "$3" --warmup "$5" --duration "${4}s" \
            --json "$OUT/overload-$label-$1.json" > "$OUT/overload-$label-$1.txt" 2>&1
    }
    lt warmup "$n" "$conns" 3 0s
    metrics "$OUT/overload-$label-m0.txt"
    lt unloaded 1 1 "$UNLOADED_SECONDS" 1s
    metrics "$OUT/overload-$label-m1.txt"
    pid=$UP_PID # kiln up runs the worker in its own process
    (while kill -0 "$pid" 2>/dev/null; do rss "$pid"; sleep 0.5; done) > "$OUT/overload-$label-rss.txt" &
    sampler=$!
    cpu_during "$OUT/overload-$label-over-cpu.txt" "$pid" lt over "$n" "$conns" "$OVERLOAD_SECONDS" 1s
    kill $sampler 2>/dev/null
    metrics "$OUT/overload-$label-m2.txt"
    echo "$label capacity $capacity, closed loop $n: unloaded $(grep -E '^OK' "$OUT/overload-$label-unloaded.txt" | head -1 | tr -s ' ')"
    echo "    10x: $(grep -E '^(OK|RESOURCE|DEADLINE|UNAVAIL|INTERNAL)' "$OUT/overload-$label-over.txt" | tr -s ' ' | tr '\n' ';')"
    if [ -n "$PACED" ]; then # 10x the rate the worker sustains, from n callers at most
        lt capacity "$capacity" "$conns" 3 1s
        sustained=$(grep -o '"throughput_rps": *[0-9.]*' "$OUT/overload-$label-capacity.json" 2>/dev/null | grep -o '[0-9.]*$')
        paced=$(awk -v r="${sustained:-0}" 'BEGIN { printf "%d", 10 * r }')
        [ "$paced" -gt 0 ] || { echo "    paced: no sustained rate measured"; down; continue; }
        metrics "$OUT/overload-$label-m3.txt"
        cpu_during "$OUT/overload-$label-paced-cpu.txt" "$pid" lt paced "rate=$paced" "$conns" "$OVERLOAD_SECONDS" 1s
        metrics "$OUT/overload-$label-m4.txt"
        echo "    paced at $paced/s (10x $sustained/s): $(grep -E '^(OK|RESOURCE|DEADLINE|UNAVAIL|INTERNAL)' "$OUT/overload-$label-paced.txt" | tr -s ' ' | tr '\n' ';')"
    fi
    down
done
