#!/usr/bin/env bash
# The throughput-regression gate of CI (scripts/test.sh runs it after the tests): `bimix-bench
# check` against the committed CPU references (results/ci/cpu, the one of this CPU model) with
# the project's tolerances, 15% for forward and train figures and 25% for decode (docs/perf.md
# says how they were chosen). Extra arguments go to `check`; GATE_REFERENCE names another
# reference.
#   bash scripts/throughput_gate.sh [CHECK_OPTIONS...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m bimix_bench check --reference "${GATE_REFERENCE:-results/ci/cpu}" \
  --repeats 30 --tolerance 0.15 --decode-tolerance 0.25 "$@"
