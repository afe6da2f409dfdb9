"""A throughput sweep: every model, sized to one budget, at every context, for every kind
(forward, train step, decode), into one speed document (see speed.document).

Sizing: each model is solved to the budget's non-embedding parameter target at the budget's
depth and heads (head "lm"), like a `run`; the width found at the first context is reused at
the others unless the parameter count then leaves the budget's tolerance (it is re-solved).
A sweep can instead be given fixed architectures (`check` re-measures a reference's exact
shapes).

Clock: "wall" or "cpu" (process CPU time, CPU only); with "cpu" the C heap keeps freed memory
while measuring (speed.timing.retained_heap), so page faults stay out of the timed calls.

Order: with interleave="cell" each (model, context) cell is built, timed for `repeats` rounds
and freed before the next (large GPU sweeps: one cell in memory at a time); with "all" every
cell is built first and the rounds go over all of them (small CPU references: samples spread
over the whole run, see speed.timing). A cell that runs out of memory is recorded "oom" and so
are the model's larger contexts; a model whose kernel cannot run here is "skipped"; any other
error marks that cell "failed" and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch

from bimix_bench.config import deep_merge, load_budget
from bimix_bench.config.sections import arch_config, params_config, throughput_config, train_config
from bimix_bench.engine.device import (
    autocast_factory,
    peak_memory_bytes,
    pick_device,
    reset_peak_memory,
    resolved_precision,
)
from bimix_bench.env import environment_info
from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.models.backbone import Architecture, LanguageModel, count_parameters
from bimix_bench.models.sizing import solve_architecture
from bimix_bench.registry import MODELS
from bimix_bench.speed.calibration import (
    CalibrationSpec,
    build_calibration,
    bulk_chunk,
    calibration_width,
    default_calibrations,
)
from bimix_bench.speed.document import FORMAT, VERSION, device_class
from bimix_bench.speed.timing import (
    Pair,
    PairTimer,
    Timed,
    call_seconds,
    injected_slowdowns,
    matched_calls,
    retained_heap,
    run_rounds,
)
from bimix_bench.speed.workloads import (
    CALIBRATION_OF,
    KINDS,
    METHOD,
    CellWorkloads,
    batch_rows,
    build_cell,
)


@dataclass
class SweepSettings:
    models: list[str]
    contexts: list[int]
    tokens_per_batch: int
    budget: str = "tiny"  # budget name or YAML path: params, depth, heads, optimizer
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    kinds: tuple[str, ...] = KINDS
    # Left None, these three are the budget's throughput keys (filled in on creation), so that
    # `speed` and a run's record time alike unless told otherwise.
    warmup: int | None = None  # untimed calls of every workload before the rounds
    repeats: int | None = None  # rounds; each figure is a median over them
    decode_tokens: int | None = None  # greedy steps per decode call; 0: no decode figure
    threads: int | None = None  # CPU: torch threads (None: leave torch's setting)
    clock: str = "wall"  # "wall" or "cpu" (process CPU time; see speed.timing)
    interleave: str = "cell"  # "cell" or "all"
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-model option overrides
    # model -> context -> Architecture fields; when given, no sizing happens and each model is
    # measured at exactly its listed contexts.
    archs: dict[str, dict[int, dict[str, Any]]] | None = None
    calibration: dict[str, CalibrationSpec] | None = None  # None: derived from the budget
    # model -> context -> kind -> calibration calls per timed stretch (None: matched to the
    # workload's duration here; `check` reuses the reference's counts).
    calibration_calls: dict[str, dict[int, dict[str, int]]] | None = None

    def __post_init__(self) -> None:
        unset = [key for key in ("warmup", "repeats", "decode_tokens") if getattr(self, key) is None]
        if unset:
            timing = throughput_config(load_budget(self.budget))
            for key in unset:
                setattr(self, key, getattr(timing, key))

    def validate(self) -> None:
        if not self.models:
            raise UsageError("no models to measure")
        for name in self.models:
            MODELS.get(name)  # UsageError naming the valid models
        if not self.contexts or any(c < 1 for c in self.contexts):
            raise UsageError(f"contexts must be positive integers, got {self.contexts}")
        if self.tokens_per_batch < 1:
            raise UsageError(f"tokens per batch must be positive, got {self.tokens_per_batch}")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise UsageError(f"unknown kind(s) {bad}; valid: {', '.join(KINDS)}")
        if self.repeats < 1 or self.warmup < 0:
            raise UsageError("repeats must be >= 1 and warmup >= 0")
        if self.interleave not in ("cell", "all"):
            raise UsageError(f"interleave must be cell or all, got {self.interleave!r}")


@dataclass
class _Cell:
    model: str
    context: int
    record: dict[str, Any]
    work: CellWorkloads | None = None
    pairs: dict[str, Pair] = field(default_factory=dict)


def run_sweep(settings: SweepSettings, log: Callable[[str], None] | None = None,
              on_cell: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure everything `settings` asks for; returns the speed document. With interleave
    "cell", `on_cell` receives the document so far (marked `"complete": false`) after every
    cell, so a sweep cut short by a time limit still leaves its finished cells on disk."""
    settings.validate()
    log = log or (lambda message: None)
    device = pick_device(settings.device)
    saved_threads = torch.get_num_threads()
    if device.type == "cpu" and settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        heap = retained_heap() if settings.clock == "cpu" else contextlib.nullcontext(False)
        wall, cpu = time.perf_counter(), time.process_time()
        with heap as kept:
            doc = _run(settings, device, log, on_cell)
        doc["settings"]["heap"] = "retained" if kept else "default"
        if device.type == "cpu":
            # The share of the sweep's wall time this process was on a core: well below 1 with
            # one thread means other processes oversubscribed the machine meanwhile.
            doc["device"]["cpu_share"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
        return doc
    finally:
        torch.set_num_threads(saved_threads)


def _run(settings: SweepSettings, device: torch.device, log: Callable[[str], None],
         on_cell: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    budget = load_budget(settings.budget)
    precision = resolved_precision(device, settings.precision)
    autocast = autocast_factory(device, precision)
    contexts = sorted(set(settings.contexts))
    slowdowns = injected_slowdowns()
    if slowdowns:
        log(f"TEST HOOK ACTIVE: injected slowdown {slowdowns} (figures are deliberately slower)")

    specs = settings.calibration or default_calibrations(
        settings.tokens_per_batch, batch_rows(settings.tokens_per_batch, contexts[len(contexts) // 2]),
        settings.decode_tokens,
        calibration_width(params_config(budget).non_embedding, arch_config(budget).n_layers),
        arch_config(budget).n_layers, chunk=bulk_chunk(device),
    )
    calibrations = {kind: Timed(build_calibration(spec, device, autocast))
                    for kind, spec in specs.items()}
    timer = PairTimer(device, settings.clock)
    for timed in calibrations.values():
        timer.warm_up(timed, max(1, settings.warmup))
    seconds_per_call = {kind: call_seconds(timer, timed) for kind, timed in calibrations.items()}

    cells: list[_Cell] = []
    calibration_samples: dict[str, list[float]] = {}
    for name in settings.models:
        sizer = _Sizer(name, settings, budget)
        stop: tuple[str, str] | None = None  # (status, reason) for the remaining contexts
        for context in sorted(sizer.fixed) if sizer.fixed is not None else contexts:
            cell = _Cell(name, context, {"context": context, "status": "ok", "reason": None})
            cells.append(cell)
            if stop is not None:
                cell.record.update(status=stop[0], reason=stop[1])
                continue
            failure = _build(cell, sizer, settings, device, autocast, budget, calibrations,
                             seconds_per_call, timer, slowdowns.get(name, 1.0))
            if failure is None and settings.interleave == "cell":
                failure = _guarded(lambda: run_rounds(list(cell.pairs.values()), timer,
                                                      settings.warmup, settings.repeats))
            if failure is not None:
                status, reason = failure
                cell.record.update(status=status, reason=reason)
                cell.pairs.clear()
                cell.work = None
                if status in ("oom", "skipped"):
                    stop = (status, reason if status == "skipped" else
                            f"not run: out of memory at context {context}")
            log(f"{name} @ {context}: {cell.record['status']}" +
                (f" ({cell.record['reason']})" if cell.record["reason"] else ""))
            if settings.interleave == "cell":
                _finish(cell, settings, device, precision, calibration_samples)
                _empty_cache(device)
                if on_cell is not None:
                    partial = _document(settings, device, precision, budget, specs,
                                        calibration_samples, cells, slowdowns)
                    on_cell({**partial, "complete": False})

    if settings.interleave == "all":
        pairs = [pair for cell in cells for pair in cell.pairs.values()]
        failure = _guarded(lambda: run_rounds(pairs, timer, settings.warmup, settings.repeats,
                                              on_round=lambda r: log(f"round {r}/{settings.repeats} done")))
        for cell in cells:
            if failure is not None and cell.pairs:  # the rounds did not finish: no figures
                cell.record.update(status=failure[0], reason=f"during the rounds: {failure[1]}")
                cell.pairs.clear()
            _finish(cell, settings, device, precision, calibration_samples)

    return {**_document(settings, device, precision, budget, specs, calibration_samples, cells,
                        slowdowns), "complete": True}


class _Sizer:
    """The architecture of one model at each context (see module docstring)."""

    def __init__(self, name: str, settings: SweepSettings, budget: dict[str, Any]):
        self.spec = MODELS.get(name).obj
        self.options = deep_merge(self.spec.default_options, settings.options.get(name, {}))
        self.fixed = (settings.archs or {}).get(name)
        self.budget = budget
        self.solved: Architecture | None = None

    def solve(self, context: int) -> Architecture:
        params, shape = params_config(self.budget), arch_config(self.budget)
        arch, _ = solve_architecture(
            self.spec, self.options, params.non_embedding, shape.n_layers, shape.n_heads,
            shape.ffn_ratio, context, head="lm", tolerance=params.tolerance,
        )
        self.solved = arch
        return arch

    def build(self, context: int, device: torch.device) -> LanguageModel:
        if self.fixed is not None:
            if context not in self.fixed:
                raise UsageError(f"no architecture given for context {context}")
            return self._make(Architecture(**self.fixed[context]), device)
        arch = self.solve(context) if self.solved is None else replace(self.solved, max_seq_len=context)
        model = self._make(arch, device)
        params = params_config(self.budget)
        n = count_parameters(model)["non_embedding"]
        if abs(n - params.non_embedding) / params.non_embedding > params.tolerance:
            model = self._make(self.solve(context), device)
        return model

    def _make(self, arch: Architecture, device: torch.device) -> LanguageModel:
        torch.manual_seed(0)  # identical weights in every process: no data-dependent speed
        return LanguageModel(arch, self.spec, self.options).to(device)


def sized_model(name: str, budget_name: str, context: int, device: torch.device) -> LanguageModel:
    """`name` sized to the budget at `context`, with the same seeded weights as in a sweep."""
    settings = SweepSettings(models=[name], contexts=[context], tokens_per_batch=context,
                             budget=budget_name)
    settings.validate()
    return _Sizer(name, settings, load_budget(budget_name)).build(context, device)


def _build(cell: _Cell, sizer: _Sizer, settings: SweepSettings, device: torch.device,
           autocast, budget: dict[str, Any], calibrations: dict[str, Timed],
           seconds_per_call: dict[str, float], timer: PairTimer,
           slowdown: float) -> tuple[str, str] | None:
    fixed_calls = ((settings.calibration_calls or {}).get(cell.model) or {}).get(cell.context) or {}

    def build() -> None:
        reset_peak_memory(device)
        model = sizer.build(cell.context, device)
        cell.record["arch"] = asdict(model.arch)
        cell.record["params_non_embedding"] = count_parameters(model)["non_embedding"]
        cell.record["batch_rows"] = batch_rows(settings.tokens_per_batch, cell.context)
        cell.work = build_cell(model, cell.context, settings.tokens_per_batch, settings.kinds,
                               device, autocast, train_config(budget), settings.decode_tokens, slowdown)
        cell.record["peak_memory_bytes"] = peak_memory_bytes(device)
        for kind, w in cell.work.workloads.items():
            calibration = CALIBRATION_OF[kind]
            calls = fixed_calls.get(kind) or matched_calls(timer, w.timed, seconds_per_call[calibration])
            cell.pairs[kind] = Pair(w.timed, calibrations[calibration], w.units, calls)

    return _guarded(build)


def _guarded(fn: Callable[[], None]) -> tuple[str, str] | None:
    """Run `fn`; None when it worked, else (status, reason) for the cell."""
    try:
        fn()
    except UsageError:
        raise
    except SkipCell as err:
        return "skipped", str(err)
    except torch.cuda.OutOfMemoryError as err:
        return "oom", str(err).splitlines()[0]
    except RuntimeError as err:
        text = str(err)
        if "out of memory" in text or "can't allocate memory" in text:
            return "oom", text.splitlines()[0]
        return "failed", f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
    except Exception as err:  # isolate the failure: record it, keep the sweep going
        return "failed", f"{type(err).__name__}: {err}"
    return None


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _where(device: torch.device, clock: str) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA events"
    timer = "process CPU time" if clock == "cpu" else "perf_counter"
    return f"CPU, {torch.get_num_threads()} torch threads, {timer}"


def _finish(cell: _Cell, settings: SweepSettings, device: torch.device, precision: str,
            calibration_samples: dict[str, list[float]]) -> None:
    """Turn the cell's samples into figures (calibration samples go to `calibration_samples`)
    and drop its models."""
    figures = {}
    work = cell.work
    for kind, pair in cell.pairs.items():
        w = work.workloads[kind]
        figures[kind] = {
            "tokens_per_s": pair.median_rate(),
            "ratio": pair.median_ratio(),
            "ratio_samples": [round(r, 6) for r in pair.ratios],
            # The raw times behind the ratios: which side of a ratio is noisy (the model or the
            # calibration) shows here, not in the ratios.
            "seconds_samples": [round(w, 7) for w in pair.workload_s],
            "calibration_seconds_samples": [round(c, 7) for c in pair.calibration_s],
            "calibration_calls": pair.calibration_calls,
            "backend": w.backend,
            "method": (f"{METHOD[kind]}; batch {w.shape} {precision}; median of {settings.repeats} "
                       f"rounds after {settings.warmup} warm-up calls, each call paired with "
                       f"{pair.calibration_calls} call(s) of the {CALIBRATION_OF[kind]} "
                       f"calibration; {_where(device, settings.clock)}"),
        }
        calibration_samples.setdefault(CALIBRATION_OF[kind], []).extend(pair.calibration_s)
    if cell.record["status"] == "ok":
        cell.record["figures"] = figures
        cell.record["unavailable"] = dict(work.unavailable) if work else {}
    cell.pairs.clear()  # drop the references to the models so they can be freed
    cell.work = None


def _document(settings: SweepSettings, device: torch.device, precision: str, budget: dict[str, Any],
              specs: dict[str, CalibrationSpec], calibration_samples: dict[str, list[float]],
              cells: list[_Cell], slowdowns: dict[str, float]) -> dict[str, Any]:
    calibration: dict[str, Any] = {}
    for kind, spec in specs.items():
        samples = calibration_samples.get(kind)
        calibration[kind] = {**spec.to_dict(), "description": spec.describe(),
                             "seconds_median": statistics.median(samples) if samples else None}
    models: dict[str, Any] = {}
    for cell in cells:
        entry = models.setdefault(cell.model, {
            "options": deep_merge(MODELS.get(cell.model).obj.default_options,
                                  settings.options.get(cell.model, {})),
            "cells": [],
        })
        entry["cells"].append(cell.record)
    threads = torch.get_num_threads() if device.type == "cpu" else None
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else environment_info()["cpu"],
            "class": device_class(device, threads),
            "threads": threads,
        },
        "environment": environment_info(),
        "settings": {
            "budget": budget.get("name", settings.budget),
            "budget_params": params_config(budget).non_embedding,
            "n_layers": arch_config(budget).n_layers,
            "n_heads": arch_config(budget).n_heads,
            "tokens_per_batch": settings.tokens_per_batch,
            "contexts": sorted(set(settings.contexts)),
            "kinds": list(settings.kinds),
            "decode_tokens": settings.decode_tokens,
            "precision": precision,
            "warmup": settings.warmup,
            "repeats": settings.repeats,
            "interleave": settings.interleave,
            "clock": settings.clock,
        },
        "calibration": calibration,
        "injected_slowdown": slowdowns,
        "method": (
            "Every timed call of a workload follows a timed call of its calibration; figures "
            "are medians over rounds. ratio = tokens per call x calibration seconds / workload "
            "seconds (machine-wide slowdowns cancel); tokens_per_s = tokens per call / median "
            "workload seconds; seconds_samples and calibration_seconds_samples are every "
            "round's raw times (check judges GPU forward and train figures by the fastest)."
        ),
        "models": models,
    }

