"""`bimix-bench sweep`: the runs of a plan file, resumable, within a time limit."""

from __future__ import annotations

from pathlib import Path

import typer

from bimix_bench.cli.application import app
from bimix_bench.cli.common import console
from bimix_bench.errors import UsageError


@app.command()
def sweep(
    plan: Path = typer.Argument(..., help="Plan file (YAML): `out` and a list of `runs`; see "
                                "bimix_bench/engine/sweep.py for the keys."),
    time_limit: str = typer.Option(
        None, "--time-limit", help="Start no new cell after this long (90s, 25m, 2h); the sweep "
        "stops at a cell boundary and the same command continues it."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda[:N]."),
) -> None:
    """Start or resume each run of PLAN in its own folder under the plan's `out`, in order,
    and print what is complete and what is left."""
    from rich.table import Table

    from bimix_bench.cli.ui import RichReporter
    from bimix_bench.engine.device import pick_device
    from bimix_bench.engine.sweep import load_plan, parse_duration, run_sweep

    if not plan.is_file():
        raise UsageError(f"no such plan file: {plan}")
    pick_device(device)  # a bad or unavailable --device fails here, before any folder exists
    parsed = load_plan(plan)
    seconds = parse_duration(time_limit) if time_limit is not None else None
    with RichReporter() as reporter:
        progress = run_sweep(parsed, seconds, device, reporter)
    table = Table(title=f"sweep {plan}")
    for column in ("run", "cells recorded", "state", "folder"):
        table.add_column(column)
    for p in progress:
        table.add_row(p.name, f"{p.recorded} of {p.cells}", p.state, str(p.folder))
    console.print(table)
    left = [p for p in progress if p.state != "complete"]
    if left:
        console.print(f"{sum(p.cells - p.recorded for p in left)} cells left in {len(left)} run(s); "
                      f"continue with: bimix-bench sweep {plan}"
                      + (f" --time-limit {time_limit}" if time_limit else ""))
