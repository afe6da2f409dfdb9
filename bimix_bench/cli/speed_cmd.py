"""`bimix-bench speed`: throughput of every model over context lengths, at matched parameters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from bimix_bench.cli.application import app
from bimix_bench.cli.common import console, split_names
from bimix_bench.errors import UsageError

if TYPE_CHECKING:
    from rich.table import Table

GPU_CONTEXTS = "1024,2048,4096,8192,16384,32768,65536"
CPU_CONTEXTS = "256,512,1024"
GPU_TOKENS, CPU_TOKENS = 32768, 2048


@app.command()
def speed(
    models: str = typer.Option(None, "--models", "-m", help="Comma-separated models (default: all registered)."),
    contexts: str = typer.Option(
        None, "--contexts", help="Comma-separated context lengths (default: "
        f"{GPU_CONTEXTS.replace(',', ', ')} on GPU; {CPU_CONTEXTS.replace(',', ', ')} on CPU)."),
    tokens_per_batch: int = typer.Option(
        None, "--tokens-per-batch", help=f"B x T per call, kept constant over contexts (default: "
        f"{GPU_TOKENS} on GPU, {CPU_TOKENS} on CPU)."),
    budget: str = typer.Option(
        None, "--budget", "-b", help="Budget whose parameter target, depth and heads size the "
        "models (default: small on GPU, tiny on CPU)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda[:N]."),
    kinds: str = typer.Option("forward,train,decode", "--kinds", help="What to time: forward, train, decode."),
    decode_tokens: int = typer.Option(None, "--decode-tokens", help="Decode steps per call (default: the budget's)."),
    repeats: int = typer.Option(None, "--repeats", help="Timed rounds; figures are medians (default: the budget's)."),
    warmup: int = typer.Option(None, "--warmup", help="Untimed warm-up calls (autotune, caches; default: the budget's)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32."),
    threads: int = typer.Option(None, "--threads", help="CPU: torch threads (default: torch's own setting)."),
    clock: str = typer.Option(
        "wall", "--clock", help="wall, or cpu (process CPU time: insensitive to other processes; CPU "
        "only, best with --threads 1)."),
    interleave: str = typer.Option(
        "cell", "--interleave", help="cell: time one (model, context) at a time (least memory); all: "
        "build everything, then go round-robin over all of it (most robust to drifting load)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Model option, e.g. --set models.gla.backend=reference (repeatable)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the speed document (JSON) here."),
    plot: Path = typer.Option(None, "--plot", help="Write tokens/s vs context length (PNG) here."),
) -> None:
    """Forward, train-step (fwd+bwd+AdamW) and decode tokens/s of every model at every context,
    with parameters matched at the budget's width and depth.

    Every timed call is paired with a fixed calibration workload timed right before it, so each
    figure is also stored as a ratio that `bimix-bench check` can compare across runs. On GPU:
    warm-up first, CUDA events, bf16 autocast; a model that runs out of memory is marked oom for
    that context and the larger ones. The document records device, versions and backends.
    """
    from bimix_bench.config import apply_override
    from bimix_bench.engine.device import pick_device
    from bimix_bench.registry import MODELS
    from bimix_bench.speed.document import write_document
    from bimix_bench.speed.sweep import SweepSettings, run_sweep

    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    dev = pick_device(device)
    gpu = dev.type == "cuda"
    budget = budget or ("small" if gpu else "tiny")
    names = split_names(models) or MODELS.names()
    options: dict[str, Any] = {"models": {n: dict(MODELS.get(n).obj.default_options) for n in names}}
    for item in overrides:
        apply_override(options, item)
    settings = SweepSettings(
        models=names,
        contexts=_ints(contexts or (GPU_CONTEXTS if gpu else CPU_CONTEXTS), "--contexts"),
        tokens_per_batch=tokens_per_batch or (GPU_TOKENS if gpu else CPU_TOKENS),
        budget=budget, device=str(dev), precision=precision,
        kinds=tuple(split_names(kinds) or ()),
        # Unset (None) timing options are the budget's (SweepSettings fills them in); --repeats 0
        # means that too, as there is no median of no rounds.
        warmup=warmup, repeats=repeats or None, decode_tokens=decode_tokens,
        threads=threads, clock=clock, interleave=interleave, options=options["models"],
    )
    # With --out, every finished cell is written at once (the document says "complete": false
    # until the sweep ends), so a sweep stopped by a time limit keeps what it measured.
    doc = run_sweep(settings, log=lambda message: console.print(f"[dim]{message}[/dim]"),
                    on_cell=(lambda partial: write_document(out, partial)) if out else None)
    console.print(speed_table(doc, f"{doc['device']['class']}: budget {doc['settings']['budget']}, "
                                   f"{settings.tokens_per_batch} tokens per call"))
    if out:
        write_document(out, doc)
        console.print(f"wrote {out}")
    if plot:
        from bimix_bench.results.plots import save_figure, speed_document_series, throughput_vs_context

        fig = throughput_vs_context(speed_document_series(doc),
                                    title=f"{doc['device']['class']}, budget {doc['settings']['budget']}")
        console.print(f"wrote {save_figure(fig, plot)}")


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in split_names(text) or []]
    except ValueError:
        raise UsageError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values:
        raise UsageError(f"{option} is empty")
    return values


def speed_table(doc: dict[str, Any], title: str) -> Table:
    """model x context rows with tokens/s per kind, backend and peak memory."""
    from rich.table import Table

    from bimix_bench.speed.document import iter_cells

    kinds = doc["settings"]["kinds"]
    table = Table(title=title)
    for column in ("model", "context", "status", *[f"{k} tok/s" for k in kinds], "backend", "peak MiB"):
        table.add_column(column, overflow="fold")
    for model, cell in iter_cells(doc):
        figures = cell.get("figures") or {}
        unavailable = cell.get("unavailable") or {}
        speeds = [f"{figures[k]['tokens_per_s']:,.0f}" if k in figures else
                  ("n/a" if k in unavailable else "-") for k in kinds]
        backends = ", ".join(sorted({f["backend"] for f in figures.values()})) or "-"
        peak = cell.get("peak_memory_bytes")
        status = cell["status"] if cell["status"] == "ok" else f"{cell['status']}: {cell.get('reason')}"
        table.add_row(model, str(cell["context"]), status, *speeds, backends,
                      f"{peak / 2**20:,.0f}" if peak else "-")
    return table
