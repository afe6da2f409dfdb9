#!/usr/bin/env bash
# Install bimix-bench (editable) with everything it needs.
#   bash scripts/install.sh            # runtime + test dependencies
#   bash scripts/install.sh --gpu      # also fla-core (GPU linear-attention kernels)
# torch is installed only when it is missing, so an existing (e.g. CUDA) build is never
# replaced; set TORCH_SPEC to choose what gets installed then (default torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
extras="dev"
for arg in "$@"; do
  case "$arg" in
    --gpu) extras="dev,gpu" ;;
    *) echo "unknown option: $arg (valid: --gpu)" >&2; exit 2 ;;
  esac
done
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "torch not found: installing ${TORCH_SPEC:-torch==2.13.0}"
  "$PYTHON" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
fi
"$PYTHON" -m pip install --quiet -e ".[${extras}]"
"$PYTHON" -c "import bimix_bench, torch; print(f'bimix-bench {bimix_bench.__version__} installed (torch {torch.__version__})')"
