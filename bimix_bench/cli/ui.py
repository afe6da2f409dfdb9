"""Rich rendering for runs: live progress while training, a results table at the end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from bimix_bench.cli.common import console
from bimix_bench.metrics.selection import metric_direction

if TYPE_CHECKING:  # annotations only: the engine imports torch
    from bimix_bench.engine.runner import Cell
    from bimix_bench.engine.trainer import StepInfo


class RichReporter:
    """Two bars: the sweep (cells done) and the current cell (step, loss, tokens/s, ETA)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.sweep: TaskID | None = None
        self.current: TaskID | None = None
        self._last_note = ""
        self._started = False

    def __enter__(self) -> "RichReporter":
        return self  # the bars start with the run: a run refused before then prints nothing

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            self.progress.stop()

    def run_started(self, run_dir: Path, cells: list[Cell]) -> None:
        self.progress.start()
        self._started = True
        console.print(f"[bold]run folder[/bold] {run_dir}  ({len(cells)} cells)")
        self.sweep = self.progress.add_task("sweep", total=len(cells), status="")

    def cell_started(self, cell: Cell, detail: str) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.progress.console.print(f"[cyan]{cell.subtask}[/cyan] seed {cell.seed} "
                                    f"[bold]{cell.model}[/bold]: {detail}")
        self.current = self.progress.add_task(f"{cell.model:>12} {cell.subtask}", total=None, status="")

    def step(self, cell: Cell, info: StepInfo) -> None:
        # The loss is read from the device at log intervals only; before the first read it is NaN.
        status = "loss -" if math.isnan(info.loss) else f"loss {info.loss:.3f}"
        if info.tokens_per_s:
            status += f"  {info.tokens_per_s:,.0f} tok/s"
        if info.val:
            status += "  val " + " ".join(f"{k}={v:.3f}" for k, v in info.val.items()
                                         if k in ("accuracy", "bits_per_byte"))
        self.progress.update(self.current, total=info.total_steps, completed=info.step, status=status)

    def cell_finished(self, cell: Cell, record: dict[str, Any]) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None
        if record["status"] != "ok":
            reason = record.get("reason")
            if record["status"] == "skipped" and reason and reason in self._last_note:
                reason = "see above"  # the data-level skip was just printed by note()
            self.progress.console.print(
                f"[yellow]{cell.model} {cell.subtask} seed {cell.seed}: {record['status']}[/yellow]"
                f" ({reason})")
        self.progress.update(self.sweep, advance=1, status=f"last: {cell.model} {record['status']}")

    def note(self, message: str) -> None:
        self._last_note = message
        self.progress.console.print(f"[yellow]{message}[/yellow]")


# Short headers for the columns worth showing in a terminal; the files keep every column.
RUN_VIEW = {
    "subtask": "subtask", "model": "model", "seed": "seed", "status": "status",
    "params_non_embedding": "params", "metric": "metric", "metric_value": "test",
    "train_tokens_per_s": "train tok/s", "inference_tokens_per_s": "infer tok/s",
    "decode_tokens_per_s": "decode tok/s", "backend": "backend", "wall_time_s": "time s",
}


# Columns given up first when the terminal is too narrow for all (the files keep everything).
# Never "seed": without it, two seeds of one model read as duplicate rows.
DROP_WHEN_NARROW = ("wall_time_s", "status", "params_non_embedding", "params", "budget",
                    "n_ok", "metric", "decode_tokens_per_s", "decode tok/s", "not_ok", "backend",
                    "lr", "infer tok/s", "Δ vs transformer")
# Names are never broken across lines: long cells fold, these stay whole.
NO_WRAP = ("task", "subtask", "model")


def records_table(frame, title: str, view: dict[str, str] | None = None,
                  width: int | None = None) -> Table:
    """A Rich table of the `view` columns (name -> header) present in `frame`. Given the
    terminal `width`, columns of DROP_WHEN_NARROW are left out, in that order, until the rest
    fits without folding every cell; the caption says which."""
    view = view or {c: c for c in frame.columns}
    columns = [c for c in view if c in frame.columns]
    cells = {c: [_fmt(v) for v in frame[c]] for c in columns}
    needed = {c: max([len(view[c])] + [len(x) for x in cells[c]]) + 3 for c in columns}
    empty = tuple(c for c in columns if all(x in ("", "-") for x in cells[c]))
    dropped = []
    for column in empty + DROP_WHEN_NARROW:
        if width is None or sum(needed[c] for c in columns) + 1 <= width:
            break
        if column in columns:
            columns.remove(column)
            if column not in empty:
                dropped.append(view[column])
    caption = f"not shown at this width: {', '.join(dropped)}" if dropped else None
    table = Table(title=title, show_lines=False, caption=caption)
    for column in columns:
        whole = column in NO_WRAP
        table.add_column(view[column], overflow="fold", no_wrap=whole,
                         min_width=needed[column] - 3 if whole else None)
    for i in range(len(frame)):  # Text: a label like "hsa[window=16]" is not Rich markup
        table.add_row(*[Text(cells[c][i]) for c in columns])
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return "-" if value is None else str(value)


__all__ = ["RichReporter", "records_table", "metric_direction"]
