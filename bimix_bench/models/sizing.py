"""Matched budgets: solve each model's width so non-embedding parameters hit the target.

Two steps, both exact counts of a real model (built on the meta device, so no memory is
touched even at the large budget):
1. d_model: the multiple of `lcm(2 * n_heads, spec.width_multiple)` whose model, with the
   budget's SwiGLU ratio, comes closest to the target (parameters grow monotonically in d).
2. ffn_hidden: parameters are linear in the SwiGLU hidden width (3 * d * L per unit), so solve it
   to land on the target, within [d, 4d] so the block keeps a sane shape. This removes the
   width granularity that would otherwise make small budgets miss +-5%.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch

from bimix_bench.errors import UsageError
from bimix_bench.models.backbone import Architecture, LanguageModel, count_parameters
from bimix_bench.models.mixer import ModelSpec
from bimix_bench.models.tokenizer import VOCAB_SIZE


def _count(arch: Architecture, spec: ModelSpec, options: dict[str, Any]) -> int:
    try:
        with torch.device("meta"):
            model = LanguageModel(arch, spec, options)
    except (NotImplementedError, RuntimeError):
        model = LanguageModel(arch, spec, options)  # a mixer whose init cannot run on meta
    return count_parameters(model)["non_embedding"]


def solve_architecture(
    spec: ModelSpec,
    options: dict[str, Any],
    target: int,
    n_layers: int,
    n_heads: int,
    ffn_ratio: float,
    max_seq_len: int,
    head: str = "lm",
    n_classes: int = 0,
    tolerance: float = 0.05,
    max_width: int = 16384,
    vocab_size: int = VOCAB_SIZE,
) -> tuple[Architecture, int]:
    """Returns the architecture and its exact non-embedding parameter count."""
    step = math.lcm(2 * n_heads, spec.width_multiple)

    def arch(d: int, ffn: int | None = None) -> Architecture:
        hidden = ffn if ffn is not None else max(1, round(ffn_ratio * d))
        return Architecture(d, n_layers, n_heads, hidden, max_seq_len, head, n_classes, vocab_size)

    @lru_cache(maxsize=None)
    def params(d: int, ffn: int | None = None) -> int:
        return _count(arch(d, ffn), spec, options)

    # Largest multiple of `step` whose parameter count stays <= target, then its neighbour.
    lo, hi = 1, max(1, max_width // step)
    if params(lo * step) > target:
        d = lo * step
    else:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if params(mid * step) <= target:
                lo = mid
            else:
                hi = mid - 1
        below, above = lo * step, (lo + 1) * step
        d = below if abs(params(below) - target) <= abs(params(above) - target) else above

    base_ffn = arch(d).ffn_hidden
    per_unit = params(d, base_ffn + 1) - params(d, base_ffn)
    ffn = base_ffn
    if per_unit > 0:
        ffn = base_ffn + round((target - params(d, base_ffn)) / per_unit)
        ffn = int(min(max(ffn, d), 4 * d))
    final = arch(d, ffn)
    count = params(d, ffn)
    error = (count - target) / target
    if abs(error) > tolerance:
        raise UsageError(
            f"cannot match {target:,} non-embedding parameters within {tolerance:.0%} "
            f"(best: d_model={d}, ffn={ffn}, {count:,} params, {error:+.1%}); "
            "change params.non_embedding or arch.n_layers"
        )
    return final, count
