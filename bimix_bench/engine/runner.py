"""One `bimix-bench run`: resolve the config, then train and score every (subtask, seed, model)
cell under the same budget, appending one record per cell as soon as it finishes."""

from __future__ import annotations

import datetime as _dt
import math
import os
import random
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml

from bimix_bench.config import load_budget, resolve_config
from bimix_bench.config.sections import (
    arch_config,
    check_sections,
    eval_config,
    params_config,
    train_config,
)
from bimix_bench.engine import interrupts
from bimix_bench.engine.cells import (
    Cell,
    cell_config,
    lr_grid,
    plan_cells,
    ready_to_train,
    record_cell_key,
)
from bimix_bench.engine.checkpoint import checkpoint_path, save_checkpoint
from bimix_bench.engine.device import autocast_factory, pick_device
from bimix_bench.engine.distributed import DistContext, barrier, device_for, init_from_env, shutdown
from bimix_bench.engine.lr_transfer import transferred_rates
from bimix_bench.engine.pending import complete_pending, park_record, park_weights, parked_cells
from bimix_bench.engine.throughput import backends_entry, measure_ddp_train_throughput, record_throughput  # noqa: F401 (re-export)
from bimix_bench.engine.trainer import Diverged, StepInfo, batch_size_for, train_model
from bimix_bench.env import environment_info
from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.files import write_text_atomic
from bimix_bench.models.backbone import LanguageModel, count_parameters
from bimix_bench.models.sizing import solve_architecture
from bimix_bench.registry import MODELS, TASKS
from bimix_bench.results.records import RecordError, append_record, config_hash, model_variant, new_record
from bimix_bench.results.tables import write_tables
from bimix_bench.task import TaskData, evaluate_split


@dataclass
class RunRequest:
    task: str
    budget: str = "tiny"
    models: list[str] | None = None  # None = every registered model
    seeds: list[int] | None = None  # None = the budget's seeds
    subtasks: list[str] | None = None  # None = the family's default subtasks
    overrides: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    data_dir: Path | None = None
    device: str = "auto"
    save_checkpoints: bool = True
    resume: Path | None = None  # continue this run folder: finished cells are kept, not redone
    shard: tuple[int, int] | None = None  # (k, N): run only every N-th cell from the k-th
    defer_throughput: bool = False  # park trained cells; time them later, alone (run --gpus)
    # time.monotonic() after which no new cell starts (bimix-bench sweep --time-limit): the run
    # stops cleanly at a cell boundary and `--resume` continues it.
    deadline: float | None = None
    # A run folder whose learning-rate grids chose the rate of every cell (engine/lr_transfer.py).
    lr_from: Path | None = None


class Reporter(Protocol):
    def run_started(self, run_dir: Path, cells: list[Cell]) -> None: ...
    def cell_started(self, cell: Cell, detail: str) -> None: ...
    def step(self, cell: Cell, info: StepInfo) -> None: ...
    def cell_finished(self, cell: Cell, record: dict[str, Any]) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def run_started(self, run_dir, cells): pass
    def cell_started(self, cell, detail): pass
    def step(self, cell, info): pass
    def cell_finished(self, cell, record): pass
    def note(self, message): pass


def default_run_dir(task: str, budget: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{task}-{Path(budget).stem}-{uuid.uuid4().hex[:4]}"


def prepare(request: RunRequest) -> tuple[dict[str, Any], list[Cell], Any]:
    """Validate names, resolve the config and list the cells (no heavy work yet)."""
    if request.resume is not None:
        return _prepare_resume(request)
    task = TASKS.get(request.task).obj
    model_names = request.models or MODELS.names()
    specs = {name: MODELS.get(name).obj for name in model_names}
    budget_name = load_budget(request.budget).get("name", Path(request.budget).stem)
    overrides = list(request.overrides)
    cfg = resolve_config(
        request.budget, request.task, task.defaults(budget_name),
        {name: spec.default_options for name, spec in specs.items()}, overrides,
    )
    if request.seeds is not None:
        cfg["seeds"] = list(request.seeds)
    known = [s.name for s in task.subtasks()]
    defaults = cfg["task"].get("subtasks")
    if not request.subtasks and defaults == []:
        notes = "; ".join(f"{k}: {v}" for k, v in task.informative().items())
        raise UsageError(f"{request.task} runs no subtask by default at budget {budget_name}: none "
                         f"is known to separate models there ({notes}). Name subtasks with "
                         "--subtasks to run them anyway")
    subtasks = request.subtasks or defaults or known
    for sub in subtasks:
        if sub not in known:
            raise UsageError(f"unknown subtask {sub!r} of task {request.task!r}; valid: {', '.join(known)}")
    cfg["task"]["subtasks"] = list(subtasks)
    task.check_options(cfg["task"], list(subtasks))  # before anything is written
    cfg["run"] = {"models": model_names, "data_dir": str(request.data_dir) if request.data_dir else None}
    variants = {name: model_variant(cfg["models"][name], spec.default_options) for name, spec in specs.items()}
    if any(variants.values()):  # kept in config.yaml, so a resumed run labels its records the same
        cfg["run"]["variants"] = {name: v for name, v in variants.items() if v}
    if request.lr_from is not None:  # the rates are read once and kept in config.yaml
        cfg["run"]["lr_from"] = transferred_rates(request.lr_from, cfg)
    return cfg, plan_cells(cfg), task


def _prepare_resume(request: RunRequest) -> tuple[dict[str, Any], list[Cell], Any]:
    """The run's own saved config decides everything; new settings would break matching."""
    if (request.overrides or request.models or request.seeds or request.subtasks
            or request.lr_from):
        raise UsageError("--resume continues a run exactly as it was configured; "
                         "drop --set/--models/--seeds/--subtasks/--lr-from")
    path = Path(request.resume) / "config.yaml"
    if not path.exists():
        raise UsageError(f"--resume {request.resume}: no config.yaml there (not a run folder)")
    from bimix_bench.config import load_yaml

    cfg = load_yaml(path, "run config")
    check_sections(cfg, f"run config {path}")  # a bad value stops the run here, not in a cell
    try:
        task = TASKS.get(cfg["task"]["family"]).obj
        for name in cfg["run"]["models"]:
            MODELS.get(name)
    except KeyError as err:
        raise UsageError(f"{path} lacks {err}: not a bimix-bench run config") from None
    return cfg, plan_cells(cfg), task


def execute(request: RunRequest, reporter: Reporter | None = None) -> Path:
    with interrupts.watching():
        dist = init_from_env(request.device)
        try:
            return _execute(request, reporter, dist)
        finally:
            shutdown(dist)


def _execute(request: RunRequest, reporter: Reporter | None, dist: DistContext | None) -> Path:
    is_main = dist is None or dist.is_main
    reporter = reporter if (reporter is not None and is_main) else SilentReporter()
    cfg, cells, task = prepare(request)
    if dist is not None and batch_size_for_any(cfg, task) < dist.world_size:
        raise UsageError(f"the budget's batch has fewer sequences than --nproc {dist.world_size}")
    planned, recorded = cells, set()
    if request.resume is not None:
        run_dir = Path(request.resume)
        data_dir = Path(cfg["run"]["data_dir"]) if cfg["run"].get("data_dir") else None
        request.data_dir = data_dir
        recorded, done = _finished_cells(run_dir)
        kept = sum(c.key in done for c in cells)
        cells = [c for c in cells if c.key not in done]
        reporter.note(f"resuming {run_dir}: {kept} finished cells kept, {len(cells)} to run")
    elif is_main:
        run_dir = initialise_run(request, cfg)
    else:
        run_dir = Path(request.out_dir)
    if request.shard is not None:  # one of several `run --gpus` workers: every N-th ready cell
        # Split what every worker of the round sees alike: the records do not change during a
        # round (its workers park their cells; the launcher records them between rounds), the
        # parked cells do, as workers finish.
        k, n = request.shard
        mine = ready_to_train([c for c in planned if c.key not in recorded], recorded)[k::n]
        cells = [c for c in mine if c in cells]
    device = device_for(dist) if dist is not None else pick_device(request.device)
    # A resumed run keeps the id its first records carry, so that its cells (one learning-rate
    # grid among them) stay one run even if the folder was moved or renamed in between.
    run_id = next((r["run_id"] for r in _all_records(run_dir)), run_dir.name)
    env = environment_info()
    reporter.run_started(run_dir, cells)
    data_cache: dict[tuple[str, int], TaskData | SkipCell] = {}
    for done_here, cell in enumerate(cells):
        if request.deadline is not None and time.monotonic() >= request.deadline:
            reporter.note(f"time limit reached: {len(cells) - done_here} cells left in {run_dir} "
                          f"(continue with: bimix-bench run --resume {run_dir})")
            break
        key = (cell.subtask, cell.seed)
        if key not in data_cache:
            if all(k[0] != cell.subtask for k in data_cache):
                data_cache.clear()  # one subtask's data in memory at a time
            try:
                data_cache[key] = task.load(cell.subtask, cfg["task"], cell.seed, request.data_dir)
            except SkipCell as skip:
                data_cache[key] = skip
                reporter.note(f"skipping {cfg['task']['family']}/{cell.subtask}: {skip}")
        barrier(dist)  # every rank reads the records after rank 0 appended the last cell's
        try:
            cell_cfg, lr_entry = cell_config(cfg, cell, _all_records(run_dir))
        except SkipCell as skip:
            record = base_record(cell, cfg, run_id, env, request)
            record.update(status="skipped", reason=str(skip), learning_rate={
                "lr": train_config(cfg).lr, "grid": lr_grid(cfg), "role": cell.role})
        else:
            record = run_cell(cell, data_cache[key], cell_cfg, device, run_dir, run_id, env, request,
                              reporter, dist)
            record["learning_rate"] = lr_entry
        barrier(dist)
        if not is_main:
            continue
        if request.defer_throughput and record["status"] == "ok":
            park_record(run_dir, record)
            state_path(run_dir, cfg, cell).unlink(missing_ok=True)
            reporter.cell_finished(cell, record)
            continue
        try:
            append_record(run_dir, record)
        except RecordError as err:  # never lose the cell silently: keep why it was unrecordable
            record = {**record, "status": "failed", "reason": f"invalid record: {err}"[:2000],
                      "metrics": {"val": {}, "test": {}}, "extras": {}}
            append_record(run_dir, record)
        state_path(run_dir, cfg, cell).unlink(missing_ok=True)
        reporter.cell_finished(cell, record)
        write_tables(run_dir, _all_records(run_dir))
    if request.shard is None and is_main:  # parked cells (from `run --gpus` workers): time them now
        complete_pending(run_dir, cfg, task, device, request.data_dir, request.save_checkpoints,
                         reporter.note)
    return run_dir


def complete_run(run_dir: Path, device_request: str, save_checkpoints: bool,
                 reporter: Reporter | None = None) -> int:
    """After `run --gpus` workers: measure the cells they parked, one at a time."""
    cfg, _, task = prepare(RunRequest(task="", resume=Path(run_dir)))
    data_dir = Path(cfg["run"]["data_dir"]) if cfg["run"].get("data_dir") else None
    note = reporter.note if reporter is not None else (lambda message: None)
    return complete_pending(Path(run_dir), cfg, task, pick_device(device_request), data_dir,
                            save_checkpoints, note)


def cells_ready_to_train(run_dir: Path) -> list[Cell]:
    """The unfinished cells of a run folder that can train now (engine.cells.ready_to_train):
    what another round of `run --gpus` workers would take on."""
    _, cells, _ = prepare(RunRequest(task="", resume=Path(run_dir)))
    recorded, done = _finished_cells(Path(run_dir))
    return ready_to_train([c for c in cells if c.key not in done], recorded)


def unfinished_cells(run_dir: Path, cells: list[Cell]) -> list[Cell]:
    """The cells of a run folder that have neither a record nor a parked result."""
    _, done = _finished_cells(Path(run_dir))
    return [c for c in cells if c.key not in done]


def _finished_cells(run_dir: Path) -> tuple[set[tuple], set[tuple]]:
    """(recorded, done): the Cell.key of every cell with a record, and of every cell with a
    record or parked for timing (`run --gpus`)."""
    recorded = {record_cell_key(r) for r in _all_records(run_dir)}
    return recorded, recorded | parked_cells(run_dir)


def initialise_run(request: RunRequest, cfg: dict[str, Any] | None = None) -> Path:
    """Create the run folder and save the resolved config (refusing to overwrite a run)."""
    if cfg is None:
        cfg = prepare(request)[0]
    run_dir = Path(request.out_dir) if request.out_dir else default_run_dir(request.task, request.budget)
    if (run_dir / "records.jsonl").exists():
        raise UsageError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it "
                         "or choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    except OSError as err:
        raise UsageError(f"cannot write to run folder {run_dir}: {err.strerror}") from None
    return run_dir


def state_path(run_dir: Path, cfg: dict[str, Any], cell: Cell) -> Path:
    """Where an unfinished cell keeps its training state (removed once the cell is recorded)."""
    return (Path(run_dir) / "state"
            / f"{cfg['task']['family']}-{cell.subtask}-{cell.model}-seed{cell.seed}{cell.tag}.pt")


def _all_records(run_dir: Path) -> list[dict[str, Any]]:
    from bimix_bench.results.records import run_records

    return run_records(run_dir)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_size_for_any(cfg: dict[str, Any], task) -> int:
    """Smallest batch (sequences) over the run's subtasks, for the --nproc sanity check."""
    contexts = [int(v["context"]) for k, v in cfg["task"].items()
                if k in cfg["task"]["subtasks"] and isinstance(v, dict) and "context" in v]
    return min((batch_size_for(cfg, c) for c in contexts), default=batch_size_for(cfg, 1))


def run_cell(cell: Cell, data: TaskData | SkipCell, cfg: dict[str, Any], device: torch.device,
             run_dir: Path, run_id: str, env: dict[str, Any], request: RunRequest,
             reporter: Reporter, dist: DistContext | None = None) -> dict[str, Any]:
    """One cell, in named phases: build (size to the budget), train, score (the test split on
    the best weights, and how the numbers were obtained), measure throughput, keep the weights.
    A failure is recorded in the cell's status; only bad input (UsageError) and an
    interruption leave the sweep."""
    is_main = dist is None or dist.is_main
    record = base_record(cell, cfg, run_id, env, request)
    if request.shard is not None:  # one of several `run --gpus` workers training at once
        record["environment"] = {**env, "cell_worker": f"{request.shard[0] + 1} of {request.shard[1]}",
                                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if isinstance(data, SkipCell):
        record.update(status="skipped", reason=str(data))
        return record
    record["data"] = data_facts(data, cfg)
    started = time.perf_counter()
    options = cfg["models"][cell.model]
    try:
        model, arch = _build(cell, data, cfg, device, record, reporter)
        result = train_model(model, data, cfg, device, cell.seed, lambda info: reporter.step(cell, info),
                             state_path=state_path(run_dir, cfg, cell), dist=dist)
        bs_train = batch_size_for(cfg, data.context)
        ddp_tokens_per_s = None
        if dist is not None:  # every rank takes part in the data-parallel timing
            ddp_tokens_per_s = measure_ddp_train_throughput(model, data, cfg, device, bs_train, dist)
        if not is_main:
            return record
        model.load_state_dict(result.best_state)
        _score(record, model, result, data, cfg, device, started)
        if request.defer_throughput:  # timed later, alone on the device (engine/pending.py)
            park_weights(run_dir, cfg, cell, options, arch, result.best_state)
            record["status"] = "ok"  # trained and scored; _execute parks it (speeds still null)
            return record
        _measure(record, model, data, cfg, device, bs_train, dist, ddp_tokens_per_s)
        if request.save_checkpoints:
            _keep_weights(run_dir, cfg, cell, options, arch, result)
        record["status"] = "ok"
    except Diverged as err:
        record.update(status="diverged", reason=str(err))
    except SkipCell as err:
        record.update(status="skipped", reason=str(err))
    except torch.cuda.OutOfMemoryError as err:
        record.update(status="oom", reason=str(err).splitlines()[0])
    except UsageError:
        raise
    except Exception as err:  # isolate the failure: record it, keep the sweep going
        if interrupts.interrupted():  # the error came from the interruption (e.g. a killed ptxas)
            raise KeyboardInterrupt from err
        (run_dir / "errors.log").open("a").write(
            f"--- {cell} ---\n{traceback.format_exc()}\n")
        record.update(status="failed", reason=f"{type(err).__name__}: {err}")
    finally:
        record["wall_time_s"] = time.perf_counter() - started
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return record


def _score(record: dict[str, Any], model: LanguageModel, result: Any, data: TaskData,
           cfg: dict[str, Any], device: torch.device, started: float) -> None:
    """Phase: the test split (and longer lengths) on the best weights, how the numbers were
    obtained, and the mixers' extras."""
    test_start = time.perf_counter()
    test = _score_test(model, data, cfg, device, result.best_val)
    _describe(record, result, data, cfg, test, timings={
        # Where the wall time went (kernel compilation and autotuning land in the first
        # calls). Training and validation include earlier processes of a resumed cell; the
        # rest is this process's, like wall_time_s.
        "other": test_start - started - (result.train_time_s - result.earlier_train_time_s),
        "training_steps": result.train_time_s - result.validation_time_s,
        "validation": result.validation_time_s,
        "test": time.perf_counter() - test_start,
    })
    record["extras"] = _extras(model, data)


def _measure(record: dict[str, Any], model: LanguageModel, data: TaskData, cfg: dict[str, Any],
             device: torch.device, bs_train: int, dist: DistContext | None,
             ddp_tokens_per_s: float | None) -> None:
    """Phase: throughput in this process (and the data-parallel scaling under DDP)."""
    throughput_start = time.perf_counter()
    record_throughput(record, model, data, cfg, device, bs_train)
    record["timings_s"]["throughput"] = time.perf_counter() - throughput_start
    if dist is not None:
        record["distributed"] = _scaling(record, dist, ddp_tokens_per_s)


def _keep_weights(run_dir: Path, cfg: dict[str, Any], cell: Cell, options: dict[str, Any],
                  arch: Any, result: Any) -> None:
    """Phase: the best weights as the cell's checkpoint."""
    save_checkpoint(
        checkpoint_path(run_dir, cfg["task"]["family"], cell.subtask, cell.model, cell.seed, cell.tag),
        cell.model, options, arch, result.best_state,
        {"task": cfg["task"]["family"], "subtask": cell.subtask, "seed": cell.seed,
         "best_step": result.best_step},
    )


def _build(cell: Cell, data: TaskData, cfg: dict[str, Any], device: torch.device,
           record: dict[str, Any], reporter: Reporter) -> tuple[LanguageModel, Any]:
    """Solve the width for the parameter target and build the model from the cell's seed;
    the record gets the architecture and the exact parameter counts."""
    spec, options = MODELS.get(cell.model).obj, cfg["models"][cell.model]
    params, shape = params_config(cfg), arch_config(cfg)
    target = params.non_embedding
    arch, _ = solve_architecture(
        spec, options, target, shape.n_layers, shape.n_heads, shape.ffn_ratio, data.context,
        head="cls" if data.objective == "classify" else "lm", n_classes=data.n_classes,
        tolerance=params.tolerance, vocab_size=data.vocab_size,
    )
    seed_everything(cell.seed)
    model = LanguageModel(arch, spec, options).to(device)
    counts = count_parameters(model)
    record["arch"] = asdict(arch)
    record["params"] = {
        "total": counts["total"], "non_embedding": counts["non_embedding"],
        "target_non_embedding": target,
        "relative_error": (counts["non_embedding"] - target) / target,
    }
    reporter.cell_started(cell, f"d_model={arch.d_model} ffn={arch.ffn_hidden} "
                                f"params={counts['non_embedding']:,} lr={train_config(cfg).lr:g}"
                                + (" (grid)" if cell.role == "grid" else ""))
    return model, arch


def _score_test(model: LanguageModel, data: TaskData, cfg: dict[str, Any], device: torch.device,
                best_val: dict[str, float]) -> dict[str, float]:
    """The test split's metrics on the loaded (best validation) weights; Diverged when any
    test or validation metric is not finite."""
    evaluation = eval_config(cfg)
    autocast = autocast_factory(device, train_config(cfg).precision)
    test = evaluate_split(model, data, "test", device, evaluation.batch_size,
                          limit=evaluation.test_examples, autocast=autocast)
    if data.extra_metrics is not None:
        test.update(data.extra_metrics(model, "test", device, cfg))
    test.update(_longer_lengths(model, data, cfg, device, autocast))
    bad = [k for k, v in {**test, **best_val}.items() if not math.isfinite(float(v))]
    if bad:
        raise Diverged(f"non-finite metrics after training: {', '.join(bad)}")
    return test


LENGTH_METRICS = ("accuracy", "bits_per_byte", "loss")


def _longer_lengths(model: LanguageModel, data: TaskData, cfg: dict[str, Any], device: torch.device,
                    autocast) -> dict[str, float]:
    """Length generalization: the test metrics on inputs eval.length_factors times as long as
    the training context, as `<metric>_len<F>x`, for tasks that can generate them. Fewer rows
    per batch at longer lengths, so memory stays that of the training length."""
    if data.longer_test is None:
        return {}
    evaluation = eval_config(cfg)
    limit = evaluation.longer_length_examples()
    out = {}
    for factor in evaluation.length_factors:
        rows = max(1, evaluation.batch_size // factor)
        metrics = evaluate_split(model, data.at_length(factor), "test", device, rows,
                                 limit=limit, autocast=autocast)
        out.update({f"{k}_len{factor}x": v for k, v in metrics.items() if k in LENGTH_METRICS})
    return out


def _describe(record: dict[str, Any], result: Any, data: TaskData, cfg: dict[str, Any],
              test: dict[str, float], timings: dict[str, float]) -> None:
    """How the cell's numbers were obtained: tokens, steps, metrics, protocol, timings, data."""
    record.update(
        tokens_trained=result.tokens_trained, steps=result.steps, best_step=result.best_step,
        metrics={"val": result.best_val, "test": test}, timings_s=timings,
    )
    train = train_config(cfg)
    record["protocol"] = {
        "name": train.protocol,
        "planned_steps": result.planned_steps, "stopped_early": result.stopped_early,
        "selection_metric": data.selection_metric,
        "early_stop_at": train.early_stop_at,
    }
    if result.resumed_at_steps:
        record["resumed_at_steps"] = result.resumed_at_steps
    record["data"] = {**data_facts(data, cfg), "tokens_trained_padded": result.tokens_trained_padded,
                      "train_history": result.history}


def _extras(model: LanguageModel, data: TaskData) -> dict[str, Any]:
    """Each mixer's record extras (per layer) and the mixer's probe on a test sequence."""
    extras = {f"layer{i}": m.record_extras() for i, m in enumerate(model.mixers) if m.record_extras()}
    probe = probe_model(model, data)
    if probe:
        extras["probe"] = probe
    return extras


def _scaling(record: dict[str, Any], dist: DistContext, ddp_tokens_per_s: float) -> dict[str, Any]:
    single = record["throughput"]["train_tokens_per_s"]["value"]
    return {
        "world_size": dist.world_size,
        "scaling_efficiency": ddp_tokens_per_s / (dist.world_size * single),
        "method": (f"global train tokens/s of a {dist.world_size}-process DDP step "
                   f"({ddp_tokens_per_s:,.0f}) / (world size x one-process tokens/s on "
                   f"the same global batch ({single:,.0f})); backend {dist.backend}"),
    }


def probe_model(model: LanguageModel, data: TaskData) -> dict[str, Any] | None:
    """The mixer's probe (TokenMixer.probe) on the first test sequence, its padding cut."""
    batch = next(data.eval_batches("test", 1, limit=1), None)
    if batch is None:
        return None
    ids = batch.tokens[0, : int(batch.lengths[0])].tolist()
    facts = type(model.mixers[0]).probe(model, ids)
    return {"sequence": "the first test example or window", **facts} if facts else None


def data_facts(data: TaskData, cfg: dict[str, Any]) -> dict[str, Any]:
    """The task's facts about its data, plus (classification) the share of the majority class
    among the scored test examples: the chance level a classifier must beat."""
    facts = dict(data.meta)
    labels = getattr(data.test, "labels", None)
    if data.objective == "classify" and labels is not None and len(labels):
        scored = labels[: eval_config(cfg).test_examples]
        facts["test_majority_share"] = float(torch.bincount(scored).max()) / len(scored)
    return facts


def base_record(cell: Cell, cfg: dict[str, Any], run_id: str, env: dict[str, Any],
                request: RunRequest) -> dict[str, Any]:
    """A cell's record before it ran (status failed until the cell says otherwise)."""
    return new_record(
        run_id=run_id,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        task=cfg["task"]["family"], subtask=cell.subtask, model=cell.model, seed=cell.seed,
        budget=cfg["budget"]["name"], variant=(cfg["run"].get("variants") or {}).get(cell.model),
        config=cfg, config_hash=config_hash(cfg), environment=env,
    )
