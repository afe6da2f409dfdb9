"""Is a model's speed set by the host or by the GPU? Kernel launches, host seconds and kernel
seconds per call of the `speed` command's workloads, for models sized to a budget
(see bimix_bench/speed/host_share.py for what each figure means).

    python scripts/host_share.py --budget small --context 4096 --models bimix,transformer --out hs.json
    python scripts/host_share.py --table process1.json process2.json   # one table over processes

Run it in several processes to see whether a model's speed moves with the host: a launch-bound
model's host_over_busy is near or above 1, a device-bound one's well below.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tabulate import tabulate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="small", help="budget name or YAML path")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--tokens-per-batch", type=int, default=32768)
    parser.add_argument("--models", default="bimix,transformer,mamba2,gla,linear_attn")
    parser.add_argument("--kinds", default="forward,train,decode")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    parser.add_argument("--table", type=Path, nargs="+", default=None, metavar="JSON",
                        help="print the markdown table of these documents (several processes) "
                             "instead of measuring")
    args = parser.parse_args(argv)
    if args.table:
        from bimix_bench.speed.host_share import markdown_table

        print(markdown_table([json.loads(path.read_text()) for path in args.table]))
        return {}

    from bimix_bench.config import load_budget
    from bimix_bench.config.sections import train_config
    from bimix_bench.engine.device import autocast_factory, pick_device, resolved_precision
    from bimix_bench.env import environment_info
    from bimix_bench.speed.host_share import measure
    from bimix_bench.speed.sweep import sized_model
    from bimix_bench.speed.workloads import build_cell

    device = pick_device(args.device)
    autocast = autocast_factory(device, resolved_precision(device, "auto"))
    kinds = tuple(k for k in args.kinds.split(",") if k)
    train = train_config(load_budget(args.budget))
    figures: dict[str, dict] = {}
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        model = sized_model(name, args.budget, args.context, device)
        cell = build_cell(model, args.context, args.tokens_per_batch, kinds, device, autocast,
                          train, args.decode_tokens)
        figures[name] = {"unavailable": cell.unavailable}
        for kind, work in cell.workloads.items():
            share = measure(work.timed.run, device, args.repeats, setup=work.timed.setup)
            figures[name][kind] = {**share.to_dict(), "backend": work.backend, "shape": work.shape}
            rows.append([name, kind, share.launches, f"{share.host_s * 1e3:.2f}",
                         f"{share.busy_s * 1e3:.2f}", f"{share.elapsed_s * 1e3:.2f}",
                         f"{share.host_over_busy:.2f}", "yes" if share.synchronizes else ""])
        del model, cell
    print(tabulate(rows, headers=["model", "kind", "launches", "host ms", "kernel ms", "elapsed ms",
                                  "host/kernel", "syncs"]))
    for name, kinds_of in figures.items():
        for kind, row in kinds_of.items():
            if kind != "unavailable" and row["sync_sites"]:
                print(f"{name} {kind} waits for the GPU at: {', '.join(row['sync_sites'])}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "device": str(device), "environment": environment_info(),
            "settings": vars(args) | {"out": str(args.out)}, "models": figures,
        }, indent=1) + "\n")
        print(f"wrote {args.out}")
    return figures


if __name__ == "__main__":
    main()
