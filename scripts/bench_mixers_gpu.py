#!/usr/bin/env python3
"""Time token-mixer layers on a GPU: forward and forward+backward, bf16.

Default setting (the design's reference point): B*T = 32768 tokens, d_model 1024, 16 heads of
64, T in {2048, 8192, 32768}, models transformer (causal SDPA), linear_attn, gla, mamba2.
Any registered model can be added by name (--models ...,bimix); each is built through the
registry with a MixerConfig and its default options (override with --option name.key=value).
A forward-only call runs under torch.no_grad(), so "auto" backends may pick a kernel there that
they avoid when a backward follows; each row says which backend ran and why.

Timing: warm-up calls first (Triton autotuning, cuDNN/SDPA selection), then CUDA events around
each repeat, median reported; peak memory is measured over the timed repeats.

    python scripts/bench_mixers_gpu.py --out runs/bench_mixers.json
    python scripts/bench_mixers_gpu.py --models gla,mamba2 --seq-lens 8192 --option gla.backend=chunked
    python scripts/bench_mixers_gpu.py --dry-run --out runs/bench_dry.json  # tiny shapes on CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

if __name__ == "__main__":  # run as a file from a checkout: import the package beside it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_MODELS = "transformer,linear_attn,gla,mamba2"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated registry names")
    p.add_argument("--seq-lens", default="2048,8192,32768")
    p.add_argument("--tokens", type=int, default=32768, help="B*T per call")
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--n-heads", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="override a model option, e.g. gla.backend=chunked (repeatable)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny shapes on CPU in float32, to check the script itself")
    args = p.parse_args(argv)
    if args.dry_run:
        args.seq_lens, args.tokens, args.d_model, args.n_heads = "16,32", 64, 64, 4
        args.dtype, args.warmup, args.repeats = "float32", 1, 2
    return args


def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, raw = item.partition("=")
        model, _, option = key.partition(".")
        if not (model and option and raw):
            raise SystemExit(f"--option {item!r}: expected NAME.KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(model, {})[option] = value
    return out


def build_mixer(name: str, d_model: int, n_heads: int, max_seq_len: int,
                overrides: dict[str, Any]) -> nn.Module:
    from bimix_bench.models.mixer import MixerConfig, TrainProgress
    from bimix_bench.registry import MODELS

    spec = MODELS.get(name).obj
    options = {**spec.default_options, **overrides}
    cfg = MixerConfig(d_model, n_heads, layer_idx=0, n_layers=1, max_seq_len=max_seq_len, options=options)
    mixer = spec.mixer_cls(cfg)
    # Time every mixer as it is once training has finished (e.g. BiMix on its gating network
    # rather than its phase-1 static gates); lr = 0 makes the hook change no weights.
    mixer.after_optimizer_step(TrainProgress(step=1, total_steps=1, lr=0.0))
    return mixer


def bench_mixer(mixer: nn.Module, batch: int, seq_len: int, d_model: int, mode: str,
                args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    x = torch.randn(batch, seq_len, d_model, device=device, dtype=dtype)
    params = [p for p in mixer.parameters() if p.requires_grad]
    if mode == "fwd":
        def step() -> Any:
            with torch.no_grad():
                return mixer(x)
    else:
        x.requires_grad_(True)
        grad_out = torch.randn_like(x)

        def step() -> Any:  # autograd.grad: no .grad accumulation inside the timing
            return torch.autograd.grad(mixer(x), [x] + params, grad_out, allow_unused=True)

    row = timed_row(step, args, device)
    row.update(tokens_per_s=batch * seq_len / (row["ms"] / 1e3),
               backend=getattr(mixer, "backend", "?"),
               backend_reason=getattr(mixer, "backend_reason", ""))
    return row


def timed_row(step: Callable[[], Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Median and best milliseconds of `step` and, on CUDA, the peak memory it adds (MiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    from bimix_bench.timing import timed_samples

    times = [1e3 * t for t in timed_samples(step, device, args.warmup, args.repeats, cuda_events=True)]
    row: dict[str, Any] = {"ms": statistics.median(times), "ms_min": min(times)}
    if device.type == "cuda":
        row["peak_mem_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return row


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bimix_bench.errors import SkipCell

    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --dry-run to check the script on CPU)")
    dtype = getattr(torch, args.dtype)
    overrides = parse_options(args.option)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for seq_len in [int(t) for t in args.seq_lens.split(",")]:
            batch = max(1, args.tokens // seq_len)
            base = {"model": name, "T": seq_len, "B": batch, "d_model": args.d_model,
                    "n_heads": args.n_heads, "dtype": args.dtype}
            try:
                torch.manual_seed(0)
                mixer = build_mixer(name, args.d_model, args.n_heads, seq_len, overrides.get(name, {}))
                mixer = mixer.to(device=device, dtype=dtype)
            except SkipCell as err:
                rows.append({**base, "mode": "-", "status": f"skipped: {err}"})
                continue
            except Exception as err:  # unknown name, or a model failing to build here
                rows.append({**base, "mode": "-", "status": f"error: {type(err).__name__}: {err}"})
                continue
            for mode in ("fwd", "fwd+bwd"):
                try:
                    result = bench_mixer(mixer, batch, seq_len, args.d_model, mode, args, device, dtype)
                    rows.append({**base, "mode": mode, "status": "ok", **result})
                except torch.cuda.OutOfMemoryError:
                    rows.append({**base, "mode": mode, "status": "oom"})
                except SkipCell as err:
                    rows.append({**base, "mode": mode, "status": f"skipped: {err}"})
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            del mixer
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "T", "B", "mode", "backend", "ms (median)", "Mtok/s", "peak MiB", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ok = r["status"] == "ok"
        cells = [
            r["model"], r["T"], r["B"], r["mode"], r.get("backend", "-"),
            f"{r['ms']:.3f}" if ok else "-",
            f"{r['tokens_per_s'] / 1e6:.1f}" if ok else "-",
            f"{r['peak_mem_mib']:.0f}" if ok and "peak_mem_mib" in r else "-",
            r["status"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def environment(device_type: str) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device_type == "cuda":
        env["device"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    rows = run(args)
    print(markdown_table(rows))
    for r in rows:
        if r["status"] == "ok":
            print(f"  {r['model']} T={r['T']} {r['mode']}: {r['backend']} — {r['backend_reason']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "environment": environment("cpu" if args.dry_run else "cuda"), "results": rows}
        args.out.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
