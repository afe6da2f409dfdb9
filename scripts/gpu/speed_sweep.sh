#!/usr/bin/env bash
# GPU throughput sweep and a re-check of it (bimix-bench speed / check, docs/perf.md):
# every registered model at the small budget, contexts 1K..64K, 32K tokens per call, bf16,
# then the GPU tests of the speed harness.
#   source scripts/gpu/setup_env.sh && bash scripts/gpu/speed_sweep.sh [extra speed options]
# Writes $OUT (default runs/gpu_speed): speed.json, speed.png, recheck.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-runs/gpu_speed}"
mkdir -p "$OUT"
python3 -m bimix_bench speed --budget small --device cuda --out "$OUT/speed.json" \
  --plot "$OUT/speed.png" "$@"
# The same cells again, judged against the sweep: shows the gate's noise on this GPU.
python3 -m bimix_bench check --reference "$OUT/speed.json" --repeats 5 --tolerance 0.10 \
  --no-confirm --out "$OUT/recheck.json" || echo "recheck reported regressions (see above)"
python3 -m pytest -q -m gpu tests/test_speed.py
