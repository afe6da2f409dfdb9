"""HSA's chunk retrieval through torch flex_attention: the fast path beside retrieve_gather
(bimix_bench/ops/hsa.py), with the same arguments and result.

One flex_attention call over the flattened chunk memory, with each query repeated once per
selection rank j = 0 .. k-1: a block mask lets row (j, t) of head h see only the S keys of its
j-th chosen chunk, so each row is that chunk's own softmax, and the k rows of a query are mixed
by the selection weights exactly as the reference mixes them. A pick that is not visible has
weight 0 (select_chunks) but still names a real chunk, so no row is ever fully masked. Only
the chosen chunks' key blocks are visited: the work is O(Tq k S Dh), like the gather form,
without materialising the gathered keys.

On CUDA the kernel and the block masks are compiled (once per shape); elsewhere flex_attention
runs torch's eager implementation, which is what the CPU tests compare with the reference.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import torch

from bimix_bench.errors import UsageError


@lru_cache(maxsize=2)
def _kernels(compiled: bool):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if compiled:
        return torch.compile(flex_attention, dynamic=False), create_block_mask
    return flex_attention, create_block_mask


def retrieve_flex(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, idx: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """q (B, H, Tq, Dh); keys, values (B, H, C, S, Dh); idx, weights (B, H, Tq, k)
    -> (B, H, Tq, Dh): sum_j weights[..., j] softmax(q K_{idx_j}^T / sqrt(Dh)) V_{idx_j}."""
    B, H, C, S, Dh = keys.shape
    Tq, k = q.shape[2], idx.shape[-1]
    compiled = q.is_cuda
    if not compiled:
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, keys, values, weights)):
            raise UsageError("models.hsa.backend=flex trains only on CUDA (flex_attention has no "
                             "CPU backward); use backend=gather or dense here")
        q, keys, values = q.detach(), keys.detach(), values.detach()  # it refuses them otherwise
    attend, block_mask_for = _kernels(compiled)
    rows = q.unsqueeze(2).expand(B, H, k, Tq, Dh).reshape(B, H, k * Tq, Dh)  # row j*Tq + t: rank j
    chunk_of_row = idx.transpose(-1, -2).reshape(B, H, k * Tq).contiguous()  # (B, H, k*Tq)

    def in_chosen_chunk(b, h, q_idx, kv_idx):
        return kv_idx // S == chunk_of_row[b, h, q_idx]

    mask = block_mask_for(in_chosen_chunk, B, H, k * Tq, C * S, device=q.device, _compile=compiled)
    flat_k = keys.reshape(B, H, C * S, Dh).to(q.dtype)  # (B, H, C*S, Dh)
    flat_v = values.reshape(B, H, C * S, Dh).to(q.dtype)
    with warnings.catch_warnings():  # the eager path warns that it is not compiled
        warnings.simplefilter("ignore", UserWarning)
        per_chunk = attend(rows, flat_k, flat_v, block_mask=mask, scale=1.0 / math.sqrt(Dh))
    compute = torch.promote_types(q.dtype, torch.float32)
    per_chunk = per_chunk.reshape(B, H, k, Tq, Dh).to(compute)
    return torch.einsum("bhtk,bhktd->bhtd", weights.to(compute), per_chunk).to(q.dtype)
