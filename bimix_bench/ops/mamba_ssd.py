"""mamba_ssm's Triton Mamba-2 SSD kernel (mamba_chunk_scan_combined), optional and GPU-only.

mamba_ssm 2.3.2's package __init__ imports its compiled CUDA extension unconditionally, yet
the SSD kernel itself is pure Triton. When the normal import fails, the kernel module is
loaded under placeholder parent packages whose __init__ is not executed, so a wheel built
with MAMBA_SKIP_CUDA_BUILD=TRUE still provides the kernel.

Semantics, with our state layout (B, H, N, P) (N = d_state as "K", P = head dim as "V"):
    S_t = exp(dt_t A) S_{t-1} + dt_t B_t x_t^T,   y_t = C_t^T S_t
i.e. gated_linear_attention(q=C, k=B, v=dt*x, log_decay=dt*A). The D skip is left to the
caller so every backend shares it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import types
from typing import Callable

import torch

_KERNEL_MODULE = "mamba_ssm.ops.triton.ssd_combined"
# Mamba-2's default chunk length for its kernel.
MAMBA_CHUNK_SIZE = 256


def _import_without_package_init(module: str):
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mamba_ssm is not installed")
    root = list(spec.submodule_search_locations)[0]
    for parent in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", "mamba_ssm.utils"):
        if parent not in sys.modules:  # placeholders: importable children, no __init__ run
            placeholder = types.ModuleType(parent)
            placeholder.__path__ = [os.path.join(root, *parent.split(".")[1:])]
            sys.modules[parent] = placeholder
    return importlib.import_module(module)


@functools.lru_cache(maxsize=1)
def load_mamba_chunk_scan() -> tuple[Callable | None, str]:
    """(mamba_chunk_scan_combined or None, why not). Cached."""
    if not torch.cuda.is_available():
        return None, "mamba_ssm needs a CUDA device"
    try:
        module = importlib.import_module(_KERNEL_MODULE)
        how = "mamba_ssm"
    except Exception as first:  # ImportError, or the CUDA extension failing to load
        if importlib.util.find_spec("mamba_ssm") is None:
            return None, f"mamba_ssm not installed ({first})"
        for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
            del sys.modules[name]  # drop what the failed package import left half-done
        try:
            module = _import_without_package_init(_KERNEL_MODULE)
        except Exception as err:
            return None, f"mamba_ssm kernel not importable ({type(err).__name__}: {err})"
        how = "mamba_ssm Triton kernel (package __init__ skipped: no CUDA extension)"
    return module.mamba_chunk_scan_combined, how


def mamba_problem(device: torch.device) -> str | None:
    """Why the mamba_ssm kernel cannot run on `device`, or None if it can."""
    if torch.device(device).type != "cuda":
        return f"mamba_ssm needs a CUDA device (tensors on {torch.device(device).type})"
    fn, reason = load_mamba_chunk_scan()
    return None if fn is not None else reason


def mamba_ssd(
    x: torch.Tensor,  # (B, T, H, P)
    dt: torch.Tensor,  # (B, T, H), already softplus-ed and biased
    A: torch.Tensor,  # (H,), negative
    B: torch.Tensor,  # (B, T, G, N), G groups shared by H / G heads each
    C: torch.Tensor,  # (B, T, G, N)
    initial_state: torch.Tensor | None = None,  # (B, H, N, P)
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # (B, T, H, P), (B, H, N, P) fp32
    fn, reason = load_mamba_chunk_scan()
    if fn is None:
        raise RuntimeError(reason)
    h0 = None if initial_state is None else initial_state.transpose(-1, -2).float().contiguous()
    result = fn(
        x, dt, A, B, C, MAMBA_CHUNK_SIZE,
        initial_states=h0,  # mamba_ssm keeps states as (B, H, P, N)
        return_final_states=output_final_state,
    )
    if output_final_state:
        y, final = result
        return y, final.transpose(-1, -2).float()
    return result, None
