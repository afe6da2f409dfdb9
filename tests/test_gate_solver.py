"""The exact TV-regularized, box-constrained gate solver against independent generic solvers.

Reference: the dual of 1-D TV denoising is a bound-constrained least-squares problem,
    prox(s) = s - D^T u*,   u* = argmin_{|u|_inf <= lam} 1/2 ||D^T u - s||^2,
solved here with scipy's BVLS (an active-set method, exact up to rounding). Optimality of the
box-constrained answer is also certified directly through its KKT system.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import lsq_linear

from bimix_bench.bimix.gate_solver import (
    piecewise_segments,
    total_variation,
    tv_box_prox,
    tv_prox,
)

SIZES = [1, 2, 4, 7, 16]
LAMS = [0.0, 1e-3, 0.05, 0.3, 1.0, 5.0, 1e3]


# --- independent references (numpy / scipy, one row at a time) ----------------------------


def _difference_matrix(n: int) -> np.ndarray:
    """D (n-1, n): (D x)_k = x_{k+1} - x_k."""
    return np.diff(np.eye(n), axis=0)


def _reference_prox(s: np.ndarray, lam: float) -> np.ndarray:
    """prox_{lam TV}(s) via the bound-constrained least-squares dual."""
    n = s.shape[0]
    if n == 1 or lam == 0.0:
        return s.copy()
    d = _difference_matrix(n)
    u = lsq_linear(d.T, s, bounds=(-lam, lam), method="bvls", tol=1e-14).x
    return s - d.T @ u


def _objective(g: np.ndarray, s: np.ndarray, lam: float) -> float:
    return 0.5 * float(np.sum((g - s) ** 2)) + lam * float(np.sum(np.abs(np.diff(g))))


def _kkt_residual(g: np.ndarray, s: np.ndarray, lam: float, lo: float, hi: float) -> float:
    """Smallest inf-norm residual of  g - s + lam D^T w + mu = 0  over valid multipliers.

    w_k = sign(g_{k+1} - g_k) where the difference is non-zero, w_k in [-1, 1] where it is
    zero; mu_i >= 0 where g_i = hi, mu_i <= 0 where g_i = lo, mu_i = 0 inside the box. A zero
    residual certifies that g minimizes the box-constrained problem (it is convex).
    """
    n = g.shape[0]
    d = _difference_matrix(n)
    dg = d @ g
    flat = np.abs(dg) <= 1e-12
    r0 = g - s + lam * d.T @ np.where(flat, 0.0, np.sign(dg))
    cols, lower, upper = [], [], []
    if lam > 0:
        for k in np.flatnonzero(flat):
            cols.append(lam * d.T[:, k])
            lower.append(-1.0)
            upper.append(1.0)
    for i in range(n):
        if g[i] == hi or g[i] == lo:
            cols.append(np.eye(n)[i])
            lower.append(0.0 if g[i] == hi else -np.inf)
            upper.append(np.inf if g[i] == hi else 0.0)
    if not cols:
        return float(np.abs(r0).max())
    a = np.stack(cols, axis=1)
    z = lsq_linear(a, -r0, bounds=(np.array(lower), np.array(upper)), method="bvls", tol=1e-14).x
    return float(np.abs(a @ z + r0).max())


def _random_gates(rows: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(rows, n) float64 mixing values inside and outside [0, 1], smooth and piecewise rows."""
    spread = torch.rand(rows, n, generator=gen, dtype=torch.float64) * 2.0 - 0.5
    noisy = torch.randn(rows, n, generator=gen, dtype=torch.float64) * 1.5 + 0.5
    steps = torch.randint(0, 3, (rows, n), generator=gen).double().cumsum(1) * 0.3 - 0.2
    steps = steps + 0.05 * torch.randn(rows, n, generator=gen, dtype=torch.float64)
    pick = torch.randint(0, 3, (rows, 1), generator=gen)
    return torch.where(pick == 0, spread, torch.where(pick == 1, noisy, steps))


# --- exactness against the generic solver --------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_matches_generic_qp_reference(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    s = _random_gates(12 * len(LAMS), n, gen)
    lam = torch.tensor(LAMS, dtype=torch.float64).repeat_interleave(12)  # per-row lam
    prox = tv_prox(s, lam).numpy()
    gates = tv_box_prox(s, lam).numpy()
    for row, lam_r in zip(range(s.shape[0]), lam.tolist()):
        s_r = s[row].numpy()
        ref_prox = _reference_prox(s_r, lam_r)
        ref_gates = np.clip(ref_prox, 0.0, 1.0)
        np.testing.assert_allclose(prox[row], ref_prox, atol=1e-6, rtol=0)
        np.testing.assert_allclose(gates[row], ref_gates, atol=1e-6, rtol=0)
        assert abs(_objective(gates[row], s_r, lam_r) - _objective(ref_gates, s_r, lam_r)) < 1e-6
        assert abs(_objective(prox[row], s_r, lam_r) - _objective(ref_prox, s_r, lam_r)) < 1e-6
        assert gates[row].min() >= 0.0 and gates[row].max() <= 1.0


@pytest.mark.parametrize("n", [2, 4, 7, 16])
@pytest.mark.parametrize("box", [(0.0, 1.0), (-0.25, 0.4)])
def test_kkt_conditions_of_box_problem(n: int, box: tuple[float, float]) -> None:
    lo, hi = box
    gen = torch.Generator().manual_seed(100 + n)
    s = _random_gates(40, n, gen)
    lam = torch.tensor([0.0, 0.02, 0.2, 1.0, 4.0], dtype=torch.float64).repeat(8)
    gates = tv_box_prox(s, lam, lo=lo, hi=hi).numpy()
    for row, lam_r in enumerate(lam.tolist()):
        assert _kkt_residual(gates[row], s[row].numpy(), lam_r, lo, hi) < 1e-6
    # The certificate has teeth: a slightly wrong (still feasible) answer fails it.
    wrong = gates[3].copy()
    wrong[n // 2] = np.clip(wrong[n // 2] + (1e-3 if wrong[n // 2] < hi else -1e-3), lo, hi)
    assert _kkt_residual(wrong, s[3].numpy(), lam[3].item(), lo, hi) > 1e-5


@pytest.mark.parametrize("n", [2, 4, 7, 16])
def test_unconstrained_prox_has_zero_duality_gap(n: int) -> None:
    gen = torch.Generator().manual_seed(200 + n)
    s = _random_gates(60, n, gen)
    lam = torch.tensor([1e-3, 0.05, 0.3, 1.0, 5.0, 50.0], dtype=torch.float64).repeat(10)
    x = tv_prox(s, lam)
    lam_c = lam[:, None]
    # Dual candidate read off the primal: x - s + lam D^T u = 0 => u_k = sum_{i<=k}(x_i - s_i)/lam.
    u = torch.cumsum(x - s, dim=1)[:, :-1] / lam_c  # (R, n-1)
    assert (u.abs() <= 1.0 + 1e-9).all(), "dual infeasible"
    zero = torch.zeros_like(u[:, :1])
    dt_u = torch.cat([zero, u], 1) - torch.cat([u, zero], 1)  # (R, n): D^T u
    primal = 0.5 * ((x - s) ** 2).sum(1) + lam * total_variation(x)
    dual = 0.5 * (s**2).sum(1) - 0.5 * ((s - lam_c * dt_u) ** 2).sum(1)
    gap = primal - dual
    assert (gap >= -1e-9).all()
    assert gap.abs().max() < 1e-9


# --- edge cases ----------------------------------------------------------------------------


def test_zero_lam_is_plain_clip() -> None:
    s = _random_gates(50, 5, torch.Generator().manual_seed(1))
    assert torch.equal(tv_prox(s, 0.0), s)
    assert torch.equal(tv_box_prox(s, 0.0), s.clamp(0.0, 1.0))


@pytest.mark.parametrize("n", [2, 4, 7, 16])
def test_lam_above_threshold_gives_clipped_mean(n: int) -> None:
    s = _random_gates(30, n, torch.Generator().manual_seed(2 + n))
    # The prox is constant iff lam >= max_k |sum_{i<=k} (s_i - mean(s))|.
    lam_max = (s - s.mean(1, keepdim=True)).cumsum(1)[:, :-1].abs().amax(1)
    mean = s.mean(1, keepdim=True).expand_as(s)
    for factor in (1.0 + 1e-6, 10.0, 1e6):
        x = tv_prox(s, lam_max * factor)
        torch.testing.assert_close(x, mean, atol=1e-9, rtol=0)
        box = tv_box_prox(s, lam_max * factor)
        torch.testing.assert_close(box, mean.clamp(0, 1), atol=1e-9, rtol=0)
    below = tv_prox(s, lam_max * 0.99)
    assert (piecewise_segments(below, tol=1e-12) >= 2).all()


def test_constant_input_is_a_fixed_point() -> None:
    c = torch.tensor([-0.3, 0.0, 0.42, 1.0, 1.7], dtype=torch.float64)[:, None].expand(5, 6)
    for lam in (0.0, 0.1, 10.0):
        torch.testing.assert_close(tv_prox(c, lam), c, atol=1e-12, rtol=0)
        torch.testing.assert_close(tv_box_prox(c, lam), c.clamp(0, 1), atol=1e-12, rtol=0)


def test_single_band_is_clip() -> None:
    s = torch.tensor([[-0.5], [0.25], [3.0]], dtype=torch.float64)
    torch.testing.assert_close(tv_box_prox(s, 0.7), s.clamp(0, 1))
    torch.testing.assert_close(tv_prox(s, 0.7), s)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_gates_are_rejected(bad: float) -> None:
    s = torch.rand(3, 4, dtype=torch.float64)
    s[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        tv_box_prox(s, 0.1)


def test_invalid_lam_and_inputs_are_rejected() -> None:
    s = torch.rand(3, 4)
    with pytest.raises(ValueError, match=">= 0"):
        tv_box_prox(s, -0.1)
    with pytest.raises(ValueError, match=">= 0"):
        tv_box_prox(s, torch.tensor([0.1, -1e-3, 0.2]))
    with pytest.raises(ValueError, match="lam contains NaN"):
        tv_box_prox(s, float("nan"))
    with pytest.raises(ValueError, match="broadcast"):
        tv_box_prox(s, torch.rand(4))
    with pytest.raises(ValueError, match="band"):
        tv_box_prox(torch.rand(3, 0), 0.1)
    with pytest.raises(ValueError, match="empty box"):
        tv_box_prox(s, 0.1, lo=1.0, hi=0.0)
    with pytest.raises(TypeError):
        tv_box_prox(torch.ones(3, 4, dtype=torch.long), 0.1)


def test_batched_shapes_and_per_row_lam() -> None:
    gen = torch.Generator().manual_seed(3)
    s = _random_gates(2 * 3 * 5, 4, gen).reshape(2, 3, 5, 4)  # (layers, heads, tokens, bands)
    lam = torch.rand(2, 3, 1, generator=gen, dtype=torch.float64)  # per (layer, head)
    out = tv_box_prox(s, lam)
    assert out.shape == s.shape
    for i in range(2):
        for h in range(3):
            row_wise = tv_box_prox(s[i, h], lam[i, h, 0].item())
            torch.testing.assert_close(out[i, h], row_wise, atol=0, rtol=0)
    # A scalar tensor lam and a Python float agree; empty batches pass through.
    torch.testing.assert_close(tv_box_prox(s, torch.tensor(0.2)), tv_box_prox(s, 0.2))
    assert tv_box_prox(torch.empty(0, 4), 0.1).shape == (0, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes(dtype: torch.dtype) -> None:
    s = _random_gates(64, 4, torch.Generator().manual_seed(4))
    expected = tv_box_prox(s, 0.05)
    out = tv_box_prox(s.to(dtype), 0.05)
    assert out.dtype == dtype
    expected_from_rounded = tv_box_prox(s.to(dtype).double(), 0.05).to(dtype)
    torch.testing.assert_close(out, expected_from_rounded, atol=0, rtol=0)
    tol = 1e-6 if dtype != torch.bfloat16 else 2e-2
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=0)


def test_total_variation_and_segment_count() -> None:
    g = torch.tensor([[0.0, 0.5, 0.5, 1.0], [0.2, 0.2, 0.2, 0.2], [1.0, 0.0, 1.0, 0.0]])
    torch.testing.assert_close(total_variation(g), torch.tensor([1.0, 0.0, 3.0]))
    assert piecewise_segments(g).tolist() == [3, 1, 4]
    assert piecewise_segments(g + torch.tensor([0.0, 1e-8, 0.0, 0.0])).tolist() == [3, 1, 4]
    assert piecewise_segments(torch.tensor([0.0, 1e-3]), tol=1e-2).item() == 1
    # TV denoising never increases the variation and merges pieces as lam grows.
    s = _random_gates(40, 7, torch.Generator().manual_seed(5))
    for lam_small, lam_big in ((0.01, 0.1), (0.1, 1.0)):
        small, big = tv_prox(s, lam_small), tv_prox(s, lam_big)
        assert (total_variation(big) <= total_variation(small) + 1e-12).all()
        assert (piecewise_segments(big) <= piecewise_segments(small)).all()


# --- gradients -----------------------------------------------------------------------------


def _structure(s: torch.Tensor, lam: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Per row: which neighbours are fused and which bands sit on the box (the active set)."""
    x = tv_prox(s, lam)
    return torch.cat([x[:, 1:] == x[:, :-1], x <= lo, x >= hi], dim=1)


def _stable_rows(s: torch.Tensor, lam: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Rows whose active set survives small perturbations (away from the map's kinks)."""
    gen = torch.Generator().manual_seed(7)
    base = _structure(s, lam, lo, hi)
    stable = torch.ones(s.shape[0], dtype=torch.bool)
    for _ in range(20):
        ds = 1e-4 * torch.randn(s.shape, generator=gen, dtype=s.dtype)
        dl = 1e-4 * torch.randn(lam.shape, generator=gen, dtype=lam.dtype)
        stable &= (_structure(s + ds, (lam + dl).clamp(min=0), lo, hi) == base).all(1)
    return stable


@pytest.mark.parametrize("n", [2, 4, 7])
def test_gradcheck_away_from_ties(n: int) -> None:
    gen = torch.Generator().manual_seed(300 + n)
    s = _random_gates(200, n, gen)
    lam = 0.05 + 0.5 * torch.rand(200, generator=gen, dtype=torch.float64)
    keep = _stable_rows(s, lam, 0.0, 1.0).nonzero().squeeze(1)[:8]
    assert keep.numel() == 8
    s_in = s[keep].clone().requires_grad_()
    lam_in = lam[keep].clone().requires_grad_()
    # The rows used must exercise fused segments and the box, or the check proves little.
    x = tv_prox(s_in.detach(), lam_in.detach())
    assert (x[:, 1:] == x[:, :-1]).any()
    assert ((x < 0) | (x > 1)).any()
    assert torch.autograd.gradcheck(lambda a, b: tv_box_prox(a, b), (s_in, lam_in))
    assert torch.autograd.gradcheck(lambda a, b: tv_prox(a, b), (s_in, lam_in))


def test_gradient_is_segment_average_and_zero_on_box() -> None:
    gen = torch.Generator().manual_seed(8)
    s = _random_gates(64, 7, gen).requires_grad_()
    lam = (0.05 + 0.4 * torch.rand(64, generator=gen, dtype=torch.float64)).requires_grad_()
    grad_out = torch.randn(64, 7, generator=gen, dtype=torch.float64)
    gates = tv_box_prox(s, lam)
    gates.backward(grad_out)
    x = tv_prox(s.detach(), lam.detach())  # segments are runs of equal prox values
    seen_long, seen_box = False, False
    for r in range(64):
        xr, gr = x[r].tolist(), grad_out[r]
        starts = [0] + [i for i in range(1, 7) if xr[i] != xr[i - 1]]
        bounds = list(zip(starts, starts[1:] + [7]))
        expected_s = torch.zeros(7, dtype=torch.float64)
        expected_lam = 0.0
        for a, b in bounds:
            v = xr[a]
            if v <= 0.0 or v >= 1.0:  # on the box: no gradient at all
                seen_box = True
                continue
            seen_long |= b - a > 1
            expected_s[a:b] = gr[a:b].mean()
            # d v / d lam = -(sign(v - v_left) + sign(v - v_right)) / length
            sides = (np.sign(v - xr[a - 1]) if a > 0 else 0.0) + (
                np.sign(v - xr[b]) if b < 7 else 0.0
            )
            expected_lam += float(gr[a:b].sum()) * (-sides / (b - a))
        torch.testing.assert_close(s.grad[r], expected_s, atol=1e-12, rtol=0)
        assert abs(lam.grad[r].item() - expected_lam) < 1e-12
    assert seen_long and seen_box


def test_gradient_worked_example() -> None:
    # prox([0.4, 0.6, 3.0], 0.3) = [0.65, 0.65, 2.7]: the first two fuse and rise by lam/2,
    # the last drops by lam and is then clipped to 1.
    s = torch.tensor([0.4, 0.6, 3.0], dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    g = tv_box_prox(s, lam)
    torch.testing.assert_close(g, torch.tensor([0.65, 0.65, 1.0], dtype=torch.float64))
    (g * torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(s.grad, torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(lam.grad, torch.tensor(0.5 * 1.0 + 0.5 * 3.0, dtype=torch.float64))


# --- device ---------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [4, 16])
def test_cuda_matches_cpu(dtype: torch.dtype, n: int) -> None:
    gen = torch.Generator().manual_seed(9)
    s = _random_gates(4096, n, gen).to(dtype)
    lam = (0.3 * torch.rand(4096, generator=gen, dtype=torch.float64)).to(dtype)
    grad_out = torch.randn(4096, n, generator=gen, dtype=torch.float64).to(dtype)
    outs = {}
    for device in ("cpu", "cuda"):
        s_d = s.to(device).detach().requires_grad_()  # leaves on every device
        lam_d = lam.to(device).detach().requires_grad_()
        g = tv_box_prox(s_d, lam_d)
        assert g.device.type == device
        g.backward(grad_out.to(device))
        outs[device] = (g.detach().cpu(), s_d.grad.cpu(), lam_d.grad.cpu())
    for cpu_t, cuda_t in zip(outs["cpu"], outs["cuda"]):
        torch.testing.assert_close(cuda_t, cpu_t, atol=1e-6, rtol=1e-6)


def test_single_band_is_the_box_clip_forward_and_backward() -> None:
    # One band has no total variation: the map is clip(s, lo, hi), its gradient 1 inside the
    # box and 0 where clipped, and lam gets no gradient.
    s = torch.tensor([[0.5], [1.5], [-0.2], [0.9]], dtype=torch.float64, requires_grad=True)
    lam = torch.full((4,), 0.3, dtype=torch.float64, requires_grad=True)
    out = tv_box_prox(s, lam)
    torch.testing.assert_close(out, s.detach().clamp(0.0, 1.0), atol=0, rtol=0)
    (out * torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)).sum().backward()
    assert s.grad.flatten().tolist() == [1.0, 0.0, 0.0, 4.0]
    assert lam.grad.abs().sum().item() == 0.0
    # Unconstrained, one band is the identity; empty batches of one band work backward too.
    t = torch.tensor([[-3.0], [7.0]], requires_grad=True)
    tv_prox(t, 1.0).sum().backward()
    assert t.grad.flatten().tolist() == [1.0, 1.0]
    e = torch.empty(0, 1, requires_grad=True)
    tv_box_prox(e, 0.1).sum().backward()
    assert e.grad.shape == (0, 1)
