"""Exact solver for BiMix's TV-regularized, box-constrained gate maps.

For a gate vector s in R^n (one branch's n frequency bands) the gate map is

    G*(s) = argmin_{G in [lo, hi]^n}  1/2 ||G - s||^2 + lam * sum_b |G_{b+1} - G_b|,

and it equals clip(prox_{lam TV}(s), lo, hi), where prox_{lam TV} is unconstrained 1-D
total-variation denoising.

Why clipping is exact (proof sketch). Let x = prox_{lam TV}(s). Its optimality condition is
x - s + lam D^T u = 0 for some u in the subdifferential of ||.||_1 at Dx (D = forward
difference: u_k = sign(x_{k+1} - x_k) where that difference is non-zero, u_k in [-1, 1]
otherwise). Put G = clip(x, lo, hi). Clipping with the same box in every coordinate is
monotone, so every difference of G is either zero or has the sign of the corresponding
difference of x; hence the same u is a subgradient of ||.||_1 at DG. Set mu = x - G: it is
zero where lo < x < hi, positive where G sits on hi and negative where G sits on lo, i.e. mu
lies in the normal cone of the box at G. Then G - s + lam D^T u + mu = x - s + lam D^T u = 0,
which is the KKT system of the box-constrained problem; the objective is strictly convex, so
G is its unique minimizer.

Algorithm. prox_{lam TV} is solved exactly by dynamic programming on the derivative of the
forward messages (a direct method, no iterations to convergence):
    f_1(z) = z - s_1,    f_k(z) = (z - s_k) + clip(f_{k-1}(z), -lam, lam).
Each f_k is continuous, piecewise linear and strictly increasing (slope >= 1). Let b-_k, b+_k
solve f_k = -lam and f_k = +lam. The last value solves f_n(x_n) = 0 and the backward pass is
x_k = clip(x_{k+1}, b-_k, b+_k): minimizing F_k(x_k) + lam |x_{k+1} - x_k| over x_k (F_k the
message whose derivative is f_k) gives exactly that clip. The kinks of f_k are the earlier
thresholds b+-_j (j < k), so we keep f_k's value at every kink (updated by the recursion
itself, O(n) per step); comparing those values with the target tells which linear piece
holds the root, and that piece is solved in closed form. Rows are independent, so
everything is vectorised over all leading dimensions on the input's device; Python loops
only over the n bands. Cost O(n^2) per row, computed in float64 (a few elementwise ops per
band, so the wider type costs little) and returned in the input dtype.

Gradients. The map is piecewise linear. Inside one fused segment (a maximal run that the
backward pass copied, x_k = x_{k+1} with x_{k+1} strictly inside (b-_k, b+_k)) of length L,
the value is v = mean(s_seg) - lam (u_left - u_right) / L, where u_left / u_right are the
dual signs (+-1) at the segment's outer boundaries (0 at the ends of the vector). Hence
    d x / d s   = P  (average within each segment; P symmetric),
    d x / d lam = -P D^T u,
and the box clip multiplies by the indicator of lo < G < hi. Backward therefore masks the
incoming gradient where G is on the box, averages it within segments (grad w.r.t. s), and
for lam takes -<grad_s, D^T u> per row. At ties (a boundary exactly at a kink) the map is not
differentiable; the solver then treats the boundary as a break, which is one of the one-sided
derivatives (with lam = 0 this gives the identity Jacobian, as it should).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["tv_prox", "tv_box_prox", "total_variation", "piecewise_segments"]

_WORK_DTYPE = torch.float64


# Internal layout is band-major, (n, R): every per-band slice is one contiguous vector over
# rows, which keeps the elementwise work vectorised on CPU and coalesced on GPU.


def _message_roots(
    thresholds: Tensor, values: Tensor, tail_sums: Tensor, k: int, lam: Tensor, targets: Tensor
) -> Tensor:
    """Solve f_k(z) = t for each target t, exactly.

    thresholds: (k-1, 2, R) the kinks b-_j ([:, 0]) and b+_j ([:, 1]) of f_k for j < k;
    values: (k-1, 2, R) f_k at those kinks; tail_sums: (k, R) with tail_sums[m] =
    s_{m+1} + ... + s_k; lam: (R,); targets: (T, R). Returns (T, R).

    On each linear piece f_k(z) = (k - m) z - (s_{m+1} + ... + s_k) + c, where m is the last
    earlier step whose clip saturates at z (c = -lam left of its interval, +lam right of it;
    m = 0 and c = 0 when none does). f_k is increasing, so comparing its values at the kinks
    with t tells on which side of every interval the root lies, which picks the piece.
    """
    if k == 1:  # f_1(z) = z - s_1
        return targets + tail_sums[0]
    left = values[:, None, 0] > targets  # (k-1, T, R): root < b-_j
    right = values[:, None, 1] < targets  # (k-1, T, R): root > b+_j
    steps = torch.arange(1, k, device=targets.device).view(-1, 1, 1)
    m = ((left | right) * steps).amax(0)  # (T, R): last saturated step, 0 if none
    left_at_m = left.gather(0, (m - 1).clamp(min=0).unsqueeze(0)).squeeze(0)  # (T, R)
    c = torch.where(left_at_m, -lam, lam)
    c = torch.where(m == 0, torch.zeros_like(c), c)
    seg_sum = tail_sums.gather(0, m)  # (T, R): s_{m+1} + ... + s_k
    return (targets - c + seg_sum) / (k - m).to(targets.dtype)


def _advance_values(values: Tensor, thresholds: Tensor, s_k: Tensor, lam: Tensor) -> Tensor:
    """f_{k-1} -> f_k at the kinks: f_k(z) = (z - s_k) + clip(f_{k-1}(z), -lam, lam).

    values, thresholds: (j, 2, R); s_k, lam: (R,).
    """
    return thresholds - s_k + torch.minimum(torch.maximum(values, -lam), lam)


def _advance_tail_sums(tail_sums: Tensor, s: Tensor, k: int) -> None:
    """In place: sums ending at band k-1 become sums ending at band k. tail_sums, s: (n, R)."""
    tail_sums[: k - 1] += s[k - 1]
    tail_sums[k - 1] = s[k - 1]


def _tv_prox_bands(s: Tensor, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exact 1-D TV denoising of every row, band-major.

    s: (n, R) float64, lam: (R,) float64 >= 0.
    Returns x (n, R) the prox, fused (n-1, R) bool (x_k copied from x_{k+1}), and dual
    (n-1, R) the dual sign u_k (+-1) at every non-fused boundary, 0 where fused.
    """
    n, rows = s.shape
    # tail_sums[m] = s_{m+1} + ... + s_k for the current k, summed forward (no differences of
    # prefix sums, so lam = 0 returns s bit for bit and no cancellation against earlier bands).
    tail_sums = s.new_empty(n, rows)
    # thresholds[k-1, 0] = b-_k (f_k = -lam), thresholds[k-1, 1] = b+_k (f_k = +lam)
    thresholds = s.new_empty(n - 1, 2, rows)
    values = s.new_empty(n - 1, 2, rows)  # the current f_k at each threshold
    pm_lam = torch.stack([-lam, lam])  # (2, R)

    for k in range(1, n):
        _advance_tail_sums(tail_sums, s, k)
        if k > 1:
            values[: k - 1] = _advance_values(values[: k - 1], thresholds[: k - 1], s[k - 1], lam)
        roots = _message_roots(thresholds[: k - 1], values[: k - 1], tail_sums[:k], k, lam, pm_lam)
        thresholds[k - 1, 0] = roots[0]
        thresholds[k - 1, 1] = torch.maximum(roots[1], roots[0])  # b- <= b+ despite rounding
        values[k - 1] = pm_lam
    _advance_tail_sums(tail_sums, s, n)
    if n > 1:
        values = _advance_values(values, thresholds, s[n - 1], lam)
    last = _message_roots(thresholds, values, tail_sums, n, lam, torch.zeros_like(lam)[None])

    x = s.new_empty(n, rows)
    x[n - 1] = last[0]
    fused = torch.zeros(n - 1, rows, dtype=torch.bool, device=s.device)
    dual = s.new_zeros(n - 1, rows)
    for j in range(n - 2, -1, -1):  # backward pass: x_j = clip(x_{j+1}, b-_j, b+_j)
        nxt, b_lo, b_hi = x[j + 1], thresholds[j, 0], thresholds[j, 1]
        x[j] = torch.minimum(torch.maximum(nxt, b_lo), b_hi)
        fused[j] = (nxt > b_lo) & (nxt < b_hi)
        dual[j] = torch.where(fused[j], 0.0, torch.where(nxt >= b_hi, 1.0, -1.0))
    return x, fused, dual


def _segment_average(g: Tensor, fused: Tensor) -> Tensor:
    """Replace each entry of g (n, R) by the mean of g over its fused segment ((n-1, R) mask)."""
    # fused[:1] would be empty for a single band (n - 1 = 0): build the first row explicitly.
    starts = torch.cat([fused.new_zeros(1, fused.shape[1]), ~fused], dim=0)  # (n, R)
    seg = starts.long().cumsum(dim=0)  # (n, R): segment id of each band
    sums = torch.zeros_like(g).scatter_add_(0, seg, g)
    counts = torch.zeros_like(g).scatter_add_(0, seg, torch.ones_like(g))
    return (sums / counts.clamp(min=1)).gather(0, seg)


class _TVBoxProx(torch.autograd.Function):
    """clip(prox_{lam TV}(s), lo, hi) along the last axis, with its exact (a.e.) Jacobian."""

    @staticmethod
    def forward(ctx, s: Tensor, lam: Tensor, lo: float, hi: float) -> Tensor:
        # s: (..., n); lam: (...) already broadcast to s.shape[:-1]
        n = s.shape[-1]
        s_bands = s.detach().reshape(-1, n).to(_WORK_DTYPE).T.contiguous()  # (n, R)
        lam_rows = lam.detach().reshape(-1).to(_WORK_DTYPE)  # (R,)
        x, fused, dual = _tv_prox_bands(s_bands, lam_rows)
        g = x.clamp(lo, hi).T.to(s.dtype).reshape(s.shape)  # (..., n)
        free = (g > lo) & (g < hi)  # gradient flows only off the box
        ctx.save_for_backward(fused, dual, free)
        ctx.lam_shape, ctx.lam_dtype = lam.shape, lam.dtype
        return g

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        fused, dual, free = ctx.saved_tensors
        n = grad_out.shape[-1]
        masked = (grad_out * free).reshape(-1, n).to(_WORK_DTYPE).T  # (n, R): M g
        grad_bands = _segment_average(masked, fused)  # (n, R): P M g
        grad_s = grad_bands.T.to(grad_out.dtype).reshape(grad_out.shape)
        grad_lam = None
        if ctx.needs_input_grad[1]:
            zero = dual.new_zeros(1, dual.shape[1])  # not dual[:1]: empty for one band
            dt_u = torch.cat([zero, dual]) - torch.cat([dual, zero])  # (n, R): D^T u
            grad_lam = -(grad_bands * dt_u).sum(0)  # (R,)
            grad_lam = grad_lam.to(ctx.lam_dtype).reshape(ctx.lam_shape)
        return grad_s, grad_lam, None, None


def _check_gates(s: Tensor) -> None:
    if not isinstance(s, Tensor) or not s.is_floating_point():
        raise TypeError(f"s must be a floating-point tensor, got {getattr(s, 'dtype', type(s))}")
    if s.dim() == 0 or s.shape[-1] == 0:
        raise ValueError(f"s needs a non-empty last (band) axis, got shape {tuple(s.shape)}")


def _broadcast_lam(s: Tensor, lam: float | Tensor) -> Tensor:
    """lam as a tensor broadcast to s.shape[:-1] (autograd-tracked, so per-row grads reduce)."""
    if isinstance(lam, Tensor):
        lam_t = lam.to(device=s.device)
        if not lam_t.is_floating_point():
            lam_t = lam_t.to(_WORK_DTYPE)
    else:  # a Python number keeps full precision whatever the dtype of s
        lam_t = torch.full((), float(lam), dtype=_WORK_DTYPE, device=s.device)
    try:
        return lam_t.expand(s.shape[:-1])
    except RuntimeError as err:
        raise ValueError(
            f"lam of shape {tuple(lam_t.shape)} does not broadcast to the rows of s, "
            f"shape {tuple(s.shape[:-1])}"
        ) from err


def _check_finite(s: Tensor, lam: Tensor) -> None:
    # One host sync for all three checks.
    bad_s, bad_lam, negative_lam = torch.stack(
        [~torch.isfinite(s).all(), ~torch.isfinite(lam).all(), (lam < 0).any()]
    ).tolist()
    if bad_s:
        raise ValueError("s contains NaN or inf; the gate solver needs finite inputs")
    if bad_lam:
        raise ValueError("lam contains NaN or inf; it must be finite")
    if negative_lam:
        raise ValueError("lam must be >= 0 (it weighs a total-variation penalty)")


def tv_box_prox(s: Tensor, lam: float | Tensor, lo: float = 0.0, hi: float = 1.0,
                check_finite: bool = True) -> Tensor:
    """argmin_{G in [lo, hi]^n} 1/2 ||G - s||^2 + lam * TV(G) along the last axis, exactly.

    s: (..., n) -> (..., n) in s's dtype and device. lam: a scalar or a tensor broadcastable
    to s.shape[:-1] (one lam per row). Differentiable w.r.t. s and lam (not twice).
    check_finite=False skips the NaN / inf / negative-lam checks, which read a value back from
    the device: the training step uses it (a NaN there surfaces as a diverged loss anyway).
    """
    lo, hi = float(lo), float(hi)
    if not lo <= hi:
        raise ValueError(f"empty box: lo={lo} > hi={hi}")
    _check_gates(s)
    lam_b = _broadcast_lam(s, lam)
    if check_finite:
        _check_finite(s, lam_b)
    return _TVBoxProx.apply(s, lam_b, lo, hi)


def tv_prox(s: Tensor, lam: float | Tensor) -> Tensor:
    """Exact 1-D total-variation denoising along the last axis: (..., n) -> (..., n).

    argmin_x 1/2 ||x - s||^2 + lam * sum_b |x_{b+1} - x_b|, per row; lam as in tv_box_prox.
    """
    return tv_box_prox(s, lam, lo=float("-inf"), hi=float("inf"))


def total_variation(g: Tensor) -> Tensor:
    """sum_b |g_{b+1} - g_b| along the last axis: (..., n) -> (...)."""
    return (g[..., 1:] - g[..., :-1]).abs().sum(-1)


def piecewise_segments(g: Tensor, tol: float = 1e-6) -> Tensor:
    """Number of constant pieces per row: (..., n) -> (...) int64.

    Neighbours that differ by at most tol belong to the same piece.
    """
    breaks = (g[..., 1:] - g[..., :-1]).abs() > tol
    return breaks.sum(-1) + 1
