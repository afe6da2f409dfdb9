"""Where does GLA's fla forward fault with "misaligned address" (tests/test_static_decode.py's
CUDA-graph test on an H100)? One case per process, since a fault poisons the CUDA context:

    CUDA_LAUNCH_BLOCKING=1 python3 scripts/gpu/gla_fault_probe.py forward 24
    CUDA_LAUNCH_BLOCKING=1 python3 scripts/gpu/gla_fault_probe.py prefill-then-forward 24

`forward T`: the parallel forward of the test's model (width 128, two layers and heads) on a
(2, T) batch, with nothing before it. `prefill-then-forward T`: a 9-token prefill into a
decode state first (eager, no graph), as the test does before its forward.
"""

from __future__ import annotations

import sys

import torch

from tests.test_static_decode import tiny_model


def main(case: str, length: int) -> None:
    model = tiny_model("gla", "cuda", width=128)
    tokens = torch.randint(0, 97, (2, length), device="cuda",
                           generator=torch.Generator("cuda").manual_seed(3))
    with torch.no_grad():
        if case == "prefill-then-forward":
            from bimix_bench.models.static_decode import StaticDecoder
            import contextlib

            StaticDecoder(model, max_len=length, autocast=contextlib.nullcontext,
                          use_graph=False).prefill(tokens[:, :9])
        elif case != "forward":
            raise SystemExit(f"unknown case {case!r}")
        out = model(tokens)
        torch.cuda.synchronize()
    backends = sorted({getattr(m, "backend", None) for m in model.modules()} - {None})
    print(f"{case} T={length}: ok, logits {tuple(out.shape)}, backends {backends}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
