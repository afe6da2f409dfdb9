"""Log-linear attention (Guo, Yang, Goel, Xing, Dao, Kim 2025, arXiv 2506.04761) over a
per-token scalar decay, as in Log-Linear Mamba-2:

    o_t = scale sum_{s <= t} lam[t, level(t, s)] exp(G_t - G_s) (q_t . k_s) v_s,   G = cumsum(g)
    level(t, s) = 0 if s == t, else 1 + floor(log2(t XOR s))

The levels cut the prefix into Fenwick-tree buckets (the token itself, then buckets of 1, 2,
4, ... earlier tokens); lam (B, T, H, L) weighs each bucket per token and head. With every lam
equal to 1 it is the first-order recurrence (Mamba-2's SSD).

Paths (q, k (B, T, G, K) with G groups shared by H / G heads; v (B, T, H, V); g (B, T, H);
lam (B, T, H, L) -> o (B, T, H, V)):
  log_linear_reference  the quadratic masked form in plain torch, in blocks of query rows:
                        O(T^2 (K + V)) work per row and head
  log_linear_chunked    the same sum in plain torch, in chunks of C tokens (a power of two):
                        the quadratic form inside each chunk, and for earlier chunks one K x V
                        state per chunk, summed per level; O(T (C (K + V) + L K V)) work
  log_linear_fla        fla's chunk_log_linear_attn (CUDA)
  fenwick_step          one decode token on L = level_count(max_len) states: O(log T) memory;
                        every level decays, the output reads them, then levels 0..p merge into
                        level p + 1, p the number of trailing ones of t (a binary counter's carry)
  fenwick_prefill       those states after a prompt, in one pass
"""

from __future__ import annotations

import torch

QUERY_BLOCK = 256  # query rows per block of the reference (bounds its (T, T) temporaries)


def level_count(length: int) -> int:
    """Levels that positions 0 .. length - 1 use: 1 + bit_length(length - 1)."""
    return 1 + max(0, length - 1).bit_length()


def levels(t: torch.Tensor, s: torch.Tensor, largest: int) -> torch.Tensor:
    """level(t, s) elementwise for int64 0 <= s <= t <= largest (broadcast): 0 where equal,
    else 1 + floor(log2(t XOR s)), computed exactly as the count of powers of two <= t XOR s."""
    x = torch.bitwise_xor(t, s)
    out = torch.zeros_like(x)
    for bit in range(max(1, largest.bit_length())):
        out = out + (x >= (1 << bit)).to(out.dtype)
    return out


def _expand_groups(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t if t.shape[2] == heads else t.repeat_interleave(heads // t.shape[2], dim=2)


def log_linear_reference(q, k, v, g, lam, scale: float) -> torch.Tensor:
    acc, out_dtype = torch.promote_types(v.dtype, torch.float32), v.dtype
    B, T, H, _ = v.shape
    q, k = (_expand_groups(t, H).to(acc) for t in (q, k))
    v, g, lam = v.to(acc), g.to(acc), lam.to(acc)
    G = torch.cumsum(g, dim=1)  # (B, T, H)
    s = torch.arange(T, device=v.device)
    out = []
    for start in range(0, T, QUERY_BLOCK):
        t = torch.arange(start, min(T, start + QUERY_BLOCK), device=v.device)
        causal = s[None, :] <= t[:, None]  # (Tb, T)
        gap = (G[:, t, None, :] - G[:, None, :, :]).masked_fill(~causal[None, :, :, None], float("-inf"))
        level = levels(t[:, None], s[None, :], T).clamp(max=lam.shape[-1] - 1)  # (Tb, T)
        one_hot = (level[..., None] == torch.arange(lam.shape[-1], device=v.device)).to(acc)  # (Tb, T, L)
        weight = torch.einsum("bthl,tsl->btsh", lam[:, t], one_hot)  # lam[t, level(t, s)]
        scores = torch.einsum("bthk,bshk->btsh", q[:, t], k) * torch.exp(gap) * weight
        out.append(scale * torch.einsum("btsh,bshv->bthv", scores, v))
    return torch.cat(out, dim=1).to(out_dtype)  # (B, T, H, V)


def log_linear_chunked(q, k, v, g, lam, scale: float, chunk: int = 64) -> torch.Tensor:
    """log_linear_reference's sum, chunk by chunk. With t = cC + i and s = c'C + j (C a power
    of two): inside a chunk t XOR s = i XOR j, so level(t, s) = level(i, j); for an earlier
    chunk c' < c the high bits differ, so level(t, s) = log2(C) + level(c, c'), one level for
    the whole chunk pair. Each earlier chunk is therefore read through its state
    U_c' = sum_j exp(G_end(c') - G_j) k_j v_j^T, decayed to the end of chunk c - 1 and summed per
    level; the query weighs each level's sum by lam[t, level]."""
    if chunk < 1 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two, not {chunk}")
    acc, out_dtype = torch.promote_types(v.dtype, torch.float32), v.dtype
    B, T, H, _ = v.shape
    n_levels = lam.shape[-1]
    q, k = (_expand_groups(t, H).to(acc) for t in (q, k))
    v, g, lam = v.to(acc), g.to(acc), lam.to(acc)
    C = min(chunk, 1 << max(0, T - 1).bit_length())  # a short sequence is one chunk
    pad = -T % C
    if pad:  # zero keys, values and decays after the end change no earlier output
        # F.pad's pairs run from the last dimension back; the last pair pads dimension 1.
        q, k, v, g, lam = (torch.nn.functional.pad(t, (0,) * (2 * t.dim() - 3) + (pad,))
                           for t in (q, k, v, g, lam))
    n = (T + pad) // C

    def by_chunk(t):  # (B, n C, H, ...) -> (B, n, H, C, ...)
        return t.unflatten(1, (n, C)).transpose(2, 3)

    qc, kc, vc, lc = by_chunk(q), by_chunk(k), by_chunk(v), by_chunk(lam)  # (B, n, H, C, *)
    G = by_chunk(torch.cumsum(g, dim=1))  # (B, n, H, C)
    i = torch.arange(C, device=v.device)
    # Inside each chunk: the quadratic form.
    causal = i[None, :] <= i[:, None]  # (C, C): s <= t
    gap = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf"))
    level = levels(i[:, None], i[None, :], C).clamp(max=n_levels - 1)  # (C, C)
    weight = lc[..., i[:, None], level]  # (B, n, H, C, C): lam[t, level(t, s)]
    scores = (qc @ kc.transpose(-1, -2)) * torch.exp(gap) * weight
    out = scores @ vc  # (B, n, H, C, V)
    if n > 1:
        # Earlier chunks: U_c' (B, n, H, K, V), decayed from each chunk's end to the end of the
        # chunk before the query's, then summed per level.
        end = G[..., -1]  # (B, n, H)
        states = (kc * torch.exp(end[..., None] - G)[..., None]).transpose(-1, -2) @ vc
        before = torch.cat([G[:, :1, :, 0], end[:, :-1]], dim=1)  # (B, n, H): G at cC - 1
        c = torch.arange(n, device=v.device)
        earlier = c[None, :] < c[:, None]  # (n, n): c' < c
        chunk_gap = (before.transpose(1, 2)[..., :, None] - end.transpose(1, 2)[..., None, :])
        chunk_decay = torch.exp(chunk_gap.masked_fill(~earlier, float("-inf")))  # (B, H, n, n)
        chunk_bits = C.bit_length() - 1  # log2(C): the levels a pair inside one chunk can have
        chunk_level = (chunk_bits + levels(c[:, None], c[None, :], n)).clamp(max=n_levels - 1)
        into_chunk = torch.exp(G - before[..., None])[..., None]  # (B, n, H, C, 1)
        # Chunk pairs reach levels 1 .. bit_length(n - 1) (pair (2^(l-1), 0) has level l): the
        # levels in use, known on the host, without reading chunk_level back from the device.
        in_use = sorted({min(chunk_bits + lv, n_levels - 1)
                         for lv in range(1, (n - 1).bit_length() + 1)})
        for lv in in_use:
            mix = chunk_decay * (chunk_level == lv)  # (B, H, n, n)
            summed = torch.einsum("bhcd,bdhkv->bchkv", mix, states)  # (B, n, H, K, V)
            out = out + lc[..., lv, None] * into_chunk * (qc @ summed)
    out = (scale * out).transpose(2, 3).flatten(1, 2)[:, :T]  # (B, T, H, V)
    return out.to(out_dtype)


def log_linear_fla(q, k, v, g, lam, scale: float) -> torch.Tensor:
    from fla.ops.log_linear_attn import chunk_log_linear_attn

    o, _ = chunk_log_linear_attn(q, k.to(q.dtype), v.to(q.dtype), g.float(),
                                 lam[..., : level_count(v.shape[1])].float(), scale=scale)
    return o.to(v.dtype)


def fenwick_prefill(k, v, g, n_levels: int) -> torch.Tensor:
    """The decode states after the prompt (positions 0 .. T-1), as seen from position T:
    level l holds sum over s with level(T, s) = l of exp(G_{T-1} - G_s) k_s v_s^T.
    -> (B, n_levels, H, K, V) in fp32 (fp64 for fp64)."""
    acc = torch.promote_types(v.dtype, torch.float32)
    B, T, H, _ = v.shape
    k, v, g = _expand_groups(k, H).to(acc), v.to(acc), g.to(acc)
    G = torch.cumsum(g, dim=1)  # (B, T, H)
    s = torch.arange(T, device=v.device)
    level = levels(torch.full_like(s, T), s, T)  # (T,), all >= 1
    one_hot = (level[None, :] == torch.arange(n_levels, device=v.device)[:, None]).to(acc)  # (L, T)
    decay = torch.exp(G[:, -1:, :] - G)  # (B, T, H)
    return torch.einsum("ls,bsh,bshk,bshv->blhkv", one_hot, decay, k, v)


def fenwick_step(states: torch.Tensor, position: torch.Tensor, q_t, k_t, v_t, g_t, lam_t,
                 scale: float) -> torch.Tensor:
    """One token at `position` (1,) int64 on the device. states (B, L, H, K, V) hold, per level,
    the earlier tokens' decayed k v^T as seen from this position; q_t, k_t (B, G, K), v_t
    (B, H, V), g_t (B, H), lam_t (B, H, L'). Updates the states in place for the next position
    and returns o_t (B, H, V). No host reads."""
    B, L, H = states.shape[:3]
    acc = states.dtype
    q_t, k_t = (_expand_groups(t[:, None], H)[:, 0].to(acc) for t in (q_t, k_t))
    decayed = states * torch.exp(g_t.to(acc))[:, None, :, None, None]
    current = (k_t[..., :, None] * v_t.to(acc)[..., None, :])[:, None]  # (B, 1, H, K, V)
    lv = torch.arange(L, device=states.device)
    level0 = (lv == 0)[None, :, None, None, None]
    full = torch.where(level0, current, decayed)  # level 0: the token itself
    weights = lam_t[..., :L].to(acc)  # (B, H, L)
    o_t = scale * torch.einsum("bhk,blhkv,bhl->bhv", q_t, full, weights)
    # The carry to position t + 1: levels 0 .. p join level p + 1, p = trailing ones of t.
    nxt = position + 1
    p = torch.log2((nxt & -nxt).to(torch.float32)).to(torch.long)  # (1,)
    into = (lv <= p)[None, :, None, None, None]
    merged = (full * into).sum(1, keepdim=True)  # (B, 1, H, K, V)
    target = (lv == p + 1)[None, :, None, None, None]
    states.copy_(torch.where(into, torch.zeros_like(full), torch.where(target, merged, full)))
    return o_t.to(v_t.dtype)
