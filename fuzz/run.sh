#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time: fuzz/run.sh [seconds-per-target]
#
# Runs on the stable toolchain: cargo-fuzz builds with --sanitizer none (the sanitizers need
# nightly's -Z flags); libFuzzer's coverage instrumentation (-Cpasses=sancov-module,
# -Cllvm-args=...) is stable. Debug assertions (and so overflow checks) are on, as in tests.
#
# Each target starts from its committed seeds, fuzz/corpus/<target>/, read-only: libFuzzer writes
# what it finds to the first corpus directory, a scratch one ($KILN_FUZZ_SCRATCH/<target>,
# default a fresh temporary directory), so the tree stays clean. A crash, timeout or
# out-of-memory fails the run (exit 1) after all targets ran; the input that caused it is
# saved under fuzz/artifacts/<target>/ (ignored by git) and the line to replay it is printed.
#
# Environment: KILN_FUZZ_TARGET_DIR (the cargo target directory, default
# /var/tmp/kiln-fuzz-target; about 3 GB), KILN_FUZZ_TARGETS (a
# space-separated subset), KILN_FUZZ_SCRATCH, KILN_FUZZ_RSS_LIMIT_MB (default 4096),
# KILN_FUZZ_INPUT_TIMEOUT_S (per input, default 10), KILN_FUZZ_TOOLCHAIN (default stable).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
CARGO_FUZZ_VERSION=0.13.2
TARGETS="${KILN_FUZZ_TARGETS:-infer_request infer_request_structured onnx_load manifest grpc_timeout}"
RSS_LIMIT_MB="${KILN_FUZZ_RSS_LIMIT_MB:-4096}"
INPUT_TIMEOUT_S="${KILN_FUZZ_INPUT_TIMEOUT_S:-10}"
# Never the workspace's target directory (CI's .ci/run exports CARGO_TARGET_DIR for that one):
# every crate here is built with coverage instrumentation, so nothing would be shared anyway.
export CARGO_TARGET_DIR="${KILN_FUZZ_TARGET_DIR:-/var/tmp/kiln-fuzz-target}"
export CARGO_INCREMENTAL=0
if command -v rustup >/dev/null; then
  export RUSTUP_TOOLCHAIN="${KILN_FUZZ_TOOLCHAIN:-stable}"
fi

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# --codegen-units: cargo-fuzz's default of 1 makes the burn runtime's build far slower; the
# fuzzing speed lost is small next to a model inference per input.
BUILD_FLAGS=(--sanitizer none --debug-assertions --codegen-units 16)
# The fuzz crate is a workspace of its own; its lock file (ignored by git) starts each run as a
# copy of the workspace's, so the fuzzed crates build with the dependency versions they ship with
# and the tree stays clean when those change.
cp Cargo.lock fuzz/Cargo.lock
start=$(date +%s)
cargo fuzz build "${BUILD_FLAGS[@]}"
echo "fuzz: built in $(($(date +%s) - start)) s"

triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"
scratch="${KILN_FUZZ_SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/kiln-fuzz.XXXXXX")}"
logs="$scratch/logs"
mkdir -p "$logs"

failed=()
summary=()
for target in $TARGETS; do
  mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
  log="$logs/$target.log"
  echo "fuzz: $target for ${SECONDS_PER_TARGET} s (log: $log)"
  rc=0
  "$bin_dir/$target" "$scratch/$target" "fuzz/corpus/$target" \
    -max_total_time="$SECONDS_PER_TARGET" \
    -rss_limit_mb="$RSS_LIMIT_MB" \
    -timeout="$INPUT_TIMEOUT_S" \
    -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" \
    >"$log" 2>&1 || rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  per_sec="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  last="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
  corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")"
  new="$(find "$scratch/$target" -type f | wc -l)"
  line="$(printf '%-26s execs %-9s %-9s cov %-6s ft %-6s corpus %-12s new %s' \
    "$target" "${execs:-?}" "(${per_sec:-?}/s)" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$new")"
  if [ "$rc" -ne 0 ]; then
    line="$line  FAILED (exit $rc)"
    failed+=("$target")
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to' "$log" | head -20 || true
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
    if [ -n "$artifact" ]; then
      echo "fuzz: replay with: $bin_dir/$target $artifact"
    fi
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "fuzz summary (${SECONDS_PER_TARGET} s per target; new = inputs found, kept in $scratch):"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/; logs under $logs)"
  exit 1
fi
echo "fuzz: no crashes"
