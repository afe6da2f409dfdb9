"""`bimix-bench list`: what can be run — models, tasks with their subtasks, budgets, and the
training protocol each task family runs at each budget."""

from __future__ import annotations

import typer

from bimix_bench.cli.application import app
from bimix_bench.errors import UsageError

SECTIONS = ("models", "tasks", "budgets", "protocols")


@app.command("list")
def list_(
    what: str = typer.Argument("all", help="What to list: models, tasks, budgets, protocols or all."),
) -> None:
    """List registered models, task families (with subtasks), budgets, and each family's
    training protocol per budget (default subtasks, steps, batch, learning-rate grid, early
    stopping)."""
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
    if what in ("all", "protocols"):
        console.print(protocols_table(TASKS, budget_names()))
    errors = {**MODELS.load_errors, **TASKS.load_errors}  # empty unless a registry was loaded
    for name, message in errors.items():
        console.print(f"[yellow]not loaded: {name}: {message}[/yellow]")


def protocols_table(tasks, budgets):
    """One row per task family and budget: what `run --task T --budget B` trains by default
    (a subtask with its own protocol shows its steps beside the family's), then the name and
    source of each protocol that is not the budget's default, one line each: narrow enough to
    read at 80 columns."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from bimix_bench.config import load_budget, resolve_config, subtask_train
    from bimix_bench.config.sections import BUDGET_PROTOCOL, train_config

    table = Table(title="training protocol per task and budget")
    table.add_column("task", no_wrap=True)
    table.add_column("budget", no_wrap=True)
    table.add_column("default subtasks", ratio=1)
    table.add_column("training", ratio=2)
    names = []
    budget_heads = {budget: load_budget(budget)["arch"]["n_heads"] for budget in budgets}
    for entry in tasks:
        for budget in budgets:
            cfg = resolve_config(budget, entry.name, entry.obj.defaults(budget), {}, [])
            train = train_config(cfg)
            steps = f"{train.epochs} epochs" if train.epochs else f"{train.steps:,} steps"
            own = {sub: train_config({**cfg, "train": subtask_train(cfg, sub)})
                   for sub in cfg["task"].get("subtask_protocol") or {}}
            if own:
                steps += " (" + ", ".join(f"{sub}: {t.steps:,}" for sub, t in own.items()) + ")"
            batch = (f"{train.batch_sequences} sequences" if train.batch_sequences
                     else f"{train.batch_tokens:,} tokens")
            parts = [steps, f"{batch} a step", "lr " + ", ".join(f"{r:g}" for r in train.rates())]
            if train.early_stop_at:
                parts.append(f"early stop at {train.early_stop_at:g}")
            heads = cfg["arch"]["n_heads"]
            if heads != budget_heads[budget]:  # the family splits the budget's width its own way
                parts.append(f"{heads} heads (the budget's: {budget_heads[budget]})")
            table.add_row(entry.name, budget, ", ".join(cfg["task"]["subtasks"]) or "none",
                          "; ".join(parts))
            if train.protocol != BUDGET_PROTOCOL:
                names.append(f"{entry.name} at {budget}: {train.protocol}")
            names += [f"{entry.name} at {budget}, {sub}: {t.protocol}"
                      for sub, t in own.items() if t.protocol != train.protocol]
    return Group(table, Text("\n".join(names)))
