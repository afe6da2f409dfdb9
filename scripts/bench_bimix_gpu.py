#!/usr/bin/env python3
"""Time and check BiMix's kernel paths on a GPU, component by component, in bf16.

For B*T = 32768 tokens, 16 heads of 64 and T in {2048, 8192, 32768} (the design's reference
point) it times, forward and forward+backward:
  cheb   the Chebyshev branch + band gates + silu(z): the project's Triton kernel vs the
         plain-torch block-Toeplitz form
  dct    the DCT branch: fla's chunk_simple_gla (fixed per-head decay) vs the plain-torch
         chunked linear attention
  core   the whole mixer core (both branches, gates, output gate) per backend plan
and reports each path's relative error against an fp32 evaluation (the reference FFT path
where it fits in memory, else the fp32 chunked path). Whole-layer timings next to the baselines
come from scripts/bench_mixers_gpu.py (--models ...,bimix).

    python scripts/bench_bimix_gpu.py --out runs/bench_bimix.json
    python scripts/bench_bimix_gpu.py --dry-run     # tiny shapes on CPU, checks the script
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

if __name__ == "__main__":  # run as a file from a checkout: the package and the shared bench
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

REFERENCE_MAX_TOKENS_X_T = 32768 * 8192  # FFT reference memory grows with B*T and T


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-lens", default="2048,8192,32768")
    p.add_argument("--tokens", type=int, default=32768, help="B*T per call")
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--n-heads", type=int, default=16)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU in float32")
    args = p.parse_args(argv)
    if args.dry_run:
        args.seq_lens, args.tokens, args.d_model, args.n_heads = "32,64", 128, 64, 4
        args.warmup, args.repeats = 1, 2
    return args


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


def make_inputs(B: int, T: int, H: int, P: int, R: int, NB: int, device, dtype):
    gen = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(B, T, H, P, generator=gen).to(device, dtype)
    z = torch.randn(B, T, H, P, generator=gen).to(device, dtype)
    gates = torch.rand(B, T, H, R, NB, generator=gen).to(device, dtype)
    return v, z, gates


def measure(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], params: list[torch.Tensor],
            mode: str, args, device) -> dict[str, Any]:
    from bench_mixers_gpu import timed_row

    if mode == "fwd":
        def step() -> Any:
            with torch.no_grad():
                return fn(*inputs)
    else:
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        out = fn(*leaves)
        grad_out = torch.randn_like(out)

        def step() -> Any:
            return torch.autograd.grad(fn(*leaves), leaves + params, grad_out, allow_unused=True)

    return timed_row(step, args, device)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bimix_bench.bimix.kernels import chunked
    from bimix_bench.bimix.kernels.dispatch import BackendPlan, mixer_core, resolve_backends
    from bimix_bench.bimix.mixer import BiMixMixer
    from bimix_bench.errors import SkipCell
    from bimix_bench.models.mixer import MixerConfig

    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --dry-run to check the script on CPU)")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    H, P = args.n_heads, args.d_model // args.n_heads
    rows: list[dict[str, Any]] = []
    for T in [int(t) for t in args.seq_lens.split(",")]:
        B = max(1, args.tokens // T)
        torch.manual_seed(0)
        mixer = BiMixMixer(MixerConfig(args.d_model, H, 0, 1, T, {})).to(device)
        spec = mixer.spectral()
        params = [mixer.dct_amplitude, mixer.dct_log_rate, mixer.cheb_amplitude]
        R, NB = len(spec.branches), spec.n_bands
        v, z, gates = make_inputs(B, T, H, P, R, NB, device, dtype)
        fp32 = [t.float() for t in (v, z, gates)]
        fits = B * T * T <= REFERENCE_MAX_TOKENS_X_T
        with torch.no_grad():
            plan_ref = BackendPlan("reference", "reference", "fp32 FFT reference")
            plan_truth = plan_ref if fits else BackendPlan("chunked", "chunked", "fp32 chunked")
            truth_core = mixer_core(*fp32, mixer.spectral(), plan_truth)
            v32, z32, g32 = fp32
            truth_dct = chunked.dct_branch_linear_attention(
                v32, g32[..., 0, :], spec.dct_amplitude, spec.log_rho, T
            )
            truth_cheb = F.silu(z32) * chunked.cheb_branch_block_toeplitz(
                v32, spec.cheb_kernels(), g32[..., 1, :]
            )

        def cheb_triton(v, z, g):
            from bimix_bench.bimix.kernels.triton_cheb import cheb_window_gated
            return cheb_window_gated(v, mixer.spectral().cheb_kernels(), g[..., 1, :], None, z)

        def cheb_torch(v, z, g):
            kernels = mixer.spectral().cheb_kernels()
            return F.silu(z) * chunked.cheb_branch_block_toeplitz(v, kernels, g[..., 1, :])

        def dct(backend):
            def fn(v, z, g):
                s = mixer.spectral()
                return chunked.dct_branch_linear_attention(
                    v, g[..., 0, :], s.dct_amplitude, s.log_rho, T, backend=backend
                )
            return fn

        def core(requested):
            def fn(v, z, g):
                plan = resolve_backends(requested, spec.branches, device, torch.is_grad_enabled())
                return mixer_core(v, z, g, mixer.spectral(), plan)
            return fn

        def plan_label(requested: str) -> str:
            try:
                return f"{requested} ({resolve_backends(requested, spec.branches, device, True).label})"
            except SkipCell:
                return requested

        candidates = [
            ("cheb", "triton", cheb_triton, truth_cheb),
            ("cheb", "torch block-Toeplitz", cheb_torch, truth_cheb),
            ("dct", "fla", dct("fla"), truth_dct),
            ("dct", "torch chunked", dct("chunked"), truth_dct),
            ("core", plan_label("auto"), core("auto"), truth_core),
            ("core", plan_label("chunked"), core("chunked"), truth_core),
        ]
        if fits:
            candidates.append(("core", "reference (fp32 FFT)", core("reference"), truth_core))
        for part, impl, fn, truth in candidates:
            base = {"part": part, "impl": impl, "T": T, "B": B, "H": H, "P": P, "dtype": str(dtype)}
            try:
                with torch.no_grad():
                    err = relative_error(fn(v, z, gates).float(), truth)
                for mode in ("fwd", "fwd+bwd"):
                    rows.append({**base, "mode": mode, "status": "ok", "rel_err": err,
                                 **measure(fn, [v, z, gates], params, mode, args, device)})
            except SkipCell as skip:
                rows.append({**base, "mode": "-", "status": f"skipped: {skip}"})
            except torch.cuda.OutOfMemoryError:
                rows.append({**base, "mode": "-", "status": "oom"})
            except RuntimeError as err:  # e.g. Triton without CUDA in a dry run
                rows.append({**base, "mode": "-", "status": f"error: {err}"})
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = ["part", "impl", "T", "B", "mode", "ms (median)", "Mtok/s", "rel err vs fp32",
              "peak MiB", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ok = r["status"] == "ok"
        cells = [
            r["part"], r["impl"], r["T"], r["B"], r["mode"],
            f"{r['ms']:.3f}" if ok else "-",
            f"{r['B'] * r['T'] / r['ms'] / 1e3:.1f}" if ok else "-",
            f"{r['rel_err']:.1e}" if ok else "-",
            f"{r['peak_mem_mib']:.0f}" if ok and "peak_mem_mib" in r else "-",
            r["status"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from bench_mixers_gpu import environment

    args = parse_args(argv)
    rows = run(args)
    print(markdown_table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "environment": environment("cpu" if args.dry_run else "cuda"), "results": rows}
        args.out.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
