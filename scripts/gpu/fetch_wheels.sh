#!/usr/bin/env bash
# Prepare .whl/ on a machine with network access for a GPU machine without it
# (scripts/gpu/setup_env.sh installs whatever lies there):
#   bash scripts/gpu/fetch_wheels.sh [PYTHON_VERSION]      # default 3.12, the GPU image's
# fla-core is a pure-Python wheel on PyPI. mamba_ssm ships only a source archive whose build
# compiles CUDA extensions; the project uses its Triton kernels alone, so it is built here as a
# pure-Python wheel (MAMBA_SKIP_CUDA_BUILD) without asking for a prebuilt binary
# (MAMBA_FORCE_BUILD). Building it imports torch, so torch must be installed here.
set -euo pipefail
cd "$(dirname "$0")/../.."
py="${1:-3.12}"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp -d .whl "fla-core==0.6.0"
python3 -m pip install -q wheel
tmp=$(mktemp -d)
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE python3 -m pip wheel -q --no-deps \
  --no-build-isolation -w "$tmp" "mamba_ssm==2.3.2.post1"
mv "$tmp"/mamba_ssm-*-py3-none-any.whl .whl/
rm -rf "$tmp"
ls -l .whl
