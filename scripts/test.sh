#!/usr/bin/env bash
# The project's test command (CI runs exactly this): the unit and end-to-end tests on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pytest -q "$@"
