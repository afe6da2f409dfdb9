"""BiMix fast paths against the reference: the project's Triton Chebyshev kernel (under
TRITON_INTERPRET=1 on CPU at small shapes; natively on CUDA at B*T = 32K in bf16) and the DCT
branch through fla's chunk_simple_gla (CUDA)."""

from __future__ import annotations

import pytest
import torch

from bimix_bench.bimix.kernels import chunked, reference, triton_cheb
from bimix_bench.bimix.kernels.dispatch import BackendPlan, resolve_backends
from bimix_bench.ops.fla_linear_recurrence import load_fla
from tests.bimix_fixtures import make_mixer, randomize_spectral, run_backend, used_parameters
from tests.mixer_contract import (
    assert_causal,
    assert_decode_matches_forward,
    assert_same_outputs_and_grads,
    relative_error,
)

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def strict_index(interpret, monkeypatch):
    """The interpreter as triton 3.6 runs it with a numpy that refuses int() of a one-element
    array: a tensor used as an index (a loop bound) must then hold a 0-dimensional array, but
    program ids and scalar arguments are one-element arrays, so a loop bound derived from them
    fails there (newer interpreters squeeze the array first)."""
    from triton.runtime import interpreter

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None:  # pragma: no cover - another interpreter layout
        pytest.skip("this triton's interpreter patches tensors elsewhere")

    def index(self):
        data = self.handle.data
        if data.ndim:
            raise TypeError("only 0-dimensional arrays can be converted to Python scalars")
        return int(data)

    def strict(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", index)

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", strict)


def fused_reference(v, kernels, gates, add, z):
    """The fused kernel's function on the reference path (explicit kernels, direct/FFT), fp32."""
    cheb = reference.reference_mix(v.float(), kernels.float()[:, None], gates.float()[..., None, :])
    return torch.nn.functional.silu(z.float()) * (add.float() + cheb)


def check_fused_kernel(device, dtype, B, T, H, P, NB, W, tol):
    """Outputs and the gradients w.r.t. v, kernels, gates, the DCT input and z."""
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, fn=torch.randn):
        return fn(*shape, generator=gen).to(device=device, dtype=dtype)

    v, add, z = rand(B, T, H, P), rand(B, T, H, P), rand(B, T, H, P)
    kernels = (torch.randn(H, NB, W, generator=gen) / W**0.5).to(device)
    gates = rand(B, T, H, NB, fn=torch.rand)
    leaves = [t.clone().requires_grad_(True) for t in (v, kernels, gates, add, z)]
    out = triton_cheb.cheb_window_gated(*leaves)
    assert out.dtype == dtype and out.shape == (B, T, H, P)
    probe = torch.randn(out.shape, generator=gen).to(device)
    grads = torch.autograd.grad((out.float() * probe).sum(), leaves)
    ref_leaves = [t.detach().float().clone().requires_grad_(True) for t in (v, kernels, gates, add, z)]
    ref = fused_reference(*ref_leaves)
    ref_grads = torch.autograd.grad((ref * probe).sum(), ref_leaves)
    assert relative_error(out, ref) < tol
    for name, g, r in zip(("v", "kernels", "gates", "dct", "z"), grads, ref_grads):
        assert relative_error(g, r) < tol, name


def test_fused_kernel_interpreted(interpret):
    # W = 20 > the 16-wide interpreter tiles: the window spans several source tiles;
    # P = 20 is not a power of two and T = 45 leaves a ragged last tile.
    check_fused_kernel("cpu", torch.float32, B=2, T=45, H=2, P=20, NB=3, W=20, tol=1e-5)
    # A 16-bit input exercises the casts (the interpreter's bf16 tl.dot is broken, fp16 is not).
    check_fused_kernel("cpu", torch.float16, B=1, T=40, H=2, P=16, NB=2, W=20, tol=5e-3)


def test_kernels_need_no_scalar_program_ids(strict_index):
    # The source-tile loops have a compile-time trip count (several tiles: W = 20 > 16).
    check_fused_kernel("cpu", torch.float32, B=1, T=37, H=1, P=16, NB=2, W=20, tol=1e-5)


def test_gram_kernel_interpreted(interpret):
    torch.manual_seed(0)
    B, T, H, P, W = 1, 37, 2, 24, 11
    dy, x = torch.randn(B, T, H, P), torch.randn(B, T, H, P)
    gram = triton_cheb.window_gram(dy, x, W)
    expected = torch.zeros(B, H, T, W)
    for tau in range(W):
        expected[:, :, tau:, tau] = (dy[:, tau:] * x[:, : T - tau]).sum(-1).transpose(1, 2)
    torch.testing.assert_close(gram, expected, atol=1e-5, rtol=1e-5)


def test_mixer_triton_path_interpreted(interpret):
    mixer = make_mixer(n_heads=2, max_seq_len=40, backend="triton")
    randomize_spectral(mixer)
    x = torch.randn(1, 40, 32)
    assert_same_outputs_and_grads(
        run_backend(mixer, "reference"), run_backend(mixer, "triton"), [x],
        used_parameters(mixer), atol=2e-5, rtol=1e-4,
    )
    assert mixer.backend == "dct=chunked,cheb=triton"
    assert_causal(mixer, x, cut=17)


def test_cheb_only_triton_path_interpreted(interpret):
    mixer = make_mixer(n_heads=2, max_seq_len=40, ablation="cheb_only", backend="triton")
    randomize_spectral(mixer)
    x = torch.randn(1, 24, 32)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), run_backend(mixer, "reference")(x), atol=1e-6, rtol=1e-5)


# --- CUDA ------------------------------------------------------------------------------------
@gpu
@needs_cuda
@pytest.mark.parametrize("T", [2048, 8192, 32768])
def test_fused_kernel_cuda_bf16_32k_tokens(T):
    check_fused_kernel("cuda", torch.bfloat16, B=32768 // T, T=T, H=16, P=64, NB=4, W=128, tol=2e-2)


@gpu
@needs_cuda
def test_fused_kernel_cuda_fp32_tight():
    check_fused_kernel("cuda", torch.float32, B=2, T=1000, H=4, P=48, NB=4, W=128, tol=1e-5)


def dct_reference(v, gates, amplitude, log_rho):
    """The DCT branch on the reference path (explicit band kernels, FFT), fp32."""
    T, NB = v.shape[1], gates.shape[-1]
    kernels = reference.dct_band_kernels(amplitude, log_rho, T, NB, T)[:, None]  # (H, 1, NB, T)
    return reference.reference_mix(v, kernels, gates[..., None, :])


def check_dct_backend(backend, device, dtype, B, T, H, P, K, tol):
    """The DCT branch through the shared linear-recurrence op against the fp32 reference."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(B, T, H, P, generator=gen).to(device, dtype)
    gates = torch.rand(B, T, H, 4, generator=gen).to(device, dtype)
    amplitude = (torch.randn(H, K, generator=gen) / K).to(device)
    half_lives = torch.logspace(6, 13, H, base=2.0)
    log_rho = (-torch.log(torch.tensor(2.0)) / half_lives).to(device)
    leaves = [t.clone().requires_grad_(True) for t in (v, gates, amplitude, log_rho)]
    out = chunked.dct_branch_linear_attention(*leaves, horizon=T, backend=backend)
    probe = torch.randn(out.shape, generator=gen).to(device)
    grads = torch.autograd.grad((out.float() * probe).sum(), leaves)
    ref_leaves = [t.detach().float().clone().requires_grad_(True) for t in (v, gates, amplitude, log_rho)]
    ref = dct_reference(*ref_leaves)
    ref_grads = torch.autograd.grad((ref * probe).sum(), ref_leaves)
    assert relative_error(out, ref) < tol
    # log_rho's gradient is a sum of position-weighted terms that largely cancel: looser.
    for name, g, r, t in zip(("v", "gates", "amplitude", "log_rho"), grads, ref_grads, (1, 1, 1, 3)):
        assert relative_error(g, r) < t * tol, name


def test_dct_backend_check_runs_on_cpu():
    """The CUDA check below, on the recurrent backend at a small shape (keeps it honest)."""
    check_dct_backend("recurrent", "cpu", torch.float32, B=1, T=50, H=2, P=8, K=8, tol=1e-5)
    check_dct_backend("recurrent", "cpu", torch.bfloat16, B=1, T=50, H=2, P=8, K=8, tol=2e-2)


@gpu
@needs_cuda
@pytest.mark.parametrize("T", [2048, 32768])
def test_dct_branch_fla_cuda_bf16_32k_tokens(T):
    pytest.importorskip("fla")
    check_dct_backend("fla", "cuda", torch.bfloat16, B=32768 // T, T=T, H=16, P=64, K=32, tol=2e-2)


@gpu
@needs_cuda
def test_mixer_auto_cuda_bf16_matches_reference():
    """The whole mixer, auto backend (fla + Triton) under bf16 autocast, vs the fp32 FFT
    reference on the same weights; plus decode == forward on CUDA."""
    torch.manual_seed(0)
    mixer = make_mixer(d_model=1024, n_heads=16, max_seq_len=4096, k_dct=32, k_cheb=16,
                       window=128, n_bands=4).cuda()
    randomize_spectral(mixer)
    x = torch.randn(2, 4096, 1024, device="cuda")
    with torch.no_grad():
        expected = run_backend(mixer, "reference")(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = mixer(x)
    assert "cheb=triton" in mixer.backend
    assert relative_error(fast.float(), expected) < 3e-2
    x_grad = x[:, :1024].clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast = mixer(x_grad)
    fast.float().square().sum().backward()
    assert torch.isfinite(x_grad.grad).all()
    # Causality and decode == forward of the CUDA paths (fla + Triton) at head width 64.
    small = make_mixer(d_model=128, n_heads=2, k_dct=16).cuda()
    randomize_spectral(small)
    x_small = torch.randn(2, 70, 128, device="cuda")
    assert_causal(small, x_small, cut=33)
    fla_ok = load_fla()[0] is not None
    assert small.backend == ("dct=fla,cheb=triton" if fla_ok else "dct=chunked,cheb=triton")
    # fla may use TF32 products in fp32: a looser tolerance than the CPU decode tests.
    assert_decode_matches_forward(small, x_small, n_prompt=20, atol=3e-4, rtol=1e-2)


@gpu
@needs_cuda
def test_mixer_triton_path_cuda_fp32_grads():
    mixer = make_mixer(n_heads=4, max_seq_len=300).cuda()
    randomize_spectral(mixer)
    x = torch.randn(2, 300, 32, device="cuda")
    assert_same_outputs_and_grads(
        run_backend(mixer, "reference"), run_backend(mixer, "triton"), [x],
        used_parameters(mixer), atol=1e-4, rtol=1e-3,
    )


def test_plan_labels_for_cuda_requests_without_a_gpu(monkeypatch):
    """Dispatch labels are what the record shows: check them for the interpreted Triton plan."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    plan = resolve_backends("triton", ("dct", "cheb"), torch.device("cpu"), needs_grad=True)
    assert plan == BackendPlan("chunked", "triton", plan.reason) and plan.label == "dct=chunked,cheb=triton"
    auto = resolve_backends("auto", ("dct", "cheb"), torch.device("cpu"), needs_grad=True)
    assert auto.label == "dct=chunked,cheb=chunked"  # auto never interprets Triton on CPU
