#!/usr/bin/env bash
# The project's test command (CI runs exactly this): the unit and end-to-end tests on CPU, then
# the throughput-regression gate against the committed CPU reference (docs/perf.md explains
# the method; set SKIP_SPEED_CHECK=1 to leave the gate out of a local run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# --durations: the slowest tests are named in every run, to keep CI well under 20 minutes.
"$PYTHON" -m pytest -q --durations=25 "$@"
if [[ "${SKIP_SPEED_CHECK:-0}" != "1" ]]; then
  PYTHON="$PYTHON" bash scripts/throughput_gate.sh
fi
