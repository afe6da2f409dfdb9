"""`bimix-bench run --plan`: the cells a run would train and what they cost on this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from bimix_bench.cli.common import console

if TYPE_CHECKING:  # the engine imports torch
    from bimix_bench.engine.plan import CellCost


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:,.1f}"


def plan_table(costs: list[CellCost], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    # cells; step cap per cell; tokens per step; seconds per step and per validation; minutes
    # with every cell trained to its cap
    for name, justify in [("model", "left"), ("subtask", "left"), ("cells", "right"),
                          ("steps", "right"), ("tok/step", "right"), ("s/step", "right"),
                          ("s/val", "right"), ("≤ min", "right")]:
        table.add_column(name, justify=justify, overflow="fold")  # names fold, never cut
    for cost in costs:
        if cost.skipped:
            table.add_row(cost.model, cost.subtask, str(cost.cells), "-", "-", "-", "-",
                          f"skipped: {cost.skipped}")
            continue
        table.add_row(cost.model, cost.subtask, str(cost.cells), f"{cost.steps:,}",
                      f"{cost.tokens_per_step:,}", f"{cost.step_s:.3f}",
                      f"{cost.validation_s:.2f}", _minutes(cost.worst_case_s))
    return table


def model_totals(costs: list[CellCost]) -> dict[str, float]:
    """Worst-case seconds per model, over its subtasks, in run order."""
    totals: dict[str, float] = {}
    for cost in costs:
        totals[cost.model] = totals.get(cost.model, 0.0) + cost.worst_case_s
    return totals


def print_plan(costs: list[CellCost], where: str, repeats: int) -> None:
    console.print(plan_table(costs, f"Plan: timed on {where}; median of {repeats} training steps "
                                    "after one warm-up"))
    totals = model_totals(costs)
    console.print("At most, every cell to its step cap (early stopping only shortens a cell; "
                  "test scoring and throughput timing come on top):")
    for model, seconds in totals.items():
        console.print(f"  {model}: {_minutes(seconds)} min")
    console.print(f"  all models: {_minutes(sum(totals.values()))} min. Nothing was trained "
                  "or written.")
