"""Result records: one JSON line per task x subtask x model x seed in a run's records.jsonl.

Records are appended by several processes at once (one per model or seed), so each append is a
single write of one whole line on an O_APPEND descriptor under an exclusive flock, followed by
fsync. A torn last line (a crash mid-write) is cut from the file by the next append, or by
`run --resume` (resume_records), under that same lock. Readers tolerate a torn last line and
any line that is not a valid record: such lines are skipped with a warning rather than failing
the whole table; resume_records instead refuses a file with such a line before its last.

The record itself is defined once, in record_schema.py (typed dataclasses); `validate_record`
checks each record against that definition before it is written.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from bimix_bench.config.sections import sequences_per_step
from bimix_bench.errors import UsageError
from bimix_bench.results.record_schema import (  # noqa: F401 (the record's names, re-exported)
    SCHEMA_VERSION, STATUSES, THROUGHPUT_KINDS, RecordError, new_record, validate_record,
)

RECORDS_FILE = "records.jsonl"


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


def run_folders(path: Path) -> list[Path]:
    """The run folders a path names: itself (a run folder or records.jsonl), or, for a folder
    without records of its own, every run folder directly inside it (one per model, as
    side-by-side training leaves them)."""
    path = Path(path)
    if path.is_dir() and not records_path(path).exists():
        inside = sorted(sub for sub in path.iterdir()
                        if sub.is_dir() and records_path(sub).is_file())
        return inside or [path]
    return [path]


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


def _step_cap(rec: dict) -> str | None:
    protocol = rec.get("protocol")
    if protocol:
        cap = protocol.get("planned_steps")
    else:  # a record written before records named their protocol: what its config planned
        train = (rec.get("config") or {}).get("train") or {}
        trained = rec.get("status") == "ok" and not train.get("epochs")
        cap = train.get("steps") if trained else None
    return None if cap is None else f"{cap:,}-step cap"


def _batch_per_step(rec: dict) -> str | None:
    """Sequences per step as the trainer formed them, so that a protocol that names them and a
    budget whose tokens per step come to the same number over the context are one batch; in
    tokens where the record lacks its context."""
    train = (rec.get("config") or {}).get("train") or {}
    sequences, tokens = train.get("batch_sequences") or 0, train.get("batch_tokens") or 0
    context = (rec.get("arch") or {}).get("max_seq_len")
    if sequences or (tokens and context):
        return f"{sequences_per_step(sequences, tokens, context or 1):,} sequences per step"
    if tokens:
        return f"{tokens:,} tokens per step"
    return None


def _requested_arch(rec: dict) -> dict:
    """The backbone the run asked for (budget and --set), alike for every model of a run;
    rec["arch"] is what each model was sized to (its width, or its own head count)."""
    return (rec.get("config") or {}).get("arch") or {}


def _depth(rec: dict) -> str | None:
    layers = _requested_arch(rec).get("n_layers")
    return None if layers is None else f"{layers} layers"


def _heads(rec: dict) -> str | None:
    heads = _requested_arch(rec).get("n_heads")
    return None if heads is None else f"{heads} head{'s' if heads != 1 else ''}"


def _parameter_target(rec: dict) -> str | None:
    target = ((rec.get("config") or {}).get("params") or {}).get("non_embedding")
    return None if target is None else f"{target:,} non-embedding parameters"


def _training_targets(rec: dict) -> str | None:
    """Which bytes the training loss counted, where the task lets a run choose (multi-document
    QA: the answer's alone or the whole sequence)."""
    targets = (rec.get("data") or {}).get("train_targets")
    return None if targets is None else f"loss on the {targets}"


# What makes two records of one (task, subtask, budget) different protocols, each read from the
# record as the words its budget label gets where the records differ in it: the training
# protocol (its cap, batch and loss targets), and the backbone a --set may change (its depth,
# heads and parameter target).
PROTOCOL_TERMS = (_step_cap, _batch_per_step, _training_targets, _depth, _heads,
                  _parameter_target)


def budget_of_label(label: str) -> str:
    """The budget's name in a budget label that protocols_apart may have extended:
    "cpu (2 heads)" -> "cpu"."""
    return label.split(" (", 1)[0]


def protocols_apart(records: list[dict]) -> list[dict]:
    """Records of one (task, subtask, budget) trained under different step caps, batches or
    backbones (PROTOCOL_TERMS) are different cells: wherever they differ, each record's budget
    label names its own ("cpu (1,000-step cap)", "cpu (64 sequences per step)", "cpu (2
    heads)"), so that a learning-rate grid is chosen, and seeds are pooled, within one
    protocol. A record that lacks a term (e.g. one that failed before training) keeps its
    label."""
    def key(rec: dict) -> tuple[str, str, str]:
        return rec["task"], rec["subtask"], rec["budget"]

    differing: dict[tuple[str, str, str], list] = {}
    for term in PROTOCOL_TERMS:
        seen: dict[tuple[str, str, str], set] = {}
        for rec in records:
            seen.setdefault(key(rec), set()).update({term(rec)} - {None})
        for group, values in seen.items():
            if len(values) > 1:
                differing.setdefault(group, []).append(term)

    def labelled(rec: dict) -> dict:
        words = [w for w in (term(rec) for term in differing.get(key(rec), ())) if w is not None]
        return {**rec, "budget": f"{rec['budget']} ({', '.join(words)})"} if words else rec

    return [labelled(rec) for rec in records]


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
    "validate_record", "new_record", "append_record", "read_records", "records_path", "cell_key",
    "run_folders",
    "repair_torn_tail", "resume_records",
    "canonical_json", "config_hash", "model_variant", "model_label", "as_compared",
    "protocols_apart", "budget_of_label",
]
