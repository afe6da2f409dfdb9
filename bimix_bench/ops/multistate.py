"""Linear-attention recurrences over several past states at structured offsets.

    S_t = sum_j beta[t, j] S_{t - o_j} + k_t v_t^T       (terms with t - o_j < 0 left out)
    o_t = scale q_t^T S_t

with offsets o_0 < o_1 < ... (patterns: "pow2" o_j = 2^j, "sqrt" o_j = j^2 + 1). Writing
S = (I - B)^-1 (k v^T) with B strictly lower triangular, B[t, t - o_j] = beta[t, j], gives

    o = scale ((q k^T) * M) v,      M = (I - B)^-1   (lower triangular, unit diagonal)

the structured-operator form of Fagnou et al. (arXiv 2605.31367): attention is B = 0 with a
dense mask, a first-order recurrence has B on the first subdiagonal only.

Paths (shapes: q, k (B, T, H, K); v (B, T, H, V); beta (B, T, H, J) -> o (B, T, H, V)):
  multistate_recurrent  the reference: the recurrence token by token in plain torch, every state
                        kept (memory T H K V per row); O(T J K V) work, T sequential steps
  multistate_chunked    the default: chunk by chunk, a C x C triangular solve inside the chunk
                        and the earlier states read at the offsets that reach back past it;
                        exact, O(T (C^2 + C K V + J K V)) work, T / C sequential chunks
  multistate_parallel   M by one batched triangular solve, then a masked quadratic product:
                        O(T^3) for the solve and O(T^2 (K + V)) for the products per row and
                        head, exact, and differentiable through torch.linalg.solve_triangular.
                        Cubic in T: the whole structured operator at once, kept as a check of
                        the chunked form and for short sequences.
  choose_exact_form     what backend=auto runs: the cheaper of the two exact forms by a work
                        estimate weighted by a per-device measurement (chunked where unmeasured)
  multistate_step       one decode token: the states of the last max-offset positions live in a
                        ring buffer (memory o_max H K V per row: a literal 2^j pattern needs
                        states back to its largest offset, so decode memory grows with the
                        training context, not with the decoded length).
"""

from __future__ import annotations

import torch

PATTERNS = ("pow2", "sqrt")


def pattern_offsets(pattern: str, context: int) -> list[int]:
    """The offsets of `pattern` that can reach back inside a sequence of `context` tokens:
    pow2 -> 1, 2, 4, ...; sqrt -> 1, 2, 5, 10, 17, ... (j^2 + 1); all < context (at least [1])."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown offset pattern {pattern!r}; valid: {', '.join(PATTERNS)}")
    offset = (lambda j: 2**j) if pattern == "pow2" else (lambda j: j * j + 1)
    out, j = [], 0
    while offset(j) < max(2, context):
        out.append(offset(j))
        j += 1
    return out


def transfer_matrix(beta: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """B: (B, H, T, T) strictly lower triangular with B[t, t - o_j] = beta[t, j];
    beta (B, T, H, J)."""
    Bsz, T, H, J = beta.shape
    b = beta.permute(0, 2, 1, 3)  # (B, H, T, J)
    out = beta.new_zeros(Bsz, H, T, T)
    rows = torch.arange(T, device=beta.device)
    for j, o in enumerate(offsets):
        if o >= T:
            break
        out[:, :, rows[o:], rows[o:] - o] = b[:, :, o:, j]
    return out


def multistate_parallel(q, k, v, beta, offsets: list[int], scale: float) -> torch.Tensor:
    """Exact parallel form through M = (I - B)^-1 (see module docstring)."""
    acc = torch.promote_types(q.dtype, torch.float32)
    T = q.shape[1]
    eye = torch.eye(T, device=q.device, dtype=acc)
    system = eye - transfer_matrix(beta.to(acc), offsets)  # (B, H, T, T), unit lower triangular
    influence = torch.linalg.solve_triangular(system, eye.expand_as(system), upper=False,
                                              unitriangular=True)  # M: (B, H, T, T)
    qh, kh, vh = (t.to(acc).transpose(1, 2) for t in (q, k, v))  # (B, H, T, .)
    scores = (qh @ kh.transpose(-1, -2)) * influence  # (B, H, T, T), zero above the diagonal
    return (scale * scores @ vh).transpose(1, 2).to(v.dtype)  # (B, T, H, V)


def multistate_chunked(q, k, v, beta, offsets: list[int], scale: float, chunk: int = 64,
                       last_states: int = 0):
    """Exact, linear in T: chunk by chunk, the states S_t of the chunk are
    (I - B_cc)^-1 [k_t v_t^T + sum over offsets reaching before the chunk of beta S_{t - o}],
    with B_cc the chunk's own C x C transfer matrix and the earlier states read from the chunks
    already done. O(T (C^2 + C K V + J K V)) work, T / C sequential chunks, every state kept
    (T K V per row and head, and T J K V saved for the backward of the weights).
    With last_states = R > 0 it also returns the states of the last R positions
    (B, min(R, T), H, K, V), which decoding continues from."""
    acc = torch.promote_types(q.dtype, torch.float32)
    q, k, v, beta = (t.to(acc) for t in (q, k, v, beta))
    T, device = q.shape[1], q.device
    kv = k[..., :, None] * v[..., None, :]  # (B, T, H, K, V)
    offs = torch.tensor(offsets, device=device)  # (J,)
    done: list[torch.Tensor] = []  # states of finished chunks, each (B, C_i, H, K, V)
    outs = []
    for start in range(0, T, chunk):
        end = min(T, start + chunk)
        inputs = kv[:, start:end]  # (B, C, H, K, V)
        if done:
            past = torch.cat(done, dim=1) if len(done) > 1 else done[0]  # (B, start, H, K, V)
            source = torch.arange(start, end, device=device)[:, None] - offs[None, :]  # (C, J)
            earlier = ((source >= 0) & (source < start)).to(acc)  # reaches before the chunk
            weights = beta[:, start:end] * earlier[None, :, None, :]  # (B, C, H, J)
            for j in range(len(offsets)):
                rows = past[:, source[:, j].clamp(0, start - 1)]  # (B, C, H, K, V)
                inputs = inputs + weights[..., j, None, None] * rows
        local = transfer_matrix(beta[:, start:end], offsets)  # (B, H, C, C): within the chunk
        eye = torch.eye(end - start, device=device, dtype=acc)
        influence = torch.linalg.solve_triangular(eye - local, eye.expand_as(local), upper=False,
                                                  unitriangular=True)  # (B, H, C, C)
        states = torch.einsum("bhts,bshkv->bthkv", influence, inputs)  # (B, C, H, K, V)
        done.append(states)
        outs.append(scale * torch.einsum("bthk,bthkv->bthv", q[:, start:end], states))
    out = torch.cat(outs, dim=1).to(v.dtype)  # (B, T, H, V)
    if last_states > 0:
        return out, torch.cat(done, dim=1)[:, -last_states:]
    return out


def multistate_recurrent(q, k, v, beta, offsets: list[int], scale: float) -> torch.Tensor:
    """The reference: the recurrence itself, token by token, every state kept."""
    acc = torch.promote_types(q.dtype, torch.float32)
    q, k, v, beta = (t.to(acc) for t in (q, k, v, beta))
    T = q.shape[1]
    states, outputs = [], []
    for t in range(T):
        s = k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, K, V)
        for j, o in enumerate(offsets):
            if t - o >= 0:
                s = s + beta[:, t, :, j, None, None] * states[t - o]
        states.append(s)
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], s))
    return torch.stack(outputs, dim=1).to(v.dtype)  # (B, T, H, V)


# How much the chunked form's work costs per unit of the structured operator's, per device
# type, measured (docs/multistate.md: training steps of both forms on 2 CPU cores at contexts
# 64-2,048 and two state sizes; on one H100 at 64-2,048 and the `small` budget's 1K-4K). On
# CUDA the forms' times do not follow the work (the chunked form's T / C sequential chunks
# are bound by kernel launches): 16 there picks the operator at every length measured, right
# at 512-2,048 and where the chunked form ran out of memory, 1.15x slower at 64 tokens. A
# device type without a measurement keeps the chunked form.
CHUNKED_WORK_WEIGHT = {"cpu": 16.0, "cuda": 16.0}


def exact_form_work(T: int, K: int, V: int, offsets: list[int], chunk: int) -> dict[str, float]:
    """Estimated work per row, head and token of the two exact forms at context T:
    structured operator T (T / 3 + 2 (K + V)) (the solve and the masked products), chunked
    K V (C + J) (the chunk's product and the states read at the J offsets below T)."""
    reach = sum(1 for o in offsets if o < T)
    return {"parallel": T * (T / 3 + 2 * (K + V)), "chunked": K * V * (min(chunk, T) + reach)}


def choose_exact_form(device_type: str, T: int, K: int, V: int, offsets: list[int],
                      chunk: int) -> tuple[str, str]:
    """("parallel" | "chunked", why): the structured operator where the measured weight says it
    is cheaper on this device type, else the chunked form."""
    weight = CHUNKED_WORK_WEIGHT.get(device_type)
    if weight is None:
        return "chunked", (f"backend=auto on {device_type}: the chunked form (the two exact forms "
                           "were not timed against each other on this device type)")
    work = exact_form_work(T, K, V, offsets, chunk)
    pick = "parallel" if work["parallel"] < weight * work["chunked"] else "chunked"
    return pick, (f"backend=auto on {device_type} at context {T}: the "
                  f"{'structured operator' if pick == 'parallel' else 'chunked form'} (estimated "
                  f"work {work['parallel']:.0f} against {weight:g} x {work['chunked']:.0f})")


def ring_size(offsets: list[int]) -> int:
    return max(offsets)


def multistate_step(ring: torch.Tensor, position: torch.Tensor, q_t, k_t, v_t, beta_t,
                    offsets: list[int], scale: float) -> torch.Tensor:
    """One token at `position` (1,) int64 on the device. ring (B, R, H, K, V) holds S_s at slot
    s mod R for the last R positions; q_t, k_t (B, H, K), v_t (B, H, V), beta_t (B, H, J).
    Writes S_t into the ring in place and returns o_t (B, H, V). No host reads."""
    R = ring.shape[1]
    acc = ring.dtype
    s = k_t.to(acc)[..., :, None] * v_t.to(acc)[..., None, :]  # (B, H, K, V)
    for j, o in enumerate(offsets):
        slot = (position - o) % R  # (1,)
        reachable = (position >= o).to(acc)  # (1,): 0 before the sequence has o tokens
        past = ring.index_select(1, slot)[:, 0]  # (B, H, K, V)
        s = s + (beta_t[..., j].to(acc) * reachable)[..., None, None] * past
    ring.index_copy_(1, position % R, s[:, None])
    return (scale * torch.einsum("bhk,bhkv->bhv", q_t.to(acc), s)).to(v_t.dtype)
