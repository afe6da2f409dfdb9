"""`bimix-bench gates`: pictures of BiMix's learned gate maps after a run."""

from __future__ import annotations

from pathlib import Path

import typer

from bimix_bench.cli.application import app
from bimix_bench.cli.common import console
from bimix_bench.errors import UsageError


def _layer_maps(record: dict) -> list[dict]:
    """The per-layer gate records a BiMix record carries in its extras, in layer order."""
    extras = record.get("extras") or {}
    layers = sorted((k for k in extras if k.startswith("layer")), key=lambda k: int(k[5:]))
    return [extras[k] for k in layers if isinstance(extras[k], dict) and "gate_map" in extras[k]]


@app.command()
def gates(
    run_dir: Path = typer.Argument(..., help="A run folder holding BiMix records."),
    out: Path = typer.Option(None, "--out", "-o", help="Where to write the PNGs (default: RUN_DIR/gates)."),
    text: Path = typer.Option(
        None, "--text", help="Also render per-token gates over this file (e.g. a Python source), "
        "with its boundaries marked: blank lines, def/class/decorator lines, document separators. "
        "Needs the run's checkpoints.",
    ),
) -> None:
    """Render the static gate maps (layer x head x branch x band) of every BiMix record as
    heatmaps, and optionally the per-token gates of each BiMix checkpoint over a text."""
    from bimix_bench.bimix.gate_maps import render_static_gate_maps, render_token_gates
    from bimix_bench.engine.checkpoint import checkpoint_path, load_checkpoint, record_tag
    from bimix_bench.results.records import read_records

    if not run_dir.is_dir():
        raise UsageError(f"no such run folder: {run_dir}")
    if text is not None and not text.is_file():
        raise UsageError(f"--text {text}: no such file")
    if not (run_dir / "records.jsonl").exists():
        raise UsageError(f"no records in {run_dir} (not a run folder)")
    records = [r for r in read_records(run_dir) if _layer_maps(r)]
    if not records:
        raise UsageError(f"no BiMix records with gate maps in {run_dir}")
    out = out or run_dir / "gates"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rec in records:
        tag = record_tag(rec)  # a learning-rate grid's cells each have their own maps
        stem = f"{rec['task']}-{rec['subtask']}-{rec['model']}-seed{rec['seed']}{tag}"
        written.append(render_static_gate_maps(_layer_maps(rec), out / f"{stem}-static.png"))
        if text is not None:
            ckpt = checkpoint_path(run_dir, rec["task"], rec["subtask"], rec["model"], rec["seed"], tag)
            if not ckpt.exists():
                console.print(f"[yellow]no checkpoint for {stem}: per-token gates skipped[/yellow]")
                continue
            model, _ = load_checkpoint(ckpt)
            if model.arch.head != "lm":
                console.print(f"[yellow]{stem} is a classifier; per-token gates still shown[/yellow]")
            source = text.read_text(encoding="utf-8", errors="replace")
            written.append(render_token_gates(model, source, out / f"{stem}-tokens-{text.stem}.png"))
    for path in written:
        console.print(f"wrote {path}")
