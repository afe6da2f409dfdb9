"""`bimix-bench run`: train and score every model under one budget on one task family."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bimix_bench.cli.application import app
from bimix_bench.cli.common import console, parse_seeds, split_names
from bimix_bench.errors import UsageError

if TYPE_CHECKING:  # the runner imports torch: loaded only when a run starts
    from bimix_bench.engine.runner import RunRequest


@app.command()
def run(
    task: str = typer.Option(
        None, "--task", "-t", help="Task family, e.g. lra (see `bimix-bench list`); required unless --resume."
    ),
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
        None, "--out", "-o", help="Run folder (default: a new folder in runs/ named by time, task and budget)."
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Folder with real data sets (e.g. the LRA release); default: the "
        "offline generated data.",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda[:N]."),
    checkpoints: bool = typer.Option(
        True, "--checkpoints/--no-checkpoints", help="Keep each cell's best weights in the run folder."
    ),
    resume: Path = typer.Option(
        None, "--resume", help="Continue an interrupted run folder with its saved config: finished "
        "cells are kept, an unfinished training continues from its last validation.",
    ),
    lr_from: Path = typer.Option(
        None, "--lr-from", help="Train every cell at the learning rate that the grid of an earlier "
        "run (a run folder, or a folder of them) chose on validation for the same model and "
        "subtask: the later seeds of a grid that ran elsewhere. Refused when that grid is "
        "unfinished or its protocol differs from this run's.",
    ),
    nproc: int = typer.Option(
        None, "--nproc", help="Data-parallel training over N processes on this host (torchrun, "
        "DDP; one GPU each, or gloo on CPU). Same global batch, tokens and schedule.",
    ),
    gpus: str = typer.Option(
        None, "--gpus", help="Spread independent cells over worker processes, one per listed GPU "
        "(0,1,2,3). A learning-rate grid trains its rates side by side, then its later seeds at "
        "the chosen rate in a second round. Throughput is measured after training, one cell at a "
        "time, with the device to itself. An index may repeat (0,0): models too small to fill a "
        "GPU (the cpu budget's) gain from it; at the small budget cells side by side were slower "
        "than one after another (docs/scaling.md).",
    ),
    plan: bool = typer.Option(
        False, "--plan", help="Train nothing: list the cells the run would train (with --resume, "
        "those still to train) and what they cost on this machine, from one training step and "
        "one validation timed per model and subtask; the worst case is every cell to its step "
        "cap.",
    ),
    shard: str = typer.Option(None, "--shard", hidden=True, help="k/N: run every N-th cell (used by --gpus)."),
    defer_throughput: bool = typer.Option(
        False, "--defer-throughput", hidden=True,
        help="Park trained cells in RUN/pending/ instead of timing them (used by --gpus workers).",
    ),
) -> None:
    """Train and evaluate every model on TASK under one matched budget.

    Each (subtask, seed, model) cell: solve the width for the budget's non-embedding parameter
    target, train on identical tokens with the same optimizer and schedule, keep the best
    validation checkpoint, score the test split, measure throughput, append one JSON record.
    Tables (summary.md, summary.csv) are rewritten after every cell.
    """
    from bimix_bench.cli.ui import RUN_VIEW, RichReporter, records_table
    from bimix_bench.engine.device import pick_device
    from bimix_bench.engine.runner import RunRequest, execute
    from bimix_bench.results.records import as_compared, resume_records, run_records
    from bimix_bench.results.tables import records_frame

    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a readable folder")
    if task is None and resume is None:
        raise UsageError("missing --task (or --resume RUN_DIR)")
    if resume is not None and not resume.is_dir():
        raise UsageError(f"--resume {resume}: no such run folder")
    pick_device(device)  # a bad or unavailable --device fails here, before any folder exists
    if resume is not None:
        resume_records(resume)  # a corrupt records file: exit 2; a torn last line is cut off
    request = RunRequest(
        task=task or "", resume=resume, budget=budget, models=split_names(models), seeds=parse_seeds(seeds),
        subtasks=split_names(subtasks), overrides=list(overrides), out_dir=out,
        data_dir=data_dir, device=device, save_checkpoints=checkpoints, shard=_parse_shard(shard),
        defer_throughput=defer_throughput, lr_from=lr_from,
    )
    if plan:
        if nproc is not None or gpus is not None:
            raise UsageError("--plan times one process on --device; drop --nproc/--gpus")
        _print_plan(request)
        return
    if nproc is not None or gpus is not None:
        run_dir = _launch(request, nproc, gpus)
    else:
        with RichReporter() as reporter:
            run_dir = execute(request, reporter)
        if int(os.environ.get("RANK", "0")) != 0:
            return  # torchrun worker: rank 0 reports
    frame = records_frame(as_compared(run_records(run_dir)))
    console.print(records_table(frame, run_dir.name, RUN_VIEW, width=console.width))
    console.print(f"records: {run_dir / 'records.jsonl'}   tables: {run_dir / 'summary.md'}")



def _print_plan(request: RunRequest) -> None:
    """The cells `request` would train and their cost here (engine/plan.py)."""
    from bimix_bench.cli.plan_view import print_plan
    from bimix_bench.engine.device import pick_device
    from bimix_bench.engine.plan import plan_costs, timing_place
    from bimix_bench.engine.runner import prepare, unfinished_cells

    cfg, cells, task = prepare(request)
    if request.resume is not None:
        cells = unfinished_cells(request.resume, cells)
        data_dir = cfg["run"].get("data_dir")
        request.data_dir = Path(data_dir) if data_dir else None
    if not cells:
        console.print("nothing to train: every cell of the run is recorded")
        return
    device = pick_device(request.device)
    repeats = 3
    with console.status("timing") as status:
        costs = plan_costs(cfg, cells, task, device, request.data_dir, repeats,
                           progress=status.update)
    print_plan(costs, timing_place(device), repeats)


def _launch(request: RunRequest, nproc: int | None, gpus: str | None) -> Path:
    """Re-run this command in worker processes: torchrun ranks, or one worker per GPU."""
    import sys

    from bimix_bench.engine.distributed import launch_torchrun
    from bimix_bench.engine.runner import default_run_dir, initialise_run

    if nproc is not None and gpus is not None:
        raise UsageError("use either --nproc (one data-parallel training) or --gpus (cells spread over GPUs)")
    run_dir = Path(request.resume or request.out_dir or default_run_dir(request.task, request.budget))
    if nproc is not None:
        argv = sys.argv[1:]
        args = _strip_option(argv[argv.index("run"):] if "run" in argv else ["run", *argv], "--nproc")
        if request.resume is None and request.out_dir is None:
            args += ["--out", str(run_dir)]
        _check_workers(launch_torchrun(args, nproc), run_dir)
        return run_dir
    gpu_ids = parse_seeds(gpus) or []
    if not gpu_ids:
        raise UsageError("--gpus expects comma-separated GPU indices, e.g. 0,1")
    if request.resume is None:  # write the run's config once; every worker resumes it
        request.out_dir = run_dir
        initialise_run(request)
    worker_args = ["run", "--resume", str(run_dir), "--device", request.device, "--defer-throughput"]
    if not request.save_checkpoints:
        worker_args.append("--no-checkpoints")
    return _cell_worker_rounds(run_dir, worker_args, gpu_ids, request)


def _check_workers(code: int, run_dir: Path) -> None:
    if code != 0:
        raise UsageError(f"worker processes failed (exit status {code}); finished cells are in "
                         f"{run_dir} (`--resume` it)")


def _cell_worker_rounds(run_dir: Path, worker_args: list[str], gpu_ids: list[int],
                        request: RunRequest) -> Path:
    """Rounds of `--gpus` workers: each round trains every cell that is ready (a learning-rate
    grid's rates side by side; a later seed once its grid is recorded), then times the cells
    the workers parked, one at a time, with the GPUs free. A grid's later seeds are ready in
    the round after it."""
    from bimix_bench.engine.distributed import launch_cell_workers
    from bimix_bench.engine.runner import cells_ready_to_train, complete_run

    # Cells parked by an interrupted earlier launch are timed and recorded first: a round's
    # workers split the unrecorded cells among them.
    complete_run(run_dir, request.device, request.save_checkpoints, reporter=_PrintNotes())
    before: list = []
    while True:
        _check_workers(launch_cell_workers(worker_args, gpu_ids), run_dir)
        complete_run(run_dir, request.device, request.save_checkpoints, reporter=_PrintNotes())
        ready = cells_ready_to_train(run_dir)
        if not ready:
            return run_dir
        if ready == before:  # a round that recorded none of its cells would repeat forever
            raise UsageError(f"a round of workers left its cells unrecorded in {run_dir} "
                             "(`--resume` it)")
        before = ready
        console.print(f"{len(ready)} more cells ready (later seeds at their grid's chosen rate): "
                      "another round of workers")


class _PrintNotes:
    def note(self, message: str) -> None:
        console.print(message)


def _strip_option(args: list[str], option: str) -> list[str]:
    """Remove `option VALUE` and `option=VALUE` from an argument list."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        raise UsageError(f"--shard expects k/N with 0 <= k < N, got {text!r}") from None
    return k, n
