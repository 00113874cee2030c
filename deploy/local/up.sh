#!/usr/bin/env bash
# The quickest way to a running Kiln: installs what is needed (setup.sh), then runs the whole
# cluster in one process with `kiln up` (arguments are passed on, e.g. `--workers 3`).
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/local/setup.sh
# The digits retrain hook (kiln up --retrain-command models/digits/retrain.sh) trains with it.
export KILN_PYTHON="${KILN_PYTHON:-$PWD/.venv/bin/python}"
exec cargo run --release --bin kiln -- up "$@"
