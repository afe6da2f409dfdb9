#!/usr/bin/env bash
# How reliable the CI throughput gate is on this machine: the gate of scripts/test.sh
# (scripts/throughput_gate.sh) five times on unchanged code (each should pass), then once with
# a 1.3x slowdown injected into each registered model in turn (each should fail). Prints one
# line per check.
#   bash scripts/gate_reliability.sh [REFERENCE]
set -uo pipefail
cd "$(dirname "$0")/.."
export GATE_REFERENCE="${1:-results/ci/cpu}"
check=(bash scripts/throughput_gate.sh)
for i in 1 2 3 4 5; do
  "${check[@]}" >/dev/null 2>&1; echo "unchanged code, check $i: exit $? (0 expected)"
done
for model in $(python3 -c "from bimix_bench.registry import MODELS; print(' '.join(MODELS.names()))"); do
  BIMIX_BENCH_INJECT_SLOWDOWN="$model=1.3" "${check[@]}" >/dev/null 2>&1
  echo "$model 1.3x slower: exit $? (1 expected)"
done
