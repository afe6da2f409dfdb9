"""Result records: one JSON line per task x subtask x model x seed in a run's records.jsonl.

Records are appended by several processes at once (one per model or seed), so each append is a
single write of one whole line on an O_APPEND descriptor under an exclusive flock, followed by
fsync. A torn last line (a crash mid-write) is cut from the file by the next append, or by
`run --resume` (resume_records), under that same lock. Readers tolerate a torn last line and
any line that is not a valid record: such lines are skipped with a warning rather than failing
the whole table; resume_records instead refuses a file with such a line before its last.

The schema (version 1) is checked field by field by `validate_record`; every message starts with
``field <dotted.path>:`` so a bad record is easy to locate.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from bimix_bench.errors import UsageError

SCHEMA_VERSION = 1
RECORDS_FILE = "records.jsonl"

STATUSES = ("ok", "diverged", "oom", "skipped", "failed")
# A cell that never built or ran its model has no sizes, metrics or speeds to report.
_NOTHING_RAN = ("skipped", "failed")
THROUGHPUT_KINDS = ("train_tokens_per_s", "inference_tokens_per_s", "decode_tokens_per_s")
METRIC_SPLITS = ("val", "test")
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")


class RecordError(ValueError):
    """A record does not follow the schema. `errors` lists every problem found, each message
    starting with ``field <path>:``."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


# ---------------------------------------------------------------------------------------------
# Validation


class _Checker:
    """Collects schema violations so that one RecordError reports all of them."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append(f"field {field}: {message}")

    # Each check returns True when the value passed, so callers can descend only into
    # well-typed containers.
    def int_(self, field: str, value: Any, minimum: int | None = None) -> bool:
        # bool is a subclass of int in Python but never a meaningful count here.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"expected an integer, got {_describe(value)}")
            return False
        if minimum is not None and value < minimum:
            self.fail(field, f"must be >= {minimum}, got {value}")
            return False
        return True

    def number(self, field: str, value: Any, minimum: float | None = None,
               positive: bool = False) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(field, f"expected a number, got {_describe(value)}")
            return False
        if not math.isfinite(value):
            # Strict JSON has no NaN/Infinity; a diverged cell reports status "diverged".
            self.fail(field, f"must be a finite number, got {value}")
            return False
        if positive and value <= 0:
            self.fail(field, f"must be > 0, got {value}")
            return False
        if minimum is not None and value < minimum:
            self.fail(field, f"must be >= {minimum}, got {value}")
            return False
        return True

    def str_(self, field: str, value: Any, nonempty: bool = False) -> bool:
        if not isinstance(value, str):
            self.fail(field, f"expected a string, got {_describe(value)}")
            return False
        if nonempty and not value:
            self.fail(field, "must not be empty")
            return False
        return True

    def list_(self, field: str, value: Any) -> bool:
        if not isinstance(value, list):
            self.fail(field, f"expected a list, got {_describe(value)}")
            return False
        return True

    def dict_(self, field: str, value: Any) -> bool:
        if not isinstance(value, dict):
            self.fail(field, f"expected an object, got {_describe(value)}")
            return False
        for key in value:
            if not isinstance(key, str):
                self.fail(f"{field}.{key}", f"keys must be strings, got {_describe(key)}")
                return False
        return True

    def keys(self, field: str, value: dict, required: tuple[str, ...],
             optional: tuple[str, ...] = ()) -> None:
        prefix = f"{field}." if field else ""
        for key in required:
            if key not in value:
                self.fail(prefix + key, "missing")
        for key in value:
            if key not in required and key not in optional:
                self.fail(prefix + str(key), "unknown field")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} ({text})"


_TOP_LEVEL = (
    "schema_version", "run_id", "created_at", "task", "subtask", "model", "seed", "budget",
    "status", "reason", "params", "arch", "tokens_trained", "steps", "best_step", "metrics",
    "throughput", "peak_memory_bytes", "wall_time_s", "backends", "data", "config",
    "config_hash", "environment", "extras",
)
# "distributed": only for multi-process (torchrun) runs: world size, tokens/s per GPU over one
# GPU. "timings_s": seconds per phase of the cell (records before it was added lack it).
# "resumed_at_steps": the steps at which training continued from a saved state after an
# interruption (then wall_time_s covers the last process only, timings_s the whole training).
# "learning_rate": the rate this cell trained at and how it was chosen (LR_ROLES; records
# before learning-rate grids lack it: one fixed rate). "protocol": the training protocol, the
# steps it planned and whether early stopping ended training before them.
_OPTIONAL_TOP_LEVEL = ("distributed", "timings_s", "resumed_at_steps", "learning_rate", "protocol",
                       "variant")
# "fixed": the config's one rate; "grid": one rate of the grid, trained on the first seed;
# "chosen": a later seed at the grid's best rate on validation.
LR_ROLES = ("fixed", "grid", "chosen")
_PARAMS_INT = ("total", "non_embedding", "target_non_embedding")
_ARCH_INT = ("d_model", "n_layers", "n_heads", "ffn_hidden", "max_seq_len")


def validate_record(rec: dict) -> None:
    """Check `rec` against schema version 1; raise RecordError naming every bad field."""
    c = _Checker()
    if not isinstance(rec, dict):
        raise RecordError([f"field <record>: expected an object, got {_describe(rec)}"])
    c.keys("", rec, _TOP_LEVEL, _OPTIONAL_TOP_LEVEL)
    if "distributed" in rec and c.dict_("distributed", rec["distributed"]):
        dist = rec["distributed"]
        c.keys("distributed", dist, ("world_size", "scaling_efficiency", "method"))
        if "world_size" in dist:
            c.int_("distributed.world_size", dist["world_size"], minimum=1)
        if dist.get("scaling_efficiency") is not None:
            c.number("distributed.scaling_efficiency", dist["scaling_efficiency"], minimum=0)
        if "method" in dist:
            c.str_("distributed.method", dist["method"])

    if "schema_version" in rec and c.int_("schema_version", rec["schema_version"]):
        if rec["schema_version"] != SCHEMA_VERSION:
            c.fail("schema_version", f"expected {SCHEMA_VERSION}, got {rec['schema_version']}")
    for name in ("run_id", "task", "subtask", "model", "budget"):
        if name in rec:
            c.str_(name, rec[name], nonempty=name != "subtask")
    if "created_at" in rec and c.str_("created_at", rec["created_at"]):
        try:
            datetime.fromisoformat(rec["created_at"])
        except ValueError:
            c.fail("created_at", f"not an ISO-8601 timestamp: {rec['created_at']!r}")
    if "seed" in rec:
        c.int_("seed", rec["seed"], minimum=0)
    if rec.get("variant") is not None:
        c.str_("variant", rec["variant"], nonempty=True)

    status = rec.get("status")
    if "status" in rec and status not in STATUSES:
        c.fail("status", f"must be one of {', '.join(STATUSES)}; got {_describe(status)}")
    if "reason" in rec:
        reason = rec["reason"]
        if reason is not None:
            c.str_("reason", reason)
        elif status in STATUSES and status != "ok":
            c.fail("reason", f"required (a string) when status is {status!r}")
    nothing_ran = status in _NOTHING_RAN

    if "params" in rec:
        _check_params(c, rec["params"], may_be_null=nothing_ran)
    if "arch" in rec:
        _check_arch(c, rec["arch"], may_be_null=nothing_ran)
    for name in ("tokens_trained", "steps"):
        if name in rec:
            c.int_(name, rec[name], minimum=0)
    if rec.get("best_step") is not None:
        c.int_("best_step", rec["best_step"], minimum=0)
    if "metrics" in rec:
        _check_metrics(c, rec["metrics"], status)
    if "throughput" in rec:
        _check_throughput(c, rec["throughput"], may_be_null=nothing_ran)
    if rec.get("peak_memory_bytes") is not None:
        c.int_("peak_memory_bytes", rec["peak_memory_bytes"], minimum=0)
    if "wall_time_s" in rec:
        c.number("wall_time_s", rec["wall_time_s"], minimum=0)
    if "timings_s" in rec and c.dict_("timings_s", rec["timings_s"]):
        for phase, seconds in rec["timings_s"].items():
            c.number(f"timings_s.{phase}", seconds, minimum=0)
    if "resumed_at_steps" in rec and c.list_("resumed_at_steps", rec["resumed_at_steps"]):
        for i, step in enumerate(rec["resumed_at_steps"]):
            c.int_(f"resumed_at_steps[{i}]", step, minimum=0)
    if "learning_rate" in rec:
        _check_learning_rate(c, rec["learning_rate"])
    if "protocol" in rec and c.dict_("protocol", rec["protocol"]):
        proto = rec["protocol"]
        c.keys("protocol", proto, ("name", "planned_steps", "stopped_early", "selection_metric"),
               optional=("early_stop_at",))
        if "name" in proto:
            c.str_("protocol.name", proto["name"], nonempty=True)
        if "planned_steps" in proto:
            c.int_("protocol.planned_steps", proto["planned_steps"], minimum=0)
        if "stopped_early" in proto and not isinstance(proto["stopped_early"], bool):
            c.fail("protocol.stopped_early", f"expected true or false, got {_describe(proto['stopped_early'])}")
        if "selection_metric" in proto:
            c.str_("protocol.selection_metric", proto["selection_metric"], nonempty=True)
    if "backends" in rec and c.dict_("backends", rec["backends"]):
        for key, value in rec["backends"].items():
            c.str_(f"backends.{key}", value)
    for name in ("data", "config", "environment", "extras"):
        if name in rec:
            c.dict_(name, rec[name])
    if "config_hash" in rec and c.str_("config_hash", rec["config_hash"]):
        if not _HASH_RE.match(rec["config_hash"]):
            c.fail("config_hash", f"expected 16 lowercase hex digits, got {rec['config_hash']!r}")

    if c.errors:
        raise RecordError(c.errors)


def _check_params(c: _Checker, params: Any, may_be_null: bool) -> None:
    if params is None and may_be_null:
        return
    if not c.dict_("params", params):
        return
    c.keys("params", params, _PARAMS_INT + ("relative_error",))
    ok = all(c.int_(f"params.{k}", params[k], minimum=0) for k in _PARAMS_INT if k in params)
    if "relative_error" in params and c.number("params.relative_error", params["relative_error"]):
        if ok and all(k in params for k in _PARAMS_INT):
            target = params["target_non_embedding"]
            if target <= 0:
                c.fail("params.target_non_embedding", f"must be > 0, got {target}")
                return
            expected = (params["non_embedding"] - target) / target
            if abs(params["relative_error"] - expected) > 1e-6 * max(1.0, abs(expected)):
                c.fail("params.relative_error",
                       f"{params['relative_error']} disagrees with (non_embedding - target) / "
                       f"target = {expected:.6g}")


def _check_learning_rate(c: _Checker, lr: Any) -> None:
    if not c.dict_("learning_rate", lr):
        return
    c.keys("learning_rate", lr, ("lr", "grid", "role"), optional=("chosen_from",))
    if "lr" in lr:
        c.number("learning_rate.lr", lr["lr"], positive=True)
    if "grid" in lr and c.list_("learning_rate.grid", lr["grid"]):
        for i, rate in enumerate(lr["grid"]):
            c.number(f"learning_rate.grid[{i}]", rate, positive=True)
    if "role" in lr and lr["role"] not in LR_ROLES:
        c.fail("learning_rate.role", f"must be one of {', '.join(LR_ROLES)}; got {_describe(lr['role'])}")
    if "chosen_from" in lr and c.dict_("learning_rate.chosen_from", lr["chosen_from"]):
        for rate, value in lr["chosen_from"].items():
            if value is not None:
                c.number(f"learning_rate.chosen_from.{rate}", value)


def _check_arch(c: _Checker, arch: Any, may_be_null: bool) -> None:
    if arch is None and may_be_null:
        return
    if not c.dict_("arch", arch):
        return
    c.keys("arch", arch, _ARCH_INT + ("head", "n_classes"), optional=("vocab_size",))
    if "vocab_size" in arch:
        c.int_("arch.vocab_size", arch["vocab_size"], minimum=1)
    for key in _ARCH_INT:
        if key in arch:
            c.int_(f"arch.{key}", arch[key], minimum=1)
    if "n_classes" in arch:
        c.int_("arch.n_classes", arch["n_classes"], minimum=0)  # 0 for a language-model head
    if "head" in arch:
        c.str_("arch.head", arch["head"], nonempty=True)


def _check_metrics(c: _Checker, metrics: Any, status: Any) -> None:
    if metrics is None and status in _NOTHING_RAN:
        return
    if not c.dict_("metrics", metrics):
        return
    # A finished run scores both splits; a cell that stopped early may have scored neither.
    required = METRIC_SPLITS if status == "ok" else ()
    c.keys("metrics", metrics, required, optional=METRIC_SPLITS)
    for split in METRIC_SPLITS:
        if split in metrics and c.dict_(f"metrics.{split}", metrics[split]):
            for name, value in metrics[split].items():
                c.number(f"metrics.{split}.{name}", value)


def _check_throughput(c: _Checker, throughput: Any, may_be_null: bool) -> None:
    if throughput is None and may_be_null:
        return
    if not c.dict_("throughput", throughput):
        return
    c.keys("throughput", throughput, THROUGHPUT_KINDS)
    for kind in THROUGHPUT_KINDS:
        m = throughput.get(kind)
        field = f"throughput.{kind}"
        if m is None or not c.dict_(field, m):
            continue
        c.keys(field, m, ("value", "method", "backend"))
        if "value" in m:
            c.number(f"{field}.value", m["value"], positive=True)
        for key in ("method", "backend"):
            if key in m:
                c.str_(f"{field}.{key}", m[key], nonempty=True)


# ---------------------------------------------------------------------------------------------
# Writing and reading


def append_record(run_dir: Path, rec: dict) -> None:
    """Validate `rec` and append it as one line to run_dir/records.jsonl, atomically with
    respect to other appenders (processes included)."""
    validate_record(rec)
    # allow_nan=False: the file stays strict JSON that any reader accepts.
    line = (json.dumps(rec, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n").encode()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RECORDS_FILE
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            _repair_tail_locked(fd)  # a crash may have left a torn last line: cut it first
            written = os.write(fd, line)
            while written < len(line):  # rare short write (disk nearly full): finish it locked
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(run_dir)


def _repair_tail_locked(fd: int) -> bool:
    """With the appenders' lock held on `fd` (O_APPEND): bytes after the last newline were left
    by a writer that died mid-line (a live one holds the lock until its line is whole). Not JSON
    (a cut-off object never is): cut the file back to its last complete line. JSON that lacks
    only its newline: add the newline. Returns whether the file changed.

    ftruncate, not a rewrite and rename: one step that keeps every complete line, and an
    appender that opened the file and waits for the lock still writes into this same file
    (after a rename its record would go into the unlinked old one and be lost)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return False
    data = os.pread(fd, size, 0)
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        os.ftruncate(fd, start)
    else:
        os.write(fd, b"\n")
    os.fsync(fd)
    return True


def repair_torn_tail(path: Path) -> bool:
    """Cut a torn last line (a crash mid-write) from a run folder's records.jsonl, in place and
    under the appenders' lock (see _repair_tail_locked). Returns whether the file changed."""
    path = records_path(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return _repair_tail_locked(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def resume_records(run_dir: Path) -> list[dict]:
    """The records of a run folder that `run --resume` continues, read strictly. A line that
    is not a valid record before the last complete line is corruption that resuming would
    build on: UsageError naming the file and line, and the file is left as it is. A torn last
    line (a crash mid-write) is recovered: cut from the file (repair_torn_tail), so that later
    commands read the file without a warning."""
    path = records_path(run_dir)
    if not path.exists():
        return []
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    complete = raw[: raw.rfind(b"\n") + 1]  # the bytes after the last newline: a torn line
    records = []
    for number, line in enumerate(complete.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            why = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            raise UsageError(f"{path}: line {number} is not valid JSON ({why}); the records file "
                             "is corrupt: fix or delete that line to resume") from None
        try:
            validate_record(rec)
        except RecordError as err:
            more = f" and {len(err.errors) - 1} more" if len(err.errors) > 1 else ""
            raise UsageError(f"{path}: line {number} is not a valid record ({err.errors[0]}{more}); "
                             "fix or delete that line to resume") from None
        records.append(rec)
    if complete != raw:
        try:
            repair_torn_tail(path)
        except OSError as err:
            raise UsageError(f"cannot remove the torn last line of {path}: {err.strerror}") from None
        return resume_records(path)  # the tail may have been a whole line lacking its newline
    return records


def _fsync_dir(directory: Path) -> None:
    """Make a newly created file's directory entry durable (best effort: not every file
    system allows fsync on a directory)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def records_path(path: Path) -> Path:
    """A run folder -> its records.jsonl; a file path is returned as is."""
    path = Path(path)
    return path / RECORDS_FILE if path.is_dir() else path


def run_records(run_dir: Path) -> list[dict]:
    """read_records of a run folder that may not have recorded a cell yet ([] then)."""
    return read_records(run_dir) if records_path(run_dir).exists() else []


def read_records(path: Path) -> list[dict]:
    """All valid records of a run folder or records.jsonl, in file order. Torn, undecodable
    or invalid lines are skipped, each with a warning naming the file and line number."""
    path = records_path(path)
    raw = path.read_bytes()  # FileNotFoundError names the missing file
    lines = raw.split(b"\n")
    torn_tail = not raw.endswith(b"\n")  # also true for an empty file, whose only "line" is b""
    records: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)

        def skip(why: str) -> None:
            warnings.warn(f"{path}: line {number}: {why}; line skipped", stacklevel=3)

        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if last and torn_tail:
                skip(f"incomplete last line (interrupted write?): {err}")
            else:
                skip(f"not valid JSON: {err}")
            continue
        try:
            validate_record(rec)
        except RecordError as err:
            skip(f"invalid record: {err}")
            continue
        records.append(rec)
    return records


# ---------------------------------------------------------------------------------------------
# Keys and hashes


def model_variant(options: dict[str, Any], defaults: dict[str, Any]) -> str | None:
    """The model options of a run that differ from the model's registered defaults, as
    "key=value,..." (sorted), or None: what makes e.g. `multistate --set
    models.multistate.pattern=sqrt` or a BiMix ablation a different entry from the model."""
    changed = sorted(f"{k}={options[k]}" for k in options if k not in defaults or options[k] != defaults[k])
    return ",".join(changed) or None


def model_label(rec: dict) -> str:
    """The name a record is compared under: the model, with its variant when it has one
    ("multistate[pattern=sqrt]"). Within one run folder a model has one variant."""
    variant = rec.get("variant")
    return f"{rec['model']}[{variant}]" if variant else rec["model"]


def as_compared(records: list[dict]) -> list[dict]:
    """Records with `model` replaced by model_label, for tables that put runs side by side:
    a variant is its own row, never pooled with the model's default seeds."""
    return [{**rec, "model": model_label(rec)} if rec.get("variant") else rec for rec in records]


def cell_key(rec: dict) -> tuple[str, str, str, int]:
    """The identity of a benchmark cell: (task, subtask, model, seed)."""
    return (rec["task"], rec["subtask"], rec["model"], rec["seed"])


def canonical_json(obj: Any) -> str:
    """JSON that depends only on content: sorted keys, no whitespace, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def config_hash(cfg: dict) -> str:
    """First 16 hex digits of the SHA-256 of the config's canonical JSON."""
    return hashlib.sha256(canonical_json(cfg).encode("utf-8")).hexdigest()[:16]


__all__: list[str] = [
    "SCHEMA_VERSION", "RECORDS_FILE", "STATUSES", "THROUGHPUT_KINDS", "RecordError",
    "validate_record", "append_record", "read_records", "records_path", "cell_key",
    "repair_torn_tail", "resume_records",
    "canonical_json", "config_hash",
]
