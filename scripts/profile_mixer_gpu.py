"""Where a mixer's time goes on a GPU: torch.profiler over forward+backward of one layer at
B*T = 32K tokens (default D = 1024, 16 heads, bf16), kernels grouped and sorted by CUDA time.

    python scripts/profile_mixer_gpu.py --model bimix --seq-len 32768 --out profile.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bimix")
    parser.add_argument("--seq-len", type=int, default=32768)
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--n-heads", type=int, default=16)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from bimix_bench.models.mixer import MixerConfig, TrainProgress
    from bimix_bench.registry import MODELS

    spec = MODELS.get(args.model).obj
    cfg = MixerConfig(args.d_model, args.n_heads, 0, 1, args.seq_len, dict(spec.default_options))
    mixer = spec.mixer_cls(cfg).cuda()
    mixer.after_optimizer_step(TrainProgress(1, 1, 0.0))  # end-of-training state, no weight change
    x = torch.randn(args.tokens // args.seq_len, args.seq_len, args.d_model, device="cuda",
                    requires_grad=True)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = mixer(x)
        y.float().square().mean().backward()

    for _ in range(3):  # compile / autotune outside the profile
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=70)
    header = (f"# {args.model}: forward+backward, B*T={args.tokens}, T={args.seq_len}, D={args.d_model}, "
              f"{args.n_heads} heads, bf16 autocast, 5 steps ({mixer.backend})\n\n")
    print(header + table)
    if args.out:
        args.out.write_text(header + "```\n" + table + "\n```\n")


if __name__ == "__main__":
    main()
