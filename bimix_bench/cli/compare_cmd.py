"""`bimix-bench compare`: tables (and figures) across run folders and speed files."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from bimix_bench.cli.application import app
from bimix_bench.cli.common import console
from bimix_bench.errors import UsageError


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run folders, records.jsonl files, speed JSON files (from `bimix-bench "
        "speed`), or a folder of run folders (one per model, as scripts/gpu/"
        "run_models_side_by_side.sh leaves them): all its run folders are read."),
    markdown: Path = typer.Option(None, "--markdown", help="Also write the table as Markdown here."),
    csv: Path = typer.Option(None, "--csv", help="Also write the table (numbers only) as CSV here."),
    json_out: Path = typer.Option(None, "--json", help="Also write the table and its notes as JSON here."),
    plot: Path = typer.Option(
        None, "--plot", help="Write PNG figures into this folder: quality vs throughput (Pareto "
        "front marked), throughput vs context length, metrics by depth/position bucket."),
    versus: str = typer.Option(
        None, "--versus", metavar="MODEL", help="Also set MODEL against every other model: per "
        "cell its quality difference and its speeds as multiples of the other's, then the "
        "ranges of those multiples by context length (added to --markdown and --json)."),
    length_threshold: float = typer.Option(
        0.9, "--length-threshold", help="Effective length: the longest test length up to which "
        "a model's accuracy stays at or above this (runs with eval.length_factors)."),
) -> None:
    """Models x tasks: headline quality (mean ± 95% CI over seeds), tokens/s, parameters and
    kernel backend, each also relative to the Transformer of the same task, subtask and budget;
    flags comparisons that are not like for like and cells where no model beats the task's
    chance level (uninformative); says per published anchor whether it was reproduced. Where
    a learning-rate grid ran, only each model's chosen rate counts (column lr)."""
    from bimix_bench.results.records import as_compared, protocols_apart, run_folders
    from bimix_bench.speed.document import is_speed_document, read_document

    records, speed_docs, n_runs = [], {}, 0
    for path in run_dirs:
        if not path.exists():
            raise UsageError(f"no such run folder: {path}")
        if is_speed_document(path):
            speed_docs[path] = read_document(path)
            continue
        runs = run_folders(path)
        found = [rec for run in runs for rec in _read_records(run)]
        if not found:
            raise UsageError(f"no records in {path}")
        records.extend(as_compared(found))
        n_runs += len(runs)
    records = protocols_apart(records)

    models = {rec["model"] for rec in records}
    if versus and records and versus not in models:
        raise UsageError(f"--versus {versus}: no records of that model here (models: "
                         f"{', '.join(sorted(models))})")
    table = notes = None
    if records:
        from bimix_bench.cli.ui import records_table
        from bimix_bench.results.comparison import (
            comparison_frame, display_frame, json_rows, terminal_view,
        )
        from bimix_bench.results.tables import to_markdown

        from bimix_bench.results.tables import records_frame
        from bimix_bench.results.verdicts import anchor_lines

        table, notes = comparison_frame(records)
        anchors = anchor_lines(records, records_frame(records))
        shown = display_frame(table)
        on_screen, flag_lines = terminal_view(table, shown)
        console.print(records_table(on_screen, f"{len(records)} records from {n_runs} run(s)",
                                    width=console.width))
        for line in flag_lines:
            console.print(f"[yellow]{line}[/yellow]", highlight=False)
        for note in notes:
            console.print(f"[yellow]note: {note}[/yellow]")
        for line in anchors:
            colour = "green" if line.status == "reproduced" else "yellow"
            console.print(f"[{colour}]{line.text()}[/{colour}]", highlight=False)
        from bimix_bench.results.lengths import effective_lengths, length_curves

        curves = length_curves(records)
        lengths = effective_lengths(curves[curves["metric"] == "accuracy"], length_threshold)
        if not lengths.empty:
            console.print(records_table(lengths, "effective length (RULER-style: the longest test "
                                        f"length with accuracy >= {length_threshold:g} at every length)",
                                        width=console.width))
        cells = ranges = None
        if versus:
            cells, ranges = _versus(table, versus, records)
        if markdown:
            body = to_markdown(shown) + "\n" + "".join(f"\n- note: {n}" for n in notes)
            body += "".join(f"\n- {line.text()}" for line in anchors)
            if not lengths.empty:
                body += "\n\n## Effective length\n\n" + to_markdown(lengths) + "\n"
            body += "\n" if notes or anchors else ""
            if versus:
                from bimix_bench.results.versus import versus_markdown
                body += "\n" + versus_markdown(cells, ranges, versus)
            markdown.write_text(body)
            console.print(f"wrote {markdown}")
        if csv:
            table.to_csv(csv, index=False)
            console.print(f"wrote {csv}")
        if json_out:
            doc = {"notes": notes, "anchors": [line.as_dict() for line in anchors],
                   "rows": json_rows(table), "lengths": json_rows(curves),
                   "effective_lengths": json_rows(lengths)}
            if versus:
                doc["versus"] = {"model": versus, "cells": json_rows(cells),
                                 "by_context": json_rows(ranges)}
            json_out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
            console.print(f"wrote {json_out}")
    elif markdown or csv or json_out or versus:
        raise UsageError("--markdown, --csv, --json and --versus need run folders (only speed "
                         "files given)")

    for path, doc in speed_docs.items():
        _print_speed(path, doc)
    if plot:
        for written in _plots(plot, records, table, speed_docs):
            console.print(f"wrote {written}")


def _versus(table, model: str, records: list[dict]):
    """(per-cell, by-context) frames of `model` against the others, printed as Rich tables."""
    from bimix_bench.cli.ui import records_table
    from bimix_bench.results.versus import versus_cells, versus_ranges

    cells = versus_cells(table, model, records)
    ranges = versus_ranges(cells)
    console.print(records_table(cells.round(4), f"{model} against each model, per cell "
                                "(speeds as multiples of the other's)", width=console.width))
    console.print(records_table(ranges.round(3), f"{model} against each model, by context length",
                                width=console.width))
    return cells, ranges


def _read_records(path: Path) -> list[dict]:
    from bimix_bench.results.records import read_records

    try:
        return read_records(path)
    except FileNotFoundError:
        raise UsageError(f"no records in {path}") from None


def _print_speed(path: Path, doc: dict) -> None:
    from bimix_bench.cli.speed_cmd import speed_table

    console.print(speed_table(doc, f"{path} ({doc['device']['class']}, budget {doc['settings']['budget']})"))


def _plots(folder: Path, records: list[dict], table, speed_docs: dict) -> list[Path]:
    from bimix_bench.results import plots

    from bimix_bench.results.tables import records_frame

    written = []
    if table is not None:
        per_seed = records_frame(records)
        for (task, subtask, budget), group in table.groupby(["task", "subtask", "budget"], sort=False):
            if group["mean"].notna().any():
                seeds = per_seed[(per_seed["task"] == task) & (per_seed["subtask"] == subtask)
                                 & (per_seed["budget"] == budget)]
                fig = plots.quality_vs_throughput(group, title=f"{task}/{subtask} ({budget})",
                                                  seeds=seeds)
                written.append(plots.save_figure(
                    fig, folder / f"quality_vs_throughput_{plots.safe_name(task, subtask, budget)}.png"))
        for (task, subtask, budget), series in plots.record_context_series(records).items():
            fig = plots.throughput_vs_context(series, title=f"{task}/{subtask} ({budget})")
            written.append(plots.save_figure(
                fig, folder / f"throughput_vs_context_{plots.safe_name(task, subtask, budget)}.png"))
        groups: dict[tuple, list[dict]] = {}
        for rec in records:
            groups.setdefault((rec["task"], rec["subtask"], rec["budget"]), []).append(rec)
        for (task, subtask, budget), recs in groups.items():
            names = {n for r in recs for n in ((r.get("metrics") or {}).get("test") or {})}
            for prefix in plots.bucket_families(names):
                fig = plots.metric_by_bucket(recs, prefix, title=f"{task}/{subtask} ({budget}): {prefix}")
                written.append(plots.save_figure(
                    fig, folder / f"{plots.safe_name(prefix, task, subtask, budget)}.png"))
    # Speed files measured alike (device class, budget, batch, precision) share one figure,
    # so a sweep split over several sessions still plots as one comparison.
    alike: dict[tuple, dict] = {}
    for doc in speed_docs.values():
        s = doc["settings"]
        key = (doc["device"]["class"], s["budget"], s["tokens_per_batch"], s.get("precision"))
        plots.merge_series(alike.setdefault(key, {}), plots.speed_document_series(doc))
    for (device_class, budget, tokens, precision), series in alike.items():
        fig = plots.throughput_vs_context(
            series, title=f"{device_class}, budget {budget}, {tokens} tokens per batch, {precision}")
        written.append(plots.save_figure(
            fig, folder / f"throughput_vs_context_{plots.safe_name(device_class, budget)}.png"))
    if records:
        from bimix_bench.results.lengths import length_curves, length_figure

        curves = length_curves(records)
        for (task, subtask, budget, metric), group in curves.groupby(
                ["task", "subtask", "budget", "metric"], sort=False):
            fig = length_figure(group, f"{task}/{subtask} ({budget}): {metric} against test length")
            written.append(plots.save_figure(
                fig, folder / f"length_{plots.safe_name(task, subtask, budget, metric)}.png"))
    if not written:
        console.print("[yellow]nothing to plot[/yellow]")
    return written
