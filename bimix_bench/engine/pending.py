"""Cells whose throughput is measured after training, one at a time, with the device to itself.

`run --gpus` workers may share a GPU (`--gpus 0,0,0`: three cells train at once on GPU 0), and
even on separate GPUs they share the host's CPUs. Quality does not depend on that, timing does.
So a worker parks each trained cell in RUN/pending/ (the record so far as JSON, its best
weights as a checkpoint) instead of timing it; once every worker is done, `complete_pending`
reloads each parked model, measures it alone, appends the full record and removes the parked
files. An interrupted completion is finished by the next `run --resume`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from bimix_bench.engine.cells import record_cell_key
from bimix_bench.engine.checkpoint import checkpoint_path, load_checkpoint, record_tag, save_checkpoint
from bimix_bench.engine.throughput import record_throughput
from bimix_bench.engine.trainer import batch_size_for
from bimix_bench.errors import SkipCell
from bimix_bench.files import write_text_atomic
from bimix_bench.results.records import RecordError, append_record, read_records, run_records, validate_record
from bimix_bench.results.tables import write_tables

PENDING_DIR = "pending"
MEASURED_ALONE = "; measured after training, with the device to itself"


def _parked_path(run_dir: Path, family: str, subtask: str, model: str, seed: int, tag: str,
                 suffix: str) -> Path:
    """`tag` keeps apart the cells of one learning-rate grid ("-lr0.001"), which share the
    subtask, model and seed. The suffix is appended, never swapped in with Path.with_suffix:
    that would take a grid tag's decimal point for a suffix ("-lr0.001" and "-lr0.01" would
    both become "-lr0.json")."""
    return Path(run_dir) / PENDING_DIR / f"{family}-{subtask}-{model}-seed{seed}{tag}{suffix}"


def park_weights(run_dir: Path, cfg: dict[str, Any], cell, options: dict[str, Any], arch,
                 state: dict[str, torch.Tensor]) -> None:
    """Keep the cell's best weights until its throughput is measured."""
    path = _parked_path(run_dir, cfg["task"]["family"], cell.subtask, cell.model, cell.seed,
                        cell.tag, ".pt")
    save_checkpoint(path, cell.model, options, arch, state,
                    {"task": cfg["task"]["family"], "subtask": cell.subtask, "seed": cell.seed})


def park_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write the record so far (status ok, speeds still null) next to the parked weights,
    atomically; it is checked against the record schema like every stored record."""
    validate_record(record)
    path = _parked_path(run_dir, record["task"], record["subtask"], record["model"],
                        record["seed"], record_tag(record), ".json")
    write_text_atomic(path, json.dumps(record))


def parked_records(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in sorted((Path(run_dir) / PENDING_DIR).glob("*.json"))]


def parked_cells(run_dir: Path) -> set[tuple[str, int, str, float | None]]:
    """The Cell.key of every parked cell."""
    return {record_cell_key(r) for _, r in parked_records(run_dir)}


def complete_pending(run_dir: Path, cfg: dict[str, Any], task, device: torch.device,
                     data_dir: Path | None, save_checkpoints: bool, note=lambda message: None) -> int:
    """Measure every parked cell alone, append its record, drop its parked files; how many."""
    parked = parked_records(run_dir)
    recorded = {record_cell_key(r) for r in run_records(run_dir)}
    data_cache: dict[tuple[str, int], Any] = {}
    for json_path, record in parked:
        key = record_cell_key(record)  # (subtask, seed, model, rate of a grid cell)
        weights = json_path.with_suffix(".pt")
        if key in recorded:  # appended before an interruption could remove the parked files
            json_path.unlink()
            weights.unlink(missing_ok=True)
            continue
        note(f"measuring throughput alone: {record['model']} {record['subtask']} seed {record['seed']}")
        started = time.perf_counter()
        try:
            if key[:2] not in data_cache:
                data_cache.clear()
                data_cache[key[:2]] = task.load(record["subtask"], cfg["task"], record["seed"], data_dir)
            data = data_cache[key[:2]]
            model, _ = load_checkpoint(weights, device)
            throughput_start = time.perf_counter()
            record_throughput(record, model, data, cfg, device, batch_size_for(cfg, data.context))
            record.setdefault("timings_s", {})["throughput"] = time.perf_counter() - throughput_start
            for figure in record["throughput"].values():
                if figure is not None:
                    figure["method"] += MEASURED_ALONE
            record["status"] = "ok"
            del model
        except torch.cuda.OutOfMemoryError as err:
            record.update(status="oom", reason=f"throughput: {str(err).splitlines()[0]}")
        except (SkipCell, Exception) as err:  # keep the trained cell's quality; say what failed
            record.update(status="failed", reason=f"throughput: {type(err).__name__}: {err}"[:2000])
        finally:
            record["wall_time_s"] += time.perf_counter() - started
            if device.type == "cuda":
                torch.cuda.empty_cache()
        try:
            append_record(run_dir, record)
        except RecordError as err:  # never lose the cell silently: keep why it was unrecordable
            record.update(status="failed", reason=f"invalid record: {err}"[:2000])
            append_record(run_dir, record)
        if record["status"] == "ok" and save_checkpoints:
            target = checkpoint_path(run_dir, record["task"], record["subtask"], record["model"],
                                     record["seed"], record_tag(record))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(weights, target)
        else:
            weights.unlink(missing_ok=True)
        json_path.unlink()
        write_tables(run_dir, read_records(run_dir))
    return len(parked)
