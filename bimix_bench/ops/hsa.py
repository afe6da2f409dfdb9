"""Hierarchical sparse attention (HSA): the math, in plain torch.

Two parts, used by baselines/hsa.py:

Sliding-window attention. Query t sees keys t - W + 1 .. t (the causal mask of
bimix_bench.ops.attention, cut to the window) through torch SDPA with a band mask; decoding keeps
the last W keys and values in a ring (WindowCache) and attends with attention_over_cache.

Retrieval over a chunk memory. The context is cut into chunks of S tokens; chunk c (positions
cS .. cS + S - 1) has a landmark (B, H, Dh) and keys and values (B, H, S, Dh) per head
(ChunkMemory). Query t may select chunk c only when the chunk lies entirely before its window:
cS + S - 1 <= t - W (chunk_visibility). It scores the visible landmarks, keeps the top k
(select_chunks), attends to each chosen chunk with a softmax of its own, and mixes the k results
with weights w = softmax over the k landmark scores:

    o_t = sum_{i in top-k(t)} w_{t,i} softmax(q_t K_i^T / sqrt(Dh)) V_i

so the weights carry the gradient into the landmarks. Two exact forms of the same sum:
  retrieve_gather  gathers the k chosen chunks per query: O(Tq k S Dh) memory, what decode runs
  retrieve_dense   scores every chunk, scales each chunk's softmax by its weight (0 for the
                   non-chosen) and reads all values in one product: O(Tq C S) memory, the
                   cheaper form at training lengths (dense_is_cheaper decides)
The flex_attention path (hsa_flex.retrieve_flex) sits beside these two and is checked against
retrieve_gather.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bimix_bench.ops.attention import causal_mask


# --- sliding-window attention -----------------------------------------------------------------
def sliding_window_mask(t_query: int, t_key: int, window: int, device: torch.device
                        ) -> torch.Tensor:
    """(Tq, Tk) bool: the end-aligned causal mask, limited to the last `window` keys per query."""
    rows = torch.arange(t_query, device=device)[:, None] + (t_key - t_query)
    near = rows - torch.arange(t_key, device=device)[None, :] < window
    return causal_mask(t_query, t_key, device) & near


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int
                     ) -> torch.Tensor:
    """q, k, v: (B, H, T, Dh) -> (B, H, T, Dh); query t attends to keys t - window + 1 .. t."""
    mask = sliding_window_mask(q.shape[-2], k.shape[-2], window, q.device)  # (T, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@dataclass
class WindowCache:
    """Keys and values of the last W positions, position p in slot p mod W. The keys carry their
    rotary phase already, so the order of the slots does not matter to attention."""

    k: torch.Tensor  # (B, H, W, Dh)
    v: torch.Tensor  # (B, H, W, Dh)

    @classmethod
    def empty(cls, batch_size: int, n_heads: int, window: int, head_dim: int,
              device: torch.device, dtype: torch.dtype) -> "WindowCache":
        shape = (batch_size, n_heads, window, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype),
                   torch.zeros(shape, device=device, dtype=dtype))

    @property
    def window(self) -> int:
        return self.k.shape[2]

    def fill(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """The prompt's keys and values, k, v: (B, H, T, Dh) at positions 0 .. T - 1."""
        T = k.shape[2]
        kept = min(T, self.window)
        slots = torch.arange(T - kept, T, device=k.device) % self.window  # (kept,)
        self.k.index_copy_(2, slots, k[:, :, T - kept:].to(self.k.dtype))
        self.v.index_copy_(2, slots, v[:, :, T - kept:].to(self.v.dtype))

    def write(self, k_t: torch.Tensor, v_t: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Store k_t, v_t: (B, H, 1, Dh) of the token at `position` ((1,) int64 on the device);
        returns the (W,) bool mask of the slots that token sees (all of them from W - 1 on)."""
        slot = position % self.window
        self.k.index_copy_(2, slot, k_t.to(self.k.dtype))
        self.v.index_copy_(2, slot, v_t.to(self.v.dtype))
        return torch.arange(self.window, device=self.k.device) <= position


# --- chunk memory and retrieval ----------------------------------------------------------------
@dataclass
class ChunkMemory:
    """What the chunk encoder made of C chunks of S tokens, per head."""

    landmarks: torch.Tensor  # (B, H, C, Dh)
    keys: torch.Tensor  # (B, H, C, S, Dh)
    values: torch.Tensor  # (B, H, C, S, Dh)

    @classmethod
    def empty(cls, batch_size: int, n_heads: int, n_chunks: int, chunk_size: int, head_dim: int,
              device: torch.device, dtype: torch.dtype) -> "ChunkMemory":
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(batch_size, n_heads, n_chunks, *shape, device=device, dtype=dtype)

        return cls(zeros(head_dim), zeros(chunk_size, head_dim), zeros(chunk_size, head_dim))

    @property
    def n_chunks(self) -> int:
        return self.landmarks.shape[2]

    def write(self, slots: torch.Tensor, chunks: "ChunkMemory") -> None:
        """Store `chunks` (n of them) at chunk slots `slots`: (n,) int64, in place."""
        for mine, theirs in ((self.landmarks, chunks.landmarks), (self.keys, chunks.keys),
                             (self.values, chunks.values)):
            mine.index_copy_(2, slots, theirs.to(mine.dtype))


def visible_chunk_count(length: int, chunk_size: int, window: int) -> int:
    """How many chunks the last query of a sequence of `length` tokens may select."""
    return max(0, (length - window) // chunk_size)


def chunk_visibility(positions: torch.Tensor, n_chunks: int, chunk_size: int, window: int
                     ) -> torch.Tensor:
    """positions: (Tq,) int64 -> (Tq, C) bool, True where the chunk ends before the query's
    window starts (cS + S - 1 <= t - W): whole, in the past and not local."""
    last = torch.arange(n_chunks, device=positions.device) * chunk_size + chunk_size - 1  # (C,)
    return last[None, :] <= positions[:, None] - window


def select_chunks(scores: torch.Tensor, visible: torch.Tensor, k: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, H, Tq, C), visible (Tq, C) -> the top-k visible chunks per query and head,
    idx (B, H, Tq, k) int64, and their mixing weights (B, H, Tq, k): the softmax over the chosen
    scores, 0 for a pick that is not visible (fewer than k visible chunks)."""
    top, idx = scores.masked_fill(~visible, float("-inf")).topk(k, dim=-1)  # (B, H, Tq, k)
    chosen = top > float("-inf")
    logits = top.masked_fill(~chosen, torch.finfo(top.dtype).min)  # finite: no NaN anywhere
    return idx, logits.softmax(dim=-1) * chosen


def retrieve_gather(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, idx: torch.Tensor,
                    weights: torch.Tensor) -> torch.Tensor:
    """The reference: gather each query's chosen chunks, softmax within each, mix by weight.
    q (B, H, Tq, Dh); keys, values (B, H, C, S, Dh); idx, weights (B, H, Tq, k) -> (B, H, Tq, Dh).
    Computed in float32 (float64 stays float64)."""
    B, H = q.shape[:2]
    compute = torch.promote_types(q.dtype, torch.float32)
    batch = torch.arange(B, device=q.device)[:, None, None, None]
    head = torch.arange(H, device=q.device)[None, :, None, None]
    k_sel = keys[batch, head, idx].to(compute)  # (B, H, Tq, k, S, Dh)
    v_sel = values[batch, head, idx].to(compute)
    scores = torch.einsum("bhtd,bhtksd->bhtks", q.to(compute), k_sel) / math.sqrt(q.shape[-1])
    per_chunk = torch.einsum("bhtks,bhtksd->bhtkd", scores.softmax(dim=-1), v_sel)
    return torch.einsum("bhtk,bhtkd->bhtd", weights.to(compute), per_chunk).to(q.dtype)


def retrieve_dense(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, idx: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """retrieve_gather's sum, with every chunk scored and the non-chosen ones weighted 0 (exactly:
    their keys and values cannot change the output). Same shapes and precision. Each chunk's
    softmax is scaled by its mixing weight before the values are read, so the read is one product
    over all C S keys and no per-chunk output (B, H, Tq, C, Dh) is ever formed."""
    compute = torch.promote_types(q.dtype, torch.float32)
    B, H, Tq, _ = q.shape
    C, S = keys.shape[2], keys.shape[3]
    flat_keys = keys.to(compute).reshape(B, H, C * S, -1)  # (B, H, C S, Dh)
    flat_values = values.to(compute).reshape(B, H, C * S, -1)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q.to(compute) @ flat_keys.transpose(-1, -2) * scale).view(B, H, Tq, C, S)
    dense = torch.zeros(B, H, Tq, C, device=q.device, dtype=compute)
    dense = dense.scatter(-1, idx, weights.to(compute))  # (B, H, Tq, C): k-hot mixing weights
    mix = (scores.softmax(dim=-1) * dense[..., None]).view(B, H, Tq, C * S)
    return (mix @ flat_values).to(q.dtype)  # (B, H, Tq, Dh)


def dense_is_cheaper(n_chunks: int, k: int, chunk_size: int, head_dim: int) -> bool:
    """Whether retrieve_dense holds fewer elements per query (C S scores and C S weighted
    probabilities) than retrieve_gather (k S Dh keys and values each, and k S scores)."""
    return 2 * n_chunks * chunk_size <= k * chunk_size * (2 * head_dim + 1)
