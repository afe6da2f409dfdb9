"""What finished runs would have cost on this machine: each record's steps, re-timed here.

Cells trained elsewhere (the cpu budget's MQAR on a GPU) say how many steps each took, early
stops included. This times one training step and one validation per (model, subtask) here,
through the same path as `bimix-bench run --plan` (engine/plan.py), and sums every record's
steps and validations at those costs, per model: the training and validation time the same
cells would take on this machine (test scoring and throughput timing not counted).
docs/protocols.md reads it:

    python scripts/recost_records.py results/gpu/mqar_cpu_t64_seed0 \
        results/gpu/mqar_cpu_t64_seeds12 results/gpu/mqar_cpu_t128 results/gpu/mqar_cpu_budget
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from bimix_bench.engine.plan import plan_costs, timing_place
from bimix_bench.engine.runner import RunRequest, prepare
from bimix_bench.results.records import run_records


def records_under(folders: list[str]) -> list[dict]:
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("records.jsonl")):
            found += [r for r in run_records(path.parent) if r.get("status") == "ok"]
    return found


def variant_overrides(model: str, variant: str | None) -> list[str]:
    """`--set` lines that build a record's model variant ("chunk_size=8,window=16")."""
    if not variant:
        return []
    return [f"models.{model}.{pair}" for pair in variant.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="result folders (searched for records.jsonl)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records_under(args.folders):
        key = (rec["task"], rec["budget"], rec["model"], rec.get("variant"), rec["subtask"])
        groups[key].append(rec)
    device = torch.device("cpu")
    print(f"{timing_place(device)}; median of {args.repeats} training steps after one warm-up")
    per_model: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for (task, budget, model, variant, subtask), records in sorted(groups.items(), key=str):
        request = RunRequest(task=task, budget=budget, models=[model], subtasks=[subtask],
                             seeds=[0], overrides=variant_overrides(model, variant))
        cfg, cells, task_obj = prepare(request)
        # (the plan's cells differ from the records' only in number: one timing per group)
        cost = plan_costs(cfg, cells[:1], task_obj, device, repeats=args.repeats)[0]
        label = model + (f"@{variant}" if variant else "")
        as_trained = sum(cost.cell_s(int(r["steps"])) for r in records)
        at_cap = len(records) * cost.cell_s()
        steps = sum(int(r["steps"]) for r in records)
        print(f"{label} {subtask}: {len(records)} cells, {steps:,} steps, {cost.step_s:.3f} s/step,"
              f" {as_trained / 60:.1f} min as trained ({at_cap / 60:.1f} at the cap)")
        total = per_model[label]
        total[0] += as_trained
        total[1] += at_cap
        total[2] += len(records)
    print("per model, every subtask:")
    for label, (as_trained, at_cap, n) in per_model.items():
        print(f"  {label}: {n} cells, {as_trained / 60:.1f} min as trained, "
              f"{at_cap / 60:.1f} at the cap")


if __name__ == "__main__":
    main()
