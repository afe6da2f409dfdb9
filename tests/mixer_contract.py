"""Checks every token mixer must pass; model tests call these instead of re-writing them."""

from __future__ import annotations

from typing import Callable

import torch

from bimix_bench.models.mixer import TokenMixer


def assert_causal(mixer: TokenMixer, x: torch.Tensor, cut: int, atol: float = 1e-5) -> None:
    """Changing inputs at positions >= cut must leave outputs at positions < cut unchanged."""
    mixer.eval()
    with torch.no_grad():
        y = mixer(x)
        x2 = x.clone()
        x2[:, cut:] = torch.randn_like(x2[:, cut:]) * 3.0
        y2 = mixer(x2)
    torch.testing.assert_close(y2[:, :cut], y[:, :cut], atol=atol, rtol=0)
    # And the perturbation must be visible somewhere after the cut (the test can fail).
    assert (y2[:, cut:] - y[:, cut:]).abs().max() > 1e-4, "outputs ignore the inputs"


def assert_decode_matches_forward(
    mixer: TokenMixer, x: torch.Tensor, n_prompt: int, atol: float = 1e-4, rtol: float = 1e-4
) -> None:
    """prefill(x[:, :n_prompt]) then decode_step over the rest == the parallel forward."""
    mixer.eval()
    B, T, _ = x.shape
    with torch.no_grad():
        y_parallel = mixer(x)
        y_prompt, state = mixer.prefill(x[:, :n_prompt], max_len=T)
        steps = [mixer.decode_step(x[:, t], state) for t in range(n_prompt, T)]
    y_decoded = torch.cat([y_prompt, torch.stack(steps, dim=1)], dim=1) if steps else y_prompt
    torch.testing.assert_close(y_decoded, y_parallel, atol=atol, rtol=rtol)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| over the whole tensor, in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


def assert_same_outputs_and_grads(
    reference: Callable[..., torch.Tensor],
    fast: Callable[..., torch.Tensor],
    inputs: list[torch.Tensor],
    params: list[torch.Tensor] = (),
    atol: float = 1e-5,
    rtol: float = 1e-4,
    max_relative_error: float | None = None,
) -> None:
    """Two implementations of one function agree in value and in the gradients of a random
    projection of the output, w.r.t. every input and every parameter in `params`: elementwise
    (atol, rtol), or, with max_relative_error, by relative_error over each whole tensor (for
    kernels whose products are TF32, where a few elements of large magnitude stray)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y_ref = reference(*leaves)
    probe = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad((y_ref * probe).sum(), leaves + list(params))
    leaves_fast = [t.detach().clone().requires_grad_(True) for t in inputs]
    y_fast = fast(*leaves_fast)
    grads_fast = torch.autograd.grad((y_fast * probe).sum(), leaves_fast + list(params))
    named = [("output", y_fast, y_ref),
             *((f"grad {i}", g_fast, g_ref) for i, (g_fast, g_ref) in enumerate(zip(grads_fast, grads_ref)))]
    for name, got, expected in named:
        if max_relative_error is None:
            torch.testing.assert_close(got, expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
        else:
            error = relative_error(got, expected)
            assert error < max_relative_error, (name, error)
