"""Choose and run the kernels of the BiMix mixer core.

  requested   DCT branch                          Chebyshev branch
  reference   explicit kernels, direct/FFT conv   explicit kernels, direct/FFT conv
  chunked     shared op, plain-torch chunked      block-Toeplitz matmuls (torch)
  fla         shared op, fla chunk_simple_gla     block-Toeplitz matmuls (torch)
  triton      shared op, plain-torch chunked      the project's Triton kernel
  auto        CUDA: fla if importable, else chunked; Triton kernel.  CPU: chunked, chunked.
A forced backend that cannot run here raises SkipCell (the record says why); "auto" never does.

The DCT branch's decay is fixed per head (fla's g_gamma), so fla's problem with the backward of
per-token-gated kernels on Hopper (issue 640) does not apply: the per-token band gates live in
q, not in the decay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bimix_bench.bimix.kernels import chunked, reference
from bimix_bench.errors import SkipCell, UsageError

BACKENDS = ("auto", "reference", "chunked", "triton", "fla")


@dataclass
class SpectralBranches:
    """The learnable spectral parameters of one layer, as the kernels consume them."""

    branches: tuple[str, ...]  # ("dct", "cheb"), ("dct",) or ("cheb",): order of the gate axis
    n_bands: int
    horizon: int  # N_d
    window: int  # W
    dct_amplitude: torch.Tensor | None  # (H, K_d)
    log_rho: torch.Tensor | None  # (H,), < 0
    cheb_amplitude: torch.Tensor | None  # (H, K_c)

    def branch_gates(self, gates: torch.Tensor, branch: str) -> torch.Tensor:
        """(B|1, T|1, H, R, NB) -> that branch's (B|1, T|1, H, NB)."""
        return gates[..., self.branches.index(branch), :]

    def cheb_kernels(self) -> torch.Tensor:  # (H, NB, W)
        return reference.cheb_band_kernels(self.cheb_amplitude, self.window, self.n_bands)

    def reference_kernels(self, length: int) -> torch.Tensor:  # (H, R, NB, length)
        per_branch = []
        for name in self.branches:
            if name == "dct":
                per_branch.append(
                    reference.dct_band_kernels(
                        self.dct_amplitude, self.log_rho, self.horizon, self.n_bands, length
                    )
                )
            else:
                per_branch.append(self.cheb_kernels())
        return reference.stack_branch_kernels(per_branch, length)


@dataclass(frozen=True)
class BackendPlan:
    dct: str | None  # "reference" | "chunked" | "fla"; None when the branch is off
    cheb: str | None  # "reference" | "chunked" | "triton"; None when the branch is off
    reason: str

    @property
    def label(self) -> str:
        parts = [f"{name}={kind}" for name, kind in (("dct", self.dct), ("cheb", self.cheb)) if kind]
        return ",".join(parts)


def triton_problem(device: torch.device) -> str | None:
    """Why the Triton kernel cannot run on `device`, or None."""
    try:
        import triton  # noqa: F401
    except Exception as err:  # pragma: no cover - triton ships with torch on Linux
        return f"triton not importable ({type(err).__name__}: {err})"
    if device.type == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET", "0") in ("1", "true", "True"):
        return None
    return f"Triton needs CUDA (tensors on {device.type}; TRITON_INTERPRET=1 runs it on CPU)"


def resolve_backends(
    requested: str, branches: tuple[str, ...], device: torch.device, needs_grad: bool
) -> BackendPlan:
    from bimix_bench.ops.linear_recurrence import resolve_backend as resolve_recurrence

    if requested not in BACKENDS:
        raise UsageError(f"unknown bimix backend {requested!r}; valid: {', '.join(BACKENDS)}")
    has_dct, has_cheb = "dct" in branches, "cheb" in branches
    dct = cheb = None
    reasons = []
    if requested in ("reference", "chunked"):
        dct, cheb = requested, requested
        reasons.append(f"{requested} requested")
    elif requested == "fla":
        if has_dct:  # raises SkipCell with the reason when fla cannot run here
            _, why = resolve_recurrence("fla", decay_kind="fixed", device=device, needs_grad=needs_grad)
            reasons.append(why)
        dct, cheb = "fla", "chunked"
    elif requested == "triton":
        problem = triton_problem(device)
        if problem and has_cheb:
            raise SkipCell(f"bimix backend 'triton' unavailable: {problem}")
        dct, cheb = "chunked", "triton"
        reasons.append("triton requested")
    else:  # auto
        dct, why = resolve_recurrence("auto", decay_kind="fixed", device=device, needs_grad=needs_grad)
        if has_dct:
            reasons.append(f"dct: {why}")
        problem = triton_problem(device) if device.type == "cuda" else "CPU: plain-torch chunked form"
        cheb = "chunked" if problem else "triton"
        if has_cheb:
            reasons.append(f"cheb: {problem or 'Triton kernel on CUDA'}")
    return BackendPlan(dct if has_dct else None, cheb if has_cheb else None, "; ".join(reasons))


def mixer_core(
    v: torch.Tensor, z: torch.Tensor, gates: torch.Tensor, spec: SpectralBranches, plan: BackendPlan
) -> torch.Tensor:
    """silu(z) * sum_{beta,b} g_{t,beta,b} u^{beta,b}_t.

    v, z (B, T, H, P); gates (B|1, T|1, H, R, NB) in spec.branches order -> (B, T, H, P)."""
    if plan.dct == "reference" or plan.cheb == "reference":
        mixed = reference.reference_mix(v, spec.reference_kernels(v.shape[1]), gates)
        return F.silu(z) * mixed
    dct_out = None
    if plan.dct is not None:
        dct_out = chunked.dct_branch_linear_attention(
            v, spec.branch_gates(gates, "dct"), spec.dct_amplitude, spec.log_rho, spec.horizon,
            backend=plan.dct,
        )
    if plan.cheb == "triton":
        from bimix_bench.bimix.kernels.triton_cheb import cheb_window_gated

        return cheb_window_gated(v, spec.cheb_kernels(), spec.branch_gates(gates, "cheb"), dct_out, z)
    mixed = dct_out
    if plan.cheb == "chunked":
        cheb_out = chunked.cheb_branch_block_toeplitz(
            v, spec.cheb_kernels(), spec.branch_gates(gates, "cheb")
        )
        mixed = cheb_out if mixed is None else mixed + cheb_out
    return F.silu(z) * mixed
