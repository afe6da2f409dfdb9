"""Result records: schema validation, atomic appends from several processes, tolerant reading,
config hashing, and the environment block."""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from bimix_bench.env import environment_info
from bimix_bench.results.records import (
    RECORDS_FILE,
    SCHEMA_VERSION,
    RecordError,
    append_record,
    cell_key,
    config_hash,
    read_records,
    repair_torn_tail,
    resume_records,
    validate_record,
)
from bimix_bench.errors import UsageError

_CONFIG = {"lr": 3e-4, "steps": 20, "model": {"d_model": 64, "n_layers": 2}}


def make_record(
    task: str = "lra",
    subtask: str = "listops",
    model: str = "transformer",
    seed: int = 0,
    budget: str = "tiny",
    status: str = "ok",
    test: dict[str, float] | None = None,
    speeds: tuple[float | None, float | None, float | None] = (1.0e4, 3.0e4, None),
    **overrides: Any,
) -> dict:
    """A complete, valid version-1 record; keyword overrides replace top-level fields."""

    def speed(value: float | None) -> dict | None:
        return None if value is None else {"value": value, "method": "median of 5, cpu clock",
                                           "backend": "torch-reference"}

    rec = {
        "schema_version": SCHEMA_VERSION,
        "run_id": "20250101-000000-abcd",
        "created_at": "2025-01-01T00:00:00+00:00",
        "task": task, "subtask": subtask, "model": model, "seed": seed, "budget": budget,
        "status": status, "reason": None if status == "ok" else f"{status} for a test",
        "params": {"total": 120_000, "non_embedding": 102_000, "target_non_embedding": 100_000,
                   "relative_error": 0.02},
        "arch": {"d_model": 64, "n_layers": 2, "n_heads": 4, "ffn_hidden": 172,
                 "max_seq_len": 512, "head": "cls", "n_classes": 10},
        "tokens_trained": 40_960, "steps": 20, "best_step": 20,
        "metrics": {"val": {"accuracy": 0.4, "loss": 1.7},
                    "test": test if test is not None else {"accuracy": 0.38, "loss": 1.8}},
        "throughput": {"train_tokens_per_s": speed(speeds[0]),
                       "inference_tokens_per_s": speed(speeds[1]),
                       "decode_tokens_per_s": speed(speeds[2])},
        "peak_memory_bytes": 123_456_789, "wall_time_s": 3.5,
        "backends": {"mixer": "torch-reference", "mixer_reason": "cpu"},
        "data": {"source": "generated", "n_train": 256},
        "config": _CONFIG, "config_hash": config_hash(_CONFIG),
        "environment": {"python": "3.11", "packages": {"torch": "2.4"}},
        "extras": {"note": "é ünïcode"},
    }
    rec.update(overrides)
    return rec


# ---------------------------------------------------------------------------------------------
# Schema


def test_valid_record_passes():
    validate_record(make_record())


def test_record_with_real_environment_passes():
    validate_record(make_record(environment=environment_info()))


@pytest.mark.parametrize("status", ["skipped", "failed"])
def test_skipped_or_failed_may_leave_sizes_metrics_and_speeds_empty(status):
    validate_record(make_record(status=status, params=None, arch=None, metrics=None,
                                throughput=None, best_step=None, peak_memory_bytes=None))
    validate_record(make_record(status=status, metrics={}, tokens_trained=0, steps=0))


def test_oom_may_have_no_metrics_but_needs_sizes():
    validate_record(make_record(status="oom", metrics={}))
    with pytest.raises(RecordError, match="field params:"):
        validate_record(make_record(status="oom", params=None))


def _set(path: str, value: Any):
    """A mutation that sets a dotted path (missing parents are an error of the test)."""

    def apply(rec: dict) -> None:
        *parents, last = path.split(".")
        target = rec
        for p in parents:
            target = target[p]
        target[last] = value

    return apply


def _delete(path: str):
    def apply(rec: dict) -> None:
        *parents, last = path.split(".")
        target = rec
        for p in parents:
            target = target[p]
        del target[last]

    return apply


DEFECTS = {
    # name: (mutation, field named in the message)
    "missing top-level": (_delete("wall_time_s"), "wall_time_s"),
    "unknown top-level": (_set("wal_time_s", 1.0), "wal_time_s"),
    "wrong schema version": (_set("schema_version", 2), "schema_version"),
    "schema version as string": (_set("schema_version", "1"), "schema_version"),
    "bad timestamp": (_set("created_at", "yesterday"), "created_at"),
    "seed as string": (_set("seed", "0"), "seed"),
    "seed as bool": (_set("seed", True), "seed"),
    "negative seed": (_set("seed", -1), "seed"),
    "empty model": (_set("model", ""), "model"),
    "unknown status": (_set("status", "crashed"), "status"),
    "failed without reason": (_set("status", "failed"), "reason"),
    "reason not a string": (_set("reason", 3), "reason"),
    "params null while ok": (_set("params", None), "params"),
    "params missing key": (_delete("params.total"), "params.total"),
    "params float count": (_set("params.non_embedding", 102000.0), "params.non_embedding"),
    "relative error wrong": (_set("params.relative_error", 0.5), "params.relative_error"),
    "zero target": (_set("params.target_non_embedding", 0), "params.target_non_embedding"),
    "arch null while ok": (_set("arch", None), "arch"),
    "arch float layers": (_set("arch.n_layers", 2.0), "arch.n_layers"),
    "arch zero width": (_set("arch.d_model", 0), "arch.d_model"),
    "arch unknown key": (_set("arch.n_kv_heads", 2), "arch.n_kv_heads"),
    "head not a string": (_set("arch.head", 1), "arch.head"),
    "tokens negative": (_set("tokens_trained", -5), "tokens_trained"),
    "best step float": (_set("best_step", 1.5), "best_step"),
    "metrics missing test when ok": (_delete("metrics.test"), "metrics.test"),
    "metrics unknown split": (_set("metrics.train", {}), "metrics.train"),
    "metric value string": (_set("metrics.val.accuracy", "0.4"), "metrics.val.accuracy"),
    "metric value nan": (_set("metrics.test.loss", float("nan")), "metrics.test.loss"),
    "metric value inf": (_set("metrics.test.loss", float("inf")), "metrics.test.loss"),
    "throughput null while ok": (_set("throughput", None), "throughput"),
    "throughput missing kind": (_delete("throughput.decode_tokens_per_s"),
                                "throughput.decode_tokens_per_s"),
    "throughput missing method": (_delete("throughput.train_tokens_per_s.method"),
                                  "throughput.train_tokens_per_s.method"),
    "throughput zero value": (_set("throughput.train_tokens_per_s.value", 0.0),
                              "throughput.train_tokens_per_s.value"),
    "throughput bare number": (_set("throughput.inference_tokens_per_s", 5.0),
                               "throughput.inference_tokens_per_s"),
    "peak memory negative": (_set("peak_memory_bytes", -1), "peak_memory_bytes"),
    "wall time string": (_set("wall_time_s", "3s"), "wall_time_s"),
    "timings not an object": (_set("timings_s", 3.0), "timings_s"),
    "negative phase timing": (_set("timings_s", {"test": -1.0}), "timings_s.test"),
    "backend not a string": (_set("backends.mixer", 1), "backends.mixer"),
    "data not an object": (_set("data", ["generated"]), "data"),
    "config not an object": (_set("config", "lr=1"), "config"),
    "config hash malformed": (_set("config_hash", "XYZ"), "config_hash"),
    "environment missing": (_delete("environment"), "environment"),
    "extras not an object": (_set("extras", None), "extras"),
}


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_each_defect_is_rejected_naming_the_field(name):
    mutate, field = DEFECTS[name]
    rec = copy.deepcopy(make_record())
    mutate(rec)
    with pytest.raises(RecordError) as info:
        validate_record(rec)
    assert f"field {field}:" in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)


def test_all_defects_are_reported_together():
    rec = make_record(seed="0", status="crashed")
    with pytest.raises(RecordError) as info:
        validate_record(rec)
    fields = {e.split(":")[0] for e in info.value.errors}
    assert fields == {"field seed", "field status"}


def test_non_object_is_rejected():
    with pytest.raises(RecordError, match="expected an object"):
        validate_record([1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Append and read


def test_append_then_read_round_trips(tmp_path: Path):
    recs = [make_record(seed=s) for s in range(3)]
    for rec in recs:
        append_record(tmp_path / "run", rec)
    path = tmp_path / "run" / RECORDS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert lines[0] == json.dumps(recs[0], sort_keys=True, ensure_ascii=False)
    assert read_records(tmp_path / "run") == recs  # a run folder
    assert read_records(path) == recs  # or the file itself


def test_append_refuses_invalid_record_and_writes_nothing(tmp_path: Path):
    with pytest.raises(RecordError, match="field seed"):
        append_record(tmp_path, make_record(seed="x"))
    assert not (tmp_path / RECORDS_FILE).exists()


def test_read_missing_file_raises(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "nothing-here")


# Characters per line: far above PIPE_BUF and a page, so a line written in pieces would tear.
_PAYLOAD = 100_000


def _append_many(run_dir: str, worker: int, count: int, start: Any) -> None:
    start.wait(30)  # all workers begin together so their appends really overlap
    for i in range(count):
        filler = chr(ord("a") + worker) * (_PAYLOAD + 37 * i)
        append_record(Path(run_dir), make_record(seed=worker * 1000 + i,
                                                 extras={"worker": worker, "i": i,
                                                         "filler": filler}))


def test_concurrent_appends_never_interleave(tmp_path: Path):
    workers, per_worker = 4, 50
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, per_worker, start))
             for w in range(workers)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    raw = (tmp_path / RECORDS_FILE).read_text(encoding="utf-8")
    assert raw.endswith("\n")
    lines = raw.splitlines()
    assert len(lines) == workers * per_worker
    seen = set()
    for line in lines:
        rec = json.loads(line)  # every line is one whole JSON object
        validate_record(rec)
        w, i = rec["extras"]["worker"], rec["extras"]["i"]
        assert rec["extras"]["filler"] == chr(ord("a") + w) * (_PAYLOAD + 37 * i)
        seen.add((w, i))
    assert seen == {(w, i) for w in range(workers) for i in range(per_worker)}


def test_torn_and_invalid_lines_are_skipped_with_warnings(tmp_path: Path):
    good = [make_record(seed=s) for s in range(3)]
    for rec in good[:2]:
        append_record(tmp_path, rec)
    path = tmp_path / RECORDS_FILE
    with open(path, "a", encoding="utf-8") as f:
        f.write("this is not json\n")  # line 3
        f.write(json.dumps(make_record(seed="bad")) + "\n")  # line 4: JSON but not a record
    append_record(tmp_path, good[2])  # line 5
    full = json.dumps(make_record(seed=9))
    with open(path, "a", encoding="utf-8") as f:
        f.write(full[: len(full) // 2])  # line 6: a crash mid-write

    with pytest.warns(UserWarning) as caught:
        assert read_records(tmp_path) == good
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3
    assert all(str(path) in m for m in messages)
    assert "line 3: not valid JSON" in messages[0]
    assert "line 4: invalid record" in messages[1] and "field seed" in messages[1]
    assert "line 6: incomplete last line" in messages[2]

    # The next append cuts the torn line off first, so it is gone rather than glued to the
    # new record or left in the middle of the file.
    append_record(tmp_path, make_record(seed=10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = read_records(tmp_path)
    assert [r["seed"] for r in recs] == [0, 1, 2, 10]
    assert len(caught) == 2 and "line 6" not in " ".join(str(w.message) for w in caught)
    assert len(path.read_text().splitlines()) == 6 and path.read_text().endswith("\n")


def test_resume_refuses_a_garbage_line_before_the_last(tmp_path: Path):
    for seed in range(2):
        append_record(tmp_path, make_record(seed=seed))
    path = tmp_path / RECORDS_FILE
    lines = path.read_text().splitlines(keepends=True)
    for garbage in ("this is not json\n", json.dumps(make_record(seed="bad")) + "\n"):
        path.write_text(lines[0] + garbage + lines[1])
        before = path.read_bytes()
        with pytest.raises(UsageError) as err:
            resume_records(tmp_path)
        message = str(err.value)
        assert str(path) in message and "line 2 " in message and "\n" not in message
        assert path.read_bytes() == before  # left as it is


def test_resume_cuts_a_torn_last_line_and_keeps_every_complete_one(tmp_path: Path):
    good = [make_record(seed=s) for s in range(3)]
    for rec in good:
        append_record(tmp_path, rec)
    path = tmp_path / RECORDS_FILE
    complete = path.read_bytes()
    full = json.dumps(make_record(seed=9)).encode()
    path.write_bytes(complete + full[: len(full) // 2] + "é".encode()[:1])  # cut mid-character
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on the way
        assert resume_records(tmp_path) == good
        assert path.read_bytes() == complete
        assert read_records(tmp_path) == good  # later readers no longer warn
    # A whole record that lacks only its newline is kept and gets the newline.
    path.write_bytes(complete + full)
    assert [r["seed"] for r in resume_records(tmp_path)] == [0, 1, 2, 9]
    assert path.read_bytes() == complete + full + b"\n"
    assert repair_torn_tail(tmp_path) is False  # nothing left to repair
    assert resume_records(tmp_path / "elsewhere") == []  # a folder without records


# ---------------------------------------------------------------------------------------------
# Keys and hashes


def test_cell_key():
    assert cell_key(make_record(subtask="text", model="bimix", seed=3)) == (
        "lra", "text", "bimix", 3)


def test_config_hash_is_stable_under_key_order():
    a = {"lr": 1e-3, "model": {"d_model": 64, "n_layers": 2}, "tags": ["x", "y"]}
    b = {"tags": ["x", "y"], "model": {"n_layers": 2, "d_model": 64}, "lr": 1e-3}
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0
    assert config_hash(a) != config_hash({**a, "lr": 2e-3})
    assert config_hash(a) != config_hash({**a, "tags": ["y", "x"]})  # list order matters
    # Pinned definition: SHA-256 of compact sorted JSON.
    assert config_hash({"b": 1, "a": [1, 2]}) == hashlib.sha256(
        b'{"a":[1,2],"b":1}').hexdigest()[:16]


def test_config_hash_rejects_nan():
    with pytest.raises(ValueError):
        config_hash({"lr": float("nan")})


# ---------------------------------------------------------------------------------------------
# Environment


def test_environment_info_keys_and_speed():
    environment_info()  # first call pays for the torch import
    start = time.perf_counter()
    info = environment_info()
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    for key in ("git_sha", "git_dirty", "python", "platform", "packages", "torch_cuda", "cudnn",
                "devices", "device_type", "torch_threads"):
        assert key in info, key
    for pkg in ("torch", "triton", "numpy", "fla-core", "mamba-ssm", "datasets", "pandas",
                "typer"):
        assert pkg in info["packages"], pkg
    import torch

    assert info["packages"]["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["devices"] and all(isinstance(d, str) for d in info["devices"])
    assert info["git_sha"] is None or len(info["git_sha"]) == 40
    assert info["git_dirty"] in (None, True, False)
    text = json.dumps(info)  # must be JSON-serialisable
    host = socket.gethostname()
    if len(host) >= 6:
        assert host not in text
    assert "hostname" not in text


def test_git_dirty_counts_code_changes_but_not_result_folders(tmp_path):
    import shutil
    import subprocess

    from bimix_bench.env import _git_state

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": os.environ["PATH"]}

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, env=env,
                       capture_output=True)

    (tmp_path / "results" / "run").mkdir(parents=True)
    (tmp_path / "results" / "run" / "records.jsonl").write_text("{}\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    sha, dirty = _git_state(tmp_path)
    assert len(sha) == 40 and dirty is False
    # A resumed run appends to a committed result folder: still the committed code.
    (tmp_path / "results" / "run" / "records.jsonl").write_text("{}\n{}\n")
    assert _git_state(tmp_path) == (sha, False)
    (tmp_path / "model.py").write_text("x = 2\n")
    assert _git_state(tmp_path) == (sha, True)


def test_the_record_is_defined_once_and_built_from_that_definition():
    """The runner's empty record comes from the Record dataclass and validates against it; a
    field added to the dataclass is both built and checked (no second schema to forget)."""
    import dataclasses

    from bimix_bench.results.record_schema import Record, new_record

    rec = new_record(run_id="r", created_at="2025-01-01T00:00:00+00:00", task="lra",
                     subtask="listops", model="transformer", seed=0, budget="tiny",
                     config=_CONFIG, config_hash=config_hash(_CONFIG), environment={},
                     reason="not run yet")
    validate_record(rec)
    required = {f.name for f in dataclasses.fields(Record) if not f.metadata.get("optional")}
    assert required <= set(rec)
    assert set(make_record()) <= {f.name for f in dataclasses.fields(Record)}


def test_a_trained_cell_waiting_for_its_speeds_is_a_valid_ok_record():
    validate_record(make_record(throughput={"train_tokens_per_s": None, "inference_tokens_per_s": None,
                                            "decode_tokens_per_s": None}))
    with pytest.raises(RecordError, match="field status"):
        validate_record(make_record(status="pending"))
