"""`bimix-bench list`: what can be run — models, tasks with their subtasks, budgets."""

from __future__ import annotations

import typer

from bimix_bench.cli.application import app
from bimix_bench.errors import UsageError

SECTIONS = ("models", "tasks", "budgets")


@app.command("list")
def list_(
    what: str = typer.Argument("all", help="What to list: models, tasks, budgets or all."),
) -> None:
    """List registered models, task families (with subtasks) and budgets."""
    if what != "all" and what not in SECTIONS:
        raise UsageError(f"unknown section {what!r}; valid: all, {', '.join(SECTIONS)}")
    # Imported here, not at module level, so `bimix-bench --help` stays fast; the registries
    # load their plugins (torch) only when models or tasks are listed.
    from rich.table import Table

    from bimix_bench.cli.common import console
    from bimix_bench.config import budget_names, load_budget
    from bimix_bench.config.sections import arch_config, params_config, train_config
    from bimix_bench.registry import MODELS, TASKS

    if what in ("all", "models"):
        table = Table(title="models")
        for col in ("name", "description", "source"):
            table.add_column(col)
        for entry in MODELS:
            table.add_row(entry.name, entry.description, entry.source)
        console.print(table)
    if what in ("all", "tasks"):
        table = Table(title="tasks")
        for col in ("name", "subtasks", "description", "source"):
            table.add_column(col)
        for entry in TASKS:
            subs = ", ".join(s.name for s in entry.obj.subtasks())
            table.add_row(entry.name, subs, entry.description, entry.source)
        console.print(table)
        table = Table(title="where each subtask separates models (some model above chance)")
        for col in ("task", "subtask", "informative"):
            table.add_column(col, overflow="fold")
        for entry in TASKS:
            for sub, where in entry.obj.informative().items():
                table.add_row(entry.name, sub, where)
        console.print(table)
    if what in ("all", "budgets"):
        table = Table(title="budgets")
        for col in ("name", "non-embedding params", "layers", "steps", "tokens/step", "description"):
            table.add_column(col)
        for name in budget_names():
            b = load_budget(name)
            train = train_config(b)
            table.add_row(name, f"{params_config(b).non_embedding:,}", str(arch_config(b).n_layers),
                          str(train.steps), f"{train.batch_tokens:,}", b.get("description", ""))
        console.print(table)
    errors = {**MODELS.load_errors, **TASKS.load_errors}  # empty unless a registry was loaded
    for name, message in errors.items():
        console.print(f"[yellow]not loaded: {name}: {message}[/yellow]")
