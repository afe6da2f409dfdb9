"""The result record, defined once: typed dataclasses that the runner builds a cell's record
from (`new_record`) and that `validate_record` checks every stored record against.

A record travels as a JSON object (one line of records.jsonl); the dataclasses say what each
field holds. Constraints beyond the type live in a field's metadata:
  minimum / positive   numbers (bool never counts as a number)
  nonempty             strings
  optional             the field may be absent (added after version 1's first records)
  null_when_idle       may be null when the cell never built or ran its model (skipped, failed)
Rules across fields (a reason for every status but ok, the parameter error agreeing with its
counts, both splits scored when ok) are in `_cross_field_rules`. Every message starts with
``field <dotted.path>:`` so a bad record is easy to locate.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Union

SCHEMA_VERSION = 1
Status = Literal["ok", "diverged", "oom", "skipped", "failed"]
STATUSES: tuple[str, ...] = typing.get_args(Status)
# A cell that never built or ran its model has no sizes, metrics or speeds to report.
IDLE_STATUSES = ("skipped", "failed")
# "fixed": the config's one rate; "grid": one rate of the grid, trained on the first seed;
# "chosen": a later seed at the grid's best rate on validation.
LrRole = Literal["fixed", "grid", "chosen"]
LR_ROLES: tuple[str, ...] = typing.get_args(LrRole)
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")


class _Absent:
    """The value of an optional field left out of the JSON object."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
_NO_DEFAULT: Any = dataclasses.MISSING


def _count(default: Any = _NO_DEFAULT) -> Any:
    return field(default=default, metadata={"minimum": 0})


def _optional(**constraints: Any) -> Any:
    return field(default=ABSENT, metadata={"optional": True, **constraints})


@dataclass
class Params:
    total: int = _count()
    non_embedding: int = _count()
    target_non_embedding: int = _count()
    relative_error: float = 0.0  # (non_embedding - target) / target


@dataclass
class Arch:
    d_model: int = field(metadata={"minimum": 1})
    n_layers: int = field(metadata={"minimum": 1})
    n_heads: int = field(metadata={"minimum": 1})
    ffn_hidden: int = field(metadata={"minimum": 1})
    max_seq_len: int = field(metadata={"minimum": 1})
    head: str = field(metadata={"nonempty": True})  # "lm" or "cls"
    n_classes: int = _count()  # 0 for a language-model head
    vocab_size: int = _optional(minimum=1)


@dataclass
class Figure:
    """One throughput measurement: tokens/s, how it was timed, on which kernels."""
    value: float = field(metadata={"positive": True})
    method: str = field(metadata={"nonempty": True})
    backend: str = field(metadata={"nonempty": True})


@dataclass
class Throughput:
    train_tokens_per_s: Figure | None = None
    inference_tokens_per_s: Figure | None = None
    decode_tokens_per_s: Figure | None = None


THROUGHPUT_KINDS = tuple(f.name for f in dataclasses.fields(Throughput))


@dataclass
class Metrics:
    """Metric name -> value per split; a cell that stopped early may have scored neither."""
    val: dict[str, float] = field(default_factory=dict, metadata={"optional": True})
    test: dict[str, float] = field(default_factory=dict, metadata={"optional": True})


METRIC_SPLITS = tuple(f.name for f in dataclasses.fields(Metrics))


@dataclass
class LearningRate:
    lr: float = field(metadata={"positive": True})
    grid: list[float] = field(metadata={"positive": True})
    role: LrRole = "fixed"
    chosen_from: dict[str, float | None] = _optional()  # rate -> its validation score
    chosen_in: str = _optional(nonempty=True)  # the earlier run whose grid chose (run --lr-from)


@dataclass
class Protocol:
    name: str = field(metadata={"nonempty": True})
    planned_steps: int = _count()
    stopped_early: bool = False
    selection_metric: str = field(default="loss", metadata={"nonempty": True})
    early_stop_at: float = _optional()


@dataclass
class Distributed:
    """Multi-process (torchrun) runs: world size, tokens/s per GPU over one GPU."""
    world_size: int = field(metadata={"minimum": 1})
    scaling_efficiency: float | None = field(default=None, metadata={"minimum": 0})
    method: str = ""


@dataclass
class Record:
    run_id: str = field(metadata={"nonempty": True})
    created_at: str = field(metadata={"iso_time": True})
    task: str = field(metadata={"nonempty": True})
    subtask: str
    model: str = field(metadata={"nonempty": True})
    seed: int = _count()
    budget: str = field(metadata={"nonempty": True})
    config: dict[str, Any]
    config_hash: str = field(metadata={"pattern": _HASH_RE})
    environment: dict[str, Any]
    schema_version: int = field(default=SCHEMA_VERSION, metadata={"equals": SCHEMA_VERSION})
    status: Status = "failed"
    reason: str | None = None  # why, for every status but ok
    params: Params | None = field(default=None, metadata={"null_when_idle": True})
    arch: Arch | None = field(default=None, metadata={"null_when_idle": True})
    tokens_trained: int = _count(default=0)
    steps: int = _count(default=0)
    best_step: int | None = field(default=None, metadata={"minimum": 0})
    metrics: Metrics | None = field(default_factory=Metrics, metadata={"null_when_idle": True})
    throughput: Throughput | None = field(default_factory=Throughput, metadata={"null_when_idle": True})
    peak_memory_bytes: int | None = field(default=None, metadata={"minimum": 0})
    wall_time_s: float = field(default=0.0, metadata={"minimum": 0})
    backends: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    # Optional: added after the first version-1 records.
    variant: str | None = _optional(nonempty=True)  # model options set away from the defaults
    learning_rate: LearningRate = _optional()  # absent: one fixed rate (before grids existed)
    protocol: Protocol = _optional()  # the training protocol, its planned steps, early stop
    timings_s: dict[str, float] = _optional(minimum=0)  # seconds per phase of the cell
    # Steps at which training continued from a saved state after an interruption (then
    # wall_time_s covers the last process only, timings_s the whole training).
    resumed_at_steps: list[int] = _optional(minimum=0)
    distributed: Distributed = _optional()


def new_record(**fields: Any) -> dict[str, Any]:
    """A record as the JSON object that is stored: Record's defaults, then `fields`; optional
    fields not given are left out."""
    return _plain(Record(**fields))


def _plain(value: Any) -> Any:
    """Dataclasses as dicts (recursively), ABSENT fields dropped, containers copied."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not ABSENT}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Validation


class RecordError(ValueError):
    """A record does not follow the schema. `errors` lists every problem found, each message
    starting with ``field <path>:``."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def validate_record(rec: Any) -> None:
    """Check `rec` against Record; raise RecordError naming every bad field."""
    if not isinstance(rec, dict):
        raise RecordError([f"field <record>: expected an object, got {_describe(rec)}"])
    errors: list[str] = []
    idle = rec.get("status") in IDLE_STATUSES
    _check_dataclass(Record, rec, "", errors, idle)
    _cross_field_rules(rec, errors)
    if errors:
        raise RecordError(errors)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_dataclass(cls: type, value: dict, path: str, errors: list[str], idle: bool) -> None:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        where = f"{path}{f.name}"
        if f.name not in value:
            if not f.metadata.get("optional"):
                errors.append(f"field {where}: missing")
            continue
        item = value[f.name]
        if item is None and f.metadata.get("null_when_idle"):
            if not idle:
                errors.append(f"field {where}: must not be null unless the cell never ran "
                              f"(status {' or '.join(IDLE_STATUSES)})")
            continue
        if item is None and f.metadata.get("optional") and _allows_none(hints[f.name]):
            continue
        _check(hints[f.name], item, where, f.metadata, errors, idle)
    for key in value:
        if key not in names:
            errors.append(f"field {path}{key}: unknown field")


def _allows_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(hint)


def _check(hint: Any, value: Any, where: str, meta: Any, errors: list[str], idle: bool) -> bool:
    """Check one value against a type hint and the field's constraints; True when it passed."""
    fail = lambda message: errors.append(f"field {where}: {message}") or False  # noqa: E731
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _allows_none(hint):
        if value is None:
            return True
        inner = [a for a in args if a is not type(None)]
        return _check(inner[0], value, where, meta, errors, idle)
    if hint is Any:
        return True
    if origin is Literal:
        return True if value in args else fail(
            f"must be one of {', '.join(map(str, args))}; got {_describe(value)}")
    if dataclasses.is_dataclass(hint):
        if not _is_object(value, where, errors):
            return False
        _check_dataclass(hint, value, f"{where}.", errors, idle)
        return True
    if origin is dict:
        if not _is_object(value, where, errors):
            return False
        ok = True
        for key, item in value.items():
            ok &= _check(args[1], item, f"{where}.{key}", meta, errors, idle)
        return ok
    if origin is list:
        if not isinstance(value, list):
            return fail(f"expected a list, got {_describe(value)}")
        ok = True
        for i, item in enumerate(value):
            ok &= _check(args[0], item, f"{where}[{i}]", meta, errors, idle)
        return ok
    if hint is bool:
        return True if isinstance(value, bool) else fail(f"expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return fail(f"expected an integer, got {_describe(value)}")
        return _in_range(value, meta, fail)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return fail(f"expected a number, got {_describe(value)}")
        if not math.isfinite(value):  # strict JSON has no NaN; a diverged cell says "diverged"
            return fail(f"must be a finite number, got {value}")
        return _in_range(value, meta, fail)
    if hint is str:
        if not isinstance(value, str):
            return fail(f"expected a string, got {_describe(value)}")
        if meta.get("nonempty") and not value:
            return fail("must not be empty")
        if "pattern" in meta and not meta["pattern"].match(value):
            return fail(f"expected 16 lowercase hex digits, got {value!r}")
        if meta.get("iso_time"):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                return fail(f"not an ISO-8601 timestamp: {value!r}")
        return True
    raise TypeError(f"record schema: no check for {hint!r} ({where})")


def _is_object(value: Any, where: str, errors: list[str]) -> bool:
    if not isinstance(value, dict):
        errors.append(f"field {where}: expected an object, got {_describe(value)}")
        return False
    bad = [k for k in value if not isinstance(k, str)]
    for key in bad:
        errors.append(f"field {where}.{key}: keys must be strings, got {_describe(key)}")
    return not bad


def _in_range(value: float, meta: Any, fail) -> bool:
    if "equals" in meta and value != meta["equals"]:
        return fail(f"expected {meta['equals']}, got {value}")
    if meta.get("positive") and value <= 0:
        return fail(f"must be > 0, got {value}")
    if "minimum" in meta and value < meta["minimum"]:
        return fail(f"must be >= {meta['minimum']}, got {value}")
    return True


def _cross_field_rules(rec: dict, errors: list[str]) -> None:
    status = rec.get("status")
    if rec.get("reason") is None and "reason" in rec and status in STATUSES and status != "ok":
        errors.append(f"field reason: required (a string) when status is {status!r}")
    metrics = rec.get("metrics")
    if status == "ok" and isinstance(metrics, dict):
        errors += [f"field metrics.{split}: missing" for split in METRIC_SPLITS if split not in metrics]
    params = rec.get("params")
    counts = ("non_embedding", "target_non_embedding", "relative_error")
    if isinstance(params, dict) and all(_is_number(params.get(k)) for k in counts):
        target = params["target_non_embedding"]
        if target <= 0:
            errors.append(f"field params.target_non_embedding: must be > 0, got {target}")
            return
        expected = (params["non_embedding"] - target) / target
        if abs(params["relative_error"] - expected) > 1e-6 * max(1.0, abs(expected)):
            errors.append(f"field params.relative_error: {params['relative_error']} disagrees with "
                          f"(non_embedding - target) / target = {expected:.6g}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} ({text})"
