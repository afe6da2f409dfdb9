"""`bimix-bench run`: train and score every model under one budget on one task family."""

from __future__ import annotations

from pathlib import Path

import typer

from bimix_bench.cli.app import app
from bimix_bench.cli.common import console, parse_seeds, split_names
from bimix_bench.engine.runner import RunRequest, execute
from bimix_bench.errors import UsageError


@app.command()
def run(
    task: str = typer.Option(..., "--task", "-t", help="Task family, e.g. lra (see `bimix-bench list`)."),
    budget: str = typer.Option(
        "tiny", "--budget", "-b",
        help="Budget name (tiny, small, medium, large) or a budget YAML file: fixes parameters, "
        "depth, tokens, schedule and evaluation sizes for every model alike.",
    ),
    models: str = typer.Option(
        None, "--models", "-m", help="Comma-separated models to run (default: every registered model)."
    ),
    seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds (default: the budget's)."),
    subtasks: str = typer.Option(
        None, "--subtasks", help="Comma-separated subtasks of the family (default: the family's)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config key, e.g. --set train.steps=100 (repeatable; dotted keys; "
        "the value keeps the key's type; unknown keys are rejected).",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Run folder (default: runs/<time>-<task>-<budget>-<id>)."
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Folder with real data sets (e.g. the LRA release); default: the "
        "offline generated data.",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda[:N]."),
    checkpoints: bool = typer.Option(
        True, "--checkpoints/--no-checkpoints", help="Keep each cell's best weights in the run folder."
    ),
) -> None:
    """Train and evaluate every model on TASK under one matched budget.

    Each (subtask, seed, model) cell: solve the width for the budget's non-embedding parameter
    target, train on identical tokens with the same optimizer and schedule, keep the best
    validation checkpoint, score the test split, measure throughput, append one JSON record.
    Tables (summary.md, summary.csv) are rewritten after every cell.
    """
    from bimix_bench.cli.ui import RUN_VIEW, RichReporter, records_table
    from bimix_bench.results.records import read_records
    from bimix_bench.results.tables import records_frame

    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a readable folder")
    request = RunRequest(
        task=task, budget=budget, models=split_names(models), seeds=parse_seeds(seeds),
        subtasks=split_names(subtasks), overrides=list(overrides), out_dir=out,
        data_dir=data_dir, device=device, save_checkpoints=checkpoints,
    )
    with RichReporter() as reporter:
        run_dir = execute(request, reporter)
    frame = records_frame(read_records(run_dir))
    console.print(records_table(frame, f"{task} / {budget}", RUN_VIEW))
    console.print(f"records: {run_dir / 'records.jsonl'}   tables: {run_dir / 'summary.md'}")
