"""`bimix-bench check`: fail (exit 1) when a model's throughput regressed against a reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bimix_bench.cli.application import app
from bimix_bench.cli.common import console, err_console, split_names
from bimix_bench.errors import UsageError

if TYPE_CHECKING:
    from rich.table import Table

# Below this share of wall time on a core per thread, the machine was oversubscribed.
OVERSUBSCRIBED = 0.8


@app.command()
def check(
    reference: Path = typer.Option(
        ..., "--reference", "-r", help="Reference speed document (JSON), or a folder of them: "
        "then the one of this device class measured on this CPU model (or GPU) is used."),
    tolerance: float = typer.Option(
        0.10, "--tolerance", help="Allowed relative drop of a figure's score (0.10 = 10%): its "
        "ratio to the in-run calibration, or on a GPU its fastest-round tokens/s for forward "
        "and train."),
    decode_tolerance: float = typer.Option(
        None, "--decode-tolerance", help="Allowed drop of a decode figure's score (default: "
        "--tolerance). Decode is bound by the host's dispatch, whose speed against the "
        "calibration moves with the machine's state more than forward and train do."),
    update: bool = typer.Option(False, "--update", help="Rewrite the reference with this measurement."),
    measured: Path = typer.Option(
        None, "--measured", help="Compare this speed document instead of measuring now."),
    repeats: int = typer.Option(None, "--repeats", help="Timed rounds (default: the reference's)."),
    models: str = typer.Option(None, "--models", "-m", help="Only these models of the reference."),
    confirm: bool = typer.Option(
        True, "--confirm/--no-confirm", help="Re-measure the cells of offending figures once and "
        "judge them on both runs' samples pooled (a load burst rarely hits twice)."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write this measurement (JSON) here."),
) -> None:
    """Re-measure what the reference lists (same models, architectures, contexts, kinds, shapes,
    calibration and thread count) and compare each figure's score with the reference's: its
    ratio to the in-run calibration, except GPU forward and train figures, which are
    device-bound and compared on their fastest round's tokens/s within the device class. Exit 1 with a table of offenders when one falls more than the tolerance
    below the reference; exit 2 when the reference was measured on another device class."""
    from bimix_bench.speed.document import read_document, write_document
    from bimix_bench.speed.references import choose_reference
    from bimix_bench.speed.regression import (
        check_tolerances,
        compare_documents,
        merge_measurements,
        remeasure,
        require_same_device_class,
    )

    check_tolerances(tolerance, decode_tolerance)  # before a minute of measuring
    reference, note = choose_reference(reference)
    if note:
        console.print(f"[yellow]note: {note}[/yellow]")
    ref = read_document(reference, "reference")
    names = split_names(models)
    log = lambda message: console.print(f"[dim]{message}[/dim]")  # noqa: E731
    if measured is not None:
        doc = read_document(measured, "measured speed file")
        if not update:
            require_same_device_class(ref, doc["device"]["class"], f"the measurement {measured}")
    else:
        if not update:
            require_same_device_class(ref, _local_class(ref), "this machine")
        registered = _registered(ref, names)
        doc = remeasure(ref, log, repeats=repeats, models=registered)

    if update:
        write_document(reference, doc)
        console.print(f"updated the reference {reference} ({doc['device']['class']})")
        return
    result = compare_documents(ref, doc, tolerance, decode_tolerance=decode_tolerance)
    if confirm and measured is None and not result.passed:
        # Every cell when the drift itself failed, else only the offenders' cells.
        suspects = result.figures if result.drift_regressed else result.offenders
        cells = {(f.model, f.context) for f in suspects}
        log(f"beyond the tolerance: {len(result.offenders)} figure(s)"
            f"{', and the common drift' if result.drift_regressed else ''}; re-measuring "
            f"{len(cells)} cell(s) to confirm")
        again = remeasure(ref, log, only=cells, repeats=repeats)
        doc = merge_measurements(doc, again)
        result = compare_documents(ref, doc, tolerance, decode_tolerance=decode_tolerance)
    if out:
        write_document(out, doc)
        console.print(f"wrote {out}")
    for note in result.notes:
        console.print(f"[yellow]note: {note}[/yellow]")
    share, threads = doc["device"].get("cpu_share"), doc["device"].get("threads") or 1
    if share is not None and share < OVERSUBSCRIBED * threads:
        console.print(f"[yellow]note: this measurement ran on a core only {share / threads:.0%} of "
                      "the time: other processes oversubscribed the machine, and under such "
                      "load the most dispatch-heavy figures (decode) read low against the "
                      "calibration; judge failures on a quieter machine[/yellow]")
    changes = sorted(result.corrected(f) for f in result.figures if f.change is not None)
    summary = f"{len(result.figures)} figures vs {reference} ({ref['device']['class']})"
    if changes:
        drifts = ", ".join(f"{kind} {d:+.1%}" for kind, d in result.drift.items()) or "none"
        summary += (f"; common drift {drifts}; corrected score changes min "
                    f"{changes[0]:+.1%}, median {changes[len(changes) // 2]:+.1%}, max "
                    f"{changes[-1]:+.1%}; {_tolerances(result)}")
    if result.passed:
        console.print(f"[green]check passed[/green]: {summary}")
        return
    if result.offenders:
        console.print(_offender_table(result))
    why = [f"{len(result.offenders)} figure(s) more than the tolerance below the reference"]
    for kind, drift in result.regressed_drifts.items():
        why.append(f"all models' {kind} slower together by {-drift:.1%} (shared code, or a machine "
                   "that slows models more than the calibration)")
    err_console.print(f"check FAILED: {'; '.join(why)}; {summary}")
    raise typer.Exit(1)


def _local_class(ref: dict) -> str:
    """The device class a re-measurement of `ref` would have here (refuses a GPU reference on
    a machine without CUDA)."""
    import torch

    from bimix_bench.speed.document import device_class

    if ref["device"]["type"] == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"the reference was measured on {ref['device']['class']!r} (CUDA) "
                             "but no CUDA device is available here")
        return device_class(torch.device("cuda"))
    return device_class(torch.device("cpu"), ref["device"].get("threads"))


def _registered(ref: dict, names: list[str] | None) -> list[str]:
    from bimix_bench.registry import MODELS

    listed = list(ref["models"])
    if names:
        unknown = [n for n in names if n not in listed]
        if unknown:
            raise UsageError(f"model(s) {', '.join(unknown)} not in the reference; it lists "
                             f"{', '.join(listed)}")
        listed = names
    missing = [n for n in listed if n not in MODELS]
    for name in missing:
        console.print(f"[yellow]note: {name} is in the reference but not registered here; "
                      "not measured[/yellow]")
    return [n for n in listed if n in MODELS]


def _tolerances(result) -> str:
    if result.decode_tolerance is None or result.decode_tolerance == result.tolerance:
        return f"tolerance {result.tolerance:.0%}"
    return f"tolerance {result.tolerance:.0%}, decode {result.decode_tolerance:.0%}"


def _offender_table(result) -> Table:
    from rich.table import Table

    table = Table(title=f"throughput regressions ({_tolerances(result)})")
    for column in ("model", "ctx", "kind", "score ref → now", "basis", "change (drift-corrected)",
                   "tok/s ref → now"):
        table.add_column(column, overflow="fold")
    for f in result.offenders:
        if f.measured_score is None:
            score, change, speed = f"{f.reference_score:.4g} → -", f.problem or "not measured", "-"
        else:
            score = f"{f.reference_score:.4g} → {f.measured_score:.4g}"
            change = f"{f.change:+.1%} ({result.corrected(f):+.1%})"
            speed = f"{f.reference_tokens_per_s:,.0f} → {f.measured_tokens_per_s:,.0f}"
        table.add_row(f.model, str(f.context), f.kind, score, f.basis, change, speed)
    return table
