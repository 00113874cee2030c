#!/usr/bin/env bash
# Runs Kiln on this machine as separate processes, the production shape: etcd, kiln-monitor,
# kiln-gateway and two kiln-worker, from target/release (built first if missing, or always with
# --build; KILN_BIN_DIR=target/debug uses a debug build instead). Registers and deploys the
# digits demo with `kiln deploy`, prints how to call it, and stops everything on Ctrl-C
# (gateway first, then workers, monitor, etcd).
#
# State and logs live under .kiln/cluster/ (etcd data is fresh each run). Ports: etcd 2379/2380
# (KILN_ETCD_PORT / KILN_ETCD_PEER_PORT), gateway 8001/8002, monitor 8101/8102, workers
# 9001-9002 / 9101-9102.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin=${KILN_BIN_DIR:-$root/target/release}
state=$root/.kiln/cluster
etcd_port=${KILN_ETCD_PORT:-2379}
etcd_peer_port=${KILN_ETCD_PEER_PORT:-2380}
etcd_url=http://127.0.0.1:$etcd_port

command -v etcd >/dev/null || { echo "cluster: etcd not found; run deploy/local/setup.sh" >&2; exit 1; }
missing=0
for b in kiln kiln-monitor kiln-gateway kiln-worker; do [ -x "$bin/$b" ] || missing=1; done
if [ -z "${KILN_BIN_DIR:-}" ] && { [ "$missing" = 1 ] || [ "${1:-}" = "--build" ]; }; then
  echo "cluster: cargo build --release --bins"
  cargo build --release --bins
fi

rm -rf "$state"
mkdir -p "$state/logs"
names=()
pids=()

stop_all() {
  trap - EXIT
  # A second Ctrl-C while stopping kills what is left at once (services run in their own
  # process groups, so it would otherwise end this script and leave them running).
  trap 'echo "cluster: killing the rest"; kill -KILL "${pids[@]}" 2>/dev/null; exit 130' INT TERM
  [ ${#pids[@]} -gt 0 ] || return 0
  echo
  echo "cluster: stopping (Ctrl-C again to kill everything now)"
  # Reverse start order: gateway, workers, monitor, etcd; each drains before the next stops.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    if kill -TERM "${pids[$i]}" 2>/dev/null; then
      wait "${pids[$i]}" 2>/dev/null || true
      echo "cluster: ${names[$i]} stopped"
    fi
  done
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM
# Each service in its own process group: Ctrl-C reaches this script only, which then stops the
# services in order instead of all at once.
set -m

start() {
  local name=$1
  shift
  "$@" >"$state/logs/$name.log" 2>&1 &
  names+=("$name")
  pids+=($!)
}

# Polls a command until it succeeds (20 s), or fails naming what it waited for.
await() {
  local what=$1
  shift
  for _ in $(seq 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "cluster: $what did not come up; see $state/logs/" >&2
  exit 1
}

start etcd etcd --name kiln --data-dir "$state/etcd" \
  --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "kiln=http://127.0.0.1:$etcd_peer_port" --log-level warn
await etcd curl -sf "$etcd_url/health"

export KILN_ETCD=$etcd_url
start monitor "$bin/kiln-monitor" --package-root "$root/models"
# Stopping the whole cluster, a worker's replicas have nowhere to move: no drain wait
# (`--drain-timeout-secs 0`; a rolling restart keeps the default 30 s, OPERATIONS.md §4).
for i in 1 2; do
  start "worker-$i" "$bin/kiln-worker" --id "worker-$i" --package-root "$root/models" \
    --grpc-addr "127.0.0.1:900$i" --http-addr "127.0.0.1:910$i" --drain-timeout-secs 0
done
start gateway "$bin/kiln-gateway"
await monitor curl -sf http://127.0.0.1:8102/readyz
await gateway curl -sf http://127.0.0.1:8002/healthz

"$bin/kiln" deploy digits --version 1 --replicas 2 --package "$root/models/digits/1"

cat <<MSG

Kiln is running as separate processes (logs in $state/logs/):
  etcd      $etcd_url
  gateway   127.0.0.1:8001   metrics http://127.0.0.1:8002/metrics
  monitor   127.0.0.1:8101   metrics http://127.0.0.1:8102/metrics
  workers   127.0.0.1:9001, 127.0.0.1:9002

Call it:
  $bin/kiln predict digits --input-file models/digits/testdata/heldout.json --rows 3
  $bin/kiln status
  .venv/bin/python -c 'import numpy as np, tritonclient.grpc as g; c = g.InferenceServerClient("127.0.0.1:8001"); x = np.load("models/digits/testdata/heldout.npy")[:3]; i = g.InferInput("input", list(x.shape), "FP32"); i.set_data_from_numpy(x); print(c.infer("digits", [i]).as_numpy("label"))'

Press Ctrl-C to stop.
MSG

# Run until Ctrl-C, or until one process dies (then stop the rest).
set +e
wait -n "${pids[@]}"
status=$?
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    echo "cluster: ${names[$i]} exited (status $status); see $state/logs/${names[$i]}.log" >&2
  fi
done
exit "$status"
