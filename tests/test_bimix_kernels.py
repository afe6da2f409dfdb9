"""BiMix kernels: reference convolution, chunked forms, exact DCT phases."""

from __future__ import annotations

import math

import pytest
import torch

from bimix_bench.bimix.kernels import basis, chunked, reference
from bimix_bench.bimix.kernels.dispatch import BackendPlan, SpectralBranches, mixer_core
from bimix_bench.ops.fla_linear_recurrence import load_fla
from tests.mixer_contract import assert_same_outputs_and_grads

H, P, K_D, K_C, NB, W, N_D = 2, 3, 8, 6, 3, 16, 96


def make_spec(dtype: torch.dtype, branches=("dct", "cheb"), seed: int = 0) -> SpectralBranches:
    gen = torch.Generator().manual_seed(seed)
    return SpectralBranches(
        branches=branches,
        n_bands=NB,
        horizon=N_D,
        window=W,
        dct_amplitude=(0.3 * torch.randn(H, K_D, generator=gen)).to(dtype).requires_grad_(),
        log_rho=torch.log(torch.tensor([0.9, 0.99])).to(dtype).requires_grad_(),
        cheb_amplitude=(0.3 * torch.randn(H, K_C, generator=gen)).to(dtype).requires_grad_(),
    )


def test_bands_are_contiguous_and_cover_every_index():
    idx = basis.band_index(10, 4)
    assert idx.tolist() == sorted(idx.tolist()) and set(idx.tolist()) == {0, 1, 2, 3}
    sizes = torch.bincount(idx).tolist()
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        basis.band_index(3, 4)


def test_chebyshev_basis_matches_trigonometric_definition():
    b = basis.chebyshev_basis(7, 12, torch.float64)
    x = 1 - 2 * torch.arange(12, dtype=torch.float64) / 11
    expected = torch.cos(torch.arange(7, dtype=torch.float64)[:, None] * torch.arccos(x)[None, :])
    torch.testing.assert_close(b, expected, atol=1e-12, rtol=0)
    assert torch.all(b[:, 0] == 1)  # the current token sits at x = 1


def test_band_kernels_follow_the_design_formulas():
    spec = make_spec(torch.float64)
    a, log_rho = spec.dct_amplitude.detach(), spec.log_rho.detach()
    kern = reference.dct_band_kernels(a, log_rho, N_D, NB, 40)
    band = basis.band_index(K_D, NB)
    h, b, tau = 1, 2, 33
    w = math.pi * torch.arange(K_D, dtype=torch.float64) / N_D
    terms = a[h] * torch.exp(log_rho[h] * tau) * torch.cos(w * tau + w / 2)
    assert kern[h, b, tau].item() == pytest.approx(terms[band == b].sum().item(), abs=1e-12)
    cheb = reference.cheb_band_kernels(spec.cheb_amplitude.detach(), W, NB)
    tau = 5
    x = 1 - 2 * tau / (W - 1)
    k = torch.arange(K_C, dtype=torch.float64)
    terms = spec.cheb_amplitude.detach()[h] * torch.cos(k * math.acos(x))
    band_c = basis.band_index(K_C, NB)
    assert cheb[h, b, tau].item() == pytest.approx(terms[band_c == b].sum().item(), abs=1e-12)


def test_reference_convolution_matches_a_plain_loop():
    torch.manual_seed(0)
    B, T = 2, 9
    v = torch.randn(B, T, H, P, dtype=torch.float64)
    kernels = torch.randn(H, 2, NB, T, dtype=torch.float64)
    gates = torch.rand(B, T, H, 2, NB, dtype=torch.float64)
    y = reference.reference_mix(v, kernels, gates, method="direct")
    expected = torch.zeros_like(v)
    for t in range(T):
        for s in range(t + 1):
            eff = (gates[:, t] * kernels[None, ..., t - s]).sum(dim=(2, 3))  # (B, H)
            expected[:, t] += eff[..., None] * v[:, s]
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_reference_direct_equals_fft(dtype, tol):
    torch.manual_seed(1)
    spec = make_spec(dtype)
    B, T = 2, 150
    v = torch.randn(B, T, H, P, dtype=dtype)
    gates = torch.rand(B, T, H, 2, NB, dtype=dtype)
    kernels = spec.reference_kernels(T).detach()
    direct = reference.reference_mix(v, kernels, gates, method="direct")
    fft = reference.reference_mix(v, kernels, gates, method="fft")
    torch.testing.assert_close(fft, direct, atol=tol, rtol=tol)
    assert direct.abs().max() > 0.1


REFERENCE = BackendPlan("reference", "reference", "test")
CHUNKED = BackendPlan("chunked", "chunked", "test")


@pytest.mark.parametrize(
    "T,dtype,per_token_gates",
    [  # T < W; T = W; ragged chunks of both branches; several chunks of both (W = 16, C = 64)
        (5, torch.float64, True),
        (16, torch.float32, False),
        (37, torch.float64, True),
        (37, torch.float32, True),
        (130, torch.float64, False),
        (130, torch.float32, True),
    ],
)
def test_chunked_matches_reference_outputs_and_grads(T, dtype, per_token_gates):
    torch.manual_seed(T)
    spec = make_spec(dtype)
    B = 2
    v = torch.randn(B, T, H, P, dtype=dtype)
    z = torch.randn(B, T, H, P, dtype=dtype)
    gates = torch.rand(B if per_token_gates else 1, T if per_token_gates else 1, H, 2, NB, dtype=dtype)
    params = [spec.dct_amplitude, spec.log_rho, spec.cheb_amplitude]

    def run(plan):
        def fn(v, z, gates):
            s = SpectralBranches(spec.branches, NB, N_D, W, *params)
            return mixer_core(v, z, gates, s, plan)

        return fn

    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert_same_outputs_and_grads(run(REFERENCE), run(CHUNKED), [v, z, gates], params, atol=tol, rtol=tol)


@pytest.mark.parametrize("branch", ["dct", "cheb"])
def test_single_branch_plans_drop_the_other_branch(branch):
    torch.manual_seed(0)
    spec = make_spec(torch.float64, branches=(branch,))
    v = torch.randn(1, 20, H, P, dtype=torch.float64)
    z = torch.randn_like(v)
    gates = torch.rand(1, 20, H, 1, NB, dtype=torch.float64)
    plan = BackendPlan("chunked" if branch == "dct" else None, "chunked" if branch == "cheb" else None, "")
    y = mixer_core(v, z, gates, spec, plan)
    ref = mixer_core(v, z, gates, spec, REFERENCE)
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=0)
    # The other branch's parameters take no part: its gradients are absent.
    other = spec.cheb_amplitude if branch == "dct" else spec.dct_amplitude
    (grad,) = torch.autograd.grad(y.sum(), [other], allow_unused=True)
    assert grad is None


def test_block_toeplitz_chunk_larger_than_window():
    torch.manual_seed(0)
    v = torch.randn(1, 50, H, P, dtype=torch.float64)
    kernels = torch.randn(H, NB, W, dtype=torch.float64)
    gates = torch.rand(1, 50, H, NB, dtype=torch.float64)
    a = chunked.cheb_branch_block_toeplitz(v, kernels, gates)
    b = chunked.cheb_branch_block_toeplitz(v, kernels, gates, chunk=24)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    with pytest.raises(ValueError):
        chunked.cheb_branch_block_toeplitz(v, kernels, gates, chunk=W - 1)


def _fp64_kernel_sum(t: torch.Tensor, s: torch.Tensor, K: int, N: int) -> torch.Tensor:
    w = math.pi * torch.arange(K, dtype=torch.float64) / N
    lag = (t - s).double()[:, None]
    return torch.cos(w * lag + w / 2).sum(-1)


def _fp32_features_dot(t: torch.Tensor, s: torch.Tensor, K: int, N: int) -> torch.Tensor:
    q, _ = basis.dct_query_key_features(t, K, N, torch.float32)
    _, k = basis.dct_query_key_features(s, K, N, torch.float32)
    return (q.double() * k.double()).sum(-1)


def test_dct_phases_stay_exact_at_long_context():
    """q_t . k_s reproduces sum_k cos(w_k (t - s) + w_k / 2) at T = N_d = 32768 in fp32."""
    N, K = 32768, 32
    t = torch.tensor([N - 1, 30001, 20000, 12345, 4097, N - 1])
    s = torch.tensor([N - 2, 29000, 3, 12345, 0, 0])
    err = (_fp32_features_dot(t, s, K, N) - _fp64_kernel_sum(t, s, K, N)).abs().max()
    assert err < 5e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_features_are_the_cos_and_sin_of_the_phases(dtype):
    """The features share their integer work between q and k but are, bit for bit, cos and sin
    of dct_phases (the one definition of the angles, also used by the reference kernels)."""
    positions = torch.arange(0, 70_000, 7)
    q, k = basis.dct_query_key_features(positions, 32, 4096, dtype)
    for features, half_shift in ((q, True), (k, False)):
        phase = basis.dct_phases(positions, 32, 4096, half_shift, dtype)
        assert torch.equal(features, torch.cat([phase.cos(), phase.sin()], dim=-1).to(dtype))


def test_integer_phase_reduction_beats_float_angles_far_out():
    """Decoding far past the horizon: float32 angles w * t drift, the integer reduction not."""
    N, K = 32768, 32
    t = torch.tensor([3_000_017, 2_500_001, 4_000_000])
    s = t - torch.tensor([1, 700, 20000])
    exact = _fp64_kernel_sum(t, s, K, N)
    err = (_fp32_features_dot(t, s, K, N) - exact).abs().max()
    w, t32, s32 = (math.pi * torch.arange(K) / N).float(), t.float()[:, None], s.float()[:, None]
    naive_q = torch.cat([torch.cos(w * t32 + w / 2), torch.sin(w * t32 + w / 2)], -1)
    naive_k = torch.cat([torch.cos(w * s32), torch.sin(w * s32)], -1)
    naive_err = ((naive_q.double() * naive_k.double()).sum(-1) - exact).abs().max()
    assert err < 5e-6
    assert naive_err > 100 * err


def test_dct_branch_at_32k_tokens_matches_fp64_fft():
    """The whole chunked DCT branch in fp32 at T = N_d = 32768 against an fp64 FFT reference."""
    T = 32768
    torch.manual_seed(0)
    a = torch.randn(1, 32, dtype=torch.float64) / 32
    log_rho = torch.log(torch.tensor([1 - 1 / 8192], dtype=torch.float64))
    v = torch.randn(1, T, 1, 1, dtype=torch.float64)
    gates = torch.rand(1, 1, 1, 4, dtype=torch.float64)
    got = chunked.dct_branch_linear_attention(
        v.float(), gates.float(), a.float(), log_rho.float(), T, chunk_size=256
    )
    kernels = reference.dct_band_kernels(a, log_rho, T, 4, T)[:, None]  # (1, 1, 4, T) fp64
    expected = reference.reference_mix(v, kernels, gates[:, :, :, None], method="fft")
    err = (got.double() - expected).abs().max() / expected.abs().max()
    assert err < 1e-4


def test_peak_gain_of_a_known_filter():
    rho = 0.9
    kern = rho ** torch.arange(400, dtype=torch.float64)
    assert reference.peak_gain(kern).item() == pytest.approx(1 / (1 - rho), rel=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or load_fla()[0] is None, reason="needs CUDA and fla-core")
def test_fla_dct_branch_gives_the_decay_its_gradient_gpu():
    """fla's kernel takes the fixed decay as a constant; the shared op supplies d/d log_rho
    around it. Through the DCT branch it must equal the chunked op's own gradient."""
    torch.manual_seed(0)
    spec = make_spec(torch.float32)
    amplitude, log_rho = (t.detach().cuda().requires_grad_(True) for t in (spec.dct_amplitude, spec.log_rho))
    v = torch.randn(2, 256, H, 16, device="cuda")  # fla needs value widths of at least 16
    gates = torch.rand(2, 256, H, NB, device="cuda")

    def run(backend):
        def fn(v, gates):
            return chunked.dct_branch_linear_attention(v, gates, amplitude, log_rho, N_D, backend=backend)

        return fn

    # fla's products are TF32 (as in test_loglinear.py): elementwise, 14 of 16K outputs strayed
    # by up to 5.5e-3 on an H100, so compare by relative error over each tensor. The decay's
    # gradient sums position-weighted terms that partly cancel, which magnifies TF32 rounding
    # to about 1% (docs/perf.md); a gradient missing or wired wrongly is off by order 1.
    assert_same_outputs_and_grads(run("chunked"), run("fla"), [v, gates], [amplitude, log_rho],
                                  max_relative_error=2e-2)


