#!/usr/bin/env bash
# Source on a GPU machine without network: installs carried wheels (fla-core, mamba_ssm, ...)
# from .whl/ (made by scripts/gpu/fetch_wheels.sh) into a private target and puts the checkout
# on PYTHONPATH, and restores a carried Triton kernel cache.
#   source scripts/gpu/setup_env.sh
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || return 1
  export PYTHONPATH="/tmp/site:${PWD}${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# Kernels compiled by an earlier machine of this session, when carried (.triton_cache, put there
# by scripts/gpu/unpack_returned.sh from what run_queue.sh packed).
bash scripts/gpu/triton_cache.sh unpack .triton_cache/triton_cache.tar.gz
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
