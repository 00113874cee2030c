#!/usr/bin/env bash
# The digits demo's retrain hook (kiln-monitor --retrain-command models/digits/retrain.sh):
# retrains on drifted data, profiles the new package and registers it; the monitor then
# deploys it as a canary and promotes it once it is within the SLO and without drift.
# Environment from the monitor: KILN_MODEL, KILN_VERSION, KILN_NEXT_VERSION, KILN_ADMIN.
# Optional: KILN_PYTHON (default python3), KILN (the kiln CLI; default: beside this checkout's
# target/debug or on PATH), KILN_RETRAIN_DIR (where packages go; default a temp dir),
# KILN_DRIFT_SCENARIO (default faded).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${KILN_PYTHON:-python3}"
kiln="${KILN:-kiln}"
out="${KILN_RETRAIN_DIR:-$(mktemp -d)}/${KILN_MODEL}/${KILN_NEXT_VERSION}"
"$python" "$here/retrain.py" --version "$KILN_NEXT_VERSION" \
  --scenario "${KILN_DRIFT_SCENARIO:-faded}" --out "$out"
"$kiln" profile --package "$out"
"$kiln" --admin "$KILN_ADMIN" register --package "$out"
