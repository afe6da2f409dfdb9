"""Throughput regressions: a measurement against a reference speed document.

Documents are compared only within one device class. Each figure is judged on a score (higher
is faster) whose basis depends on what bounds its work:

  "calibrated": the median ratio to the in-run calibration (see speed.calibration): tokens
      processed in the time of one calibration call. Used for every CPU figure, and for GPU
      decode: decoding token by token, like the "steps" calibration, is bound by the host's
      kernel-launch speed, so load on the host slows both and cancels.
  "device": tokens per second in the fastest round, from CUDA-event times. Used for GPU
      forward and train figures. Their work is bound by the device, which the device class
      pins. Contention on the host only adds time, so the fastest round is the least
      disturbed one. The bulk calibration is too launch-bound on a GPU to cancel anything: on
      an H200 its rounds varied by up to 97%, while the fastest of each 5 rounds of the
      forward and train calls beside it agreed within 3% (docs/perf.md).

Drift correction: what load from other processes does to a model's work is not exactly what
it does to the calibration (or a GPU's clock to every model alike), so every figure of a run
can shift together by a few percent, and by a different amount per kind: forward, train and
decode are different work, decode against a calibration of its own (on one AMD EPYC, five
measurements of unchanged code moved them +4-8%, +12-19% and +12-14%, docs/perf.md). When
the reference lists at least MIN_MODELS_FOR_DRIFT models, each kind's common shift (its
drift: the median over models of each model's median score change in that kind) is divided
out of that kind's figures before judging them. A slowdown of one model, or of fewer than
half of them, leaves the drift alone and shows in full; a slowdown of most models moves the
drift itself, which is judged by the kind's tolerance ("all models slower").

A figure regresses when its drift-corrected score change is below -tolerance (decode figures:
below -decode_tolerance, which defaults to the tolerance: decode runs single-token steps bound
by the host's dispatch, whose speed against the calibration moves with the machine's state
more than the bulk figures do); a cell that ran in the reference but not in the measurement
(out of memory, failed, a kind that became unavailable) regresses too.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from bimix_bench.errors import UsageError
from bimix_bench.speed.calibration import CalibrationSpec
from bimix_bench.speed.document import iter_cells


CALIBRATED, DEVICE = "calibrated", "device"
DEVICE_BOUND_KINDS = ("forward", "train")  # on a GPU; decode is bound by the host


def figure_basis(device_type: str, kind: str, *figures: dict[str, Any]) -> str:
    """How a figure of this kind is judged on this device type (module docstring). Documents
    written before raw seconds were stored are judged on the calibration."""
    if (device_type == "cuda" and kind in DEVICE_BOUND_KINDS
            and all(fig.get("seconds_samples") for fig in figures)):
        return DEVICE
    return CALIBRATED


def figure_score(fig: dict[str, Any], basis: str) -> float:
    """The figure's speed on `basis`: its median calibration ratio, or its tokens per second
    in the fastest round (tokens per call = tokens_per_s x the median seconds)."""
    if basis == CALIBRATED:
        return float(fig["ratio"])
    seconds = fig["seconds_samples"]
    return float(fig["tokens_per_s"]) * statistics.median(seconds) / min(seconds)


@dataclass
class FigureCheck:
    model: str
    context: int
    kind: str
    basis: str  # CALIBRATED or DEVICE
    reference_score: float
    measured_score: float | None  # None: not measured (see `problem`)
    reference_tokens_per_s: float
    measured_tokens_per_s: float | None
    problem: str | None = None  # why there is no measured figure

    @property
    def change(self) -> float | None:
        """Relative change of the score (-0.2 = 20% slower than the reference)."""
        if self.measured_score is None:
            return None
        return self.measured_score / self.reference_score - 1.0

    def corrected(self, drift: float) -> float | None:
        """The change with the common drift of its kind divided out."""
        if self.measured_score is None:
            return None
        return (1.0 + self.change) / (1.0 + drift) - 1.0


MIN_MODELS_FOR_DRIFT = 3
DECODE = "decode"


@dataclass
class CheckResult:
    tolerance: float
    decode_tolerance: float | None = None  # None: the tolerance
    figures: list[FigureCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drift: dict[str, float] = field(default_factory=dict)  # kind -> common score change

    def tolerance_of(self, kind: str) -> float:
        if kind == DECODE and self.decode_tolerance is not None:
            return self.decode_tolerance
        return self.tolerance

    def corrected(self, figure: FigureCheck) -> float | None:
        """The figure's score change with its kind's drift divided out."""
        return figure.corrected(self.drift.get(figure.kind, 0.0))

    @property
    def offenders(self) -> list[FigureCheck]:
        return [f for f in self.figures
                if f.measured_score is None or self.corrected(f) < -self.tolerance_of(f.kind)]

    @property
    def regressed_drifts(self) -> dict[str, float]:
        """The kinds in which most models are slower together by more than the tolerance."""
        return {kind: d for kind, d in self.drift.items() if d < -self.tolerance_of(kind)}

    @property
    def drift_regressed(self) -> bool:
        return bool(self.regressed_drifts)

    @property
    def passed(self) -> bool:
        return not self.offenders and not self.drift_regressed


def common_drifts(figures: list[FigureCheck]) -> dict[str, float] | None:
    """Per kind, the median over models of each model's median score change in that kind;
    None with fewer than MIN_MODELS_FOR_DRIFT models (too few for one regressed model to be
    outvoted), and a kind measured for fewer models is left uncorrected."""
    by_kind: dict[str, dict[str, list[float]]] = {}
    for f in figures:
        if f.change is not None:
            by_kind.setdefault(f.kind, {}).setdefault(f.model, []).append(f.change)
    if len({model for by_model in by_kind.values() for model in by_model}) < MIN_MODELS_FOR_DRIFT:
        return None
    return {kind: statistics.median(statistics.median(v) for v in by_model.values())
            for kind, by_model in by_kind.items() if len(by_model) >= MIN_MODELS_FOR_DRIFT}


def require_same_device_class(reference: dict[str, Any], measured_class: str, what: str) -> None:
    """UsageError (exit 2) when the classes differ: ratios do not transfer between them."""
    ref_class = reference["device"]["class"]
    if ref_class != measured_class:
        raise UsageError(
            f"refusing to compare across device classes: the reference was measured on "
            f"{ref_class!r}, {what} is {measured_class!r}; regenerate the reference on this "
            f"device class (bimix-bench check --reference FILE --update)"
        )


def reference_settings(reference: dict[str, Any]) -> dict[str, Any]:
    """What a re-measurement of `reference` needs: per model the exact architectures of its
    measured contexts, plus the shape, calibration and timing settings."""
    archs: dict[str, dict[int, dict[str, Any]]] = {}
    calls: dict[str, dict[int, dict[str, int]]] = {}
    for model, cell in iter_cells(reference):
        if cell["status"] == "ok" and cell.get("arch"):
            archs.setdefault(model, {})[cell["context"]] = dict(cell["arch"])
            calls.setdefault(model, {})[cell["context"]] = {
                kind: int(fig.get("calibration_calls", 1)) for kind, fig in cell["figures"].items()}
    s = reference["settings"]
    return {
        "archs": archs,
        "calibration_calls": calls,
        "options": {m: dict(reference["models"][m].get("options") or {}) for m in archs},
        "tokens_per_batch": int(s["tokens_per_batch"]),
        "kinds": tuple(s["kinds"]),
        "decode_tokens": int(s["decode_tokens"]),
        "precision": s["precision"],
        "warmup": int(s["warmup"]),
        "repeats": int(s["repeats"]),
        "budget": s["budget"],
        "threads": reference["device"].get("threads"),
        "clock": s.get("clock", "wall"),
        "calibration": {k: CalibrationSpec.from_dict(v) for k, v in reference["calibration"].items()},
    }


def check_tolerances(tolerance: float, decode_tolerance: float | None = None) -> None:
    """UsageError (exit 2) unless each tolerance given lies in [0, 1)."""
    for name, value in (("--tolerance", tolerance), ("--decode-tolerance", decode_tolerance)):
        if value is not None and not 0.0 <= value < 1.0:
            raise UsageError(f"{name} must be in [0, 1), got {value}")


def compare_documents(reference: dict[str, Any], measured: dict[str, Any], tolerance: float,
                      drift_correction: bool = True, decode_tolerance: float | None = None
                      ) -> CheckResult:
    """Every figure of the reference against the measurement (same device class assumed)."""
    check_tolerances(tolerance, decode_tolerance)
    result = CheckResult(tolerance, decode_tolerance)
    found = {(m, c["context"]): c for m, c in iter_cells(measured)}
    if measured.get("injected_slowdown"):
        result.notes.append(f"the measurement ran with the test-only injected slowdown "
                            f"{measured['injected_slowdown']}")
    for model, ref_cell in iter_cells(reference):
        if ref_cell["status"] != "ok":
            continue
        if model not in measured["models"]:
            result.notes.append(f"{model} @ {ref_cell['context']}: not in the measurement "
                                "(not registered where it ran, or not asked for); not compared")
            continue
        cell = found.get((model, ref_cell["context"]))
        for kind, ref in (ref_cell.get("figures") or {}).items():
            fig = ((cell or {}).get("figures") or {}).get(kind)
            problem = None
            if cell is None:
                problem = "context not measured"
            elif cell["status"] != "ok":
                problem = f"{cell['status']}: {cell.get('reason')}"
            elif fig is None:
                problem = (cell.get("unavailable") or {}).get(kind, "kind not measured")
            basis = figure_basis(reference["device"]["type"], kind, ref, *([fig] if fig else []))
            result.figures.append(FigureCheck(
                model, ref_cell["context"], kind, basis, figure_score(ref, basis),
                figure_score(fig, basis) if fig else None,
                ref["tokens_per_s"], fig["tokens_per_s"] if fig else None, problem,
            ))
            if fig and fig.get("backend") != ref.get("backend"):
                result.notes.append(f"{model} @ {ref_cell['context']} {kind}: backend "
                                    f"{ref.get('backend')} in the reference, {fig.get('backend')} now")
        if cell and cell.get("params_non_embedding") != ref_cell.get("params_non_embedding"):
            result.notes.append(
                f"{model} @ {ref_cell['context']}: {cell.get('params_non_embedding')} non-embedding "
                f"parameters now, {ref_cell.get('params_non_embedding')} in the reference (the "
                "model changed; consider --update)")
    drift = common_drifts(result.figures) if drift_correction else None
    if drift is None:
        if drift_correction:
            result.notes.append(f"no drift correction: fewer than {MIN_MODELS_FOR_DRIFT} models")
    else:
        result.drift = drift
    return result


def merge_measurements(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """`first` with the cells that `second` re-measured (a confirmation run) pooled: each
    figure gets the ratio samples of both runs and their median."""
    merged = {**first, "models": {m: {**e, "cells": [dict(c) for c in e["cells"]]}
                                  for m, e in first["models"].items()}}
    again = {(m, c["context"]): c for m, c in iter_cells(second)}
    for model, entry in merged["models"].items():
        for i, cell in enumerate(entry["cells"]):
            other = again.get((model, cell["context"]))
            if other is None:
                continue
            if cell["status"] != "ok" or other["status"] != "ok":
                entry["cells"][i] = other if other["status"] == "ok" else cell
                continue
            figures = {}
            for kind, fig in cell["figures"].items():
                fig2 = other["figures"].get(kind)
                if fig2 is None:
                    figures[kind] = fig
                    continue
                samples = list(fig["ratio_samples"]) + list(fig2["ratio_samples"])
                raw = {key: list(fig[key]) + list(fig2[key]) for key in RAW_SAMPLES
                       if key in fig and key in fig2}
                figures[kind] = {**{k: v for k, v in fig.items() if k not in RAW_SAMPLES}, **raw,
                                 "ratio": statistics.median(samples), "ratio_samples": samples,
                                 "tokens_per_s": statistics.median([fig["tokens_per_s"],
                                                                    fig2["tokens_per_s"]])}
            entry["cells"][i] = {**cell, "figures": figures}
    return merged


RAW_SAMPLES = ("seconds_samples", "calibration_seconds_samples")


def remeasure(reference: dict[str, Any], log: Callable[[str], None] | None = None,
              only: set[tuple[str, int]] | None = None,
              repeats: int | None = None, models: list[str] | None = None) -> dict[str, Any]:
    """Measure again what `reference` lists, here: the same architectures, shapes, kinds,
    calibration, precision and (CPU) thread count. `only` limits it to some (model, context)
    cells; `models` to some models (default: those the reference lists)."""
    from bimix_bench.speed.sweep import SweepSettings, run_sweep

    s = reference_settings(reference)
    archs = {m: {c: a for c, a in by_ctx.items() if only is None or (m, c) in only}
             for m, by_ctx in s["archs"].items() if models is None or m in models}
    archs = {m: by_ctx for m, by_ctx in archs.items() if by_ctx}
    if not archs:
        raise UsageError("the reference lists no measured cell to re-measure")
    settings = SweepSettings(
        models=list(archs), contexts=sorted({c for by_ctx in archs.values() for c in by_ctx}),
        tokens_per_batch=s["tokens_per_batch"], budget=s["budget"],
        device="cuda" if reference["device"]["type"] == "cuda" else "cpu",
        precision=s["precision"], kinds=s["kinds"], warmup=s["warmup"],
        repeats=repeats or s["repeats"], decode_tokens=s["decode_tokens"], threads=s["threads"],
        interleave=reference["settings"].get("interleave", "all"), clock=s["clock"],
        options={m: s["options"][m] for m in archs}, archs=archs, calibration=s["calibration"],
        calibration_calls=s["calibration_calls"],
    )
    return run_sweep(settings, log)
