"""Cross-cutting guards: every task family's offline splits are disjoint at the tiny budget, and
the CLI starts without importing torch or pandas."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bimix_bench.config import resolve_config
from bimix_bench.errors import SkipCell
from bimix_bench.registry import TASKS
from bimix_bench.task import ExampleSplit, StreamSplit

SPLITS = ("train", "val", "test")
PER_SPLIT = 64  # examples compared per split where examples are built on demand


def _tiny_task_config(family: str) -> dict:
    task = TASKS.get(family).obj
    return resolve_config("tiny", family, task.defaults("tiny"), {}, [])["task"]


def _examples(split, limit: int | None) -> set[bytes]:
    """The token ids of a split's examples (the first `limit` of them), as bytes."""
    n = len(split) if limit is None else min(limit, len(split))
    if isinstance(split, ExampleSplit):
        return {split.fetch(i)[0].numpy().tobytes() for i in range(n)}
    return {split.sequence(i).numpy().tobytes() for i in range(n)}


def _check_stream_splits(family: str, subtask: str, cfg: dict, data) -> None:
    """Split by file: no file key in two splits, the counts the record gives, distinct streams."""
    assert family == "long_code" and subtask == "python_stdlib", "a new stream task: add its check"
    from bimix_bench.tasks.long_code.sources import split_files, stdlib_files, stdlib_root

    sub = cfg[subtask]
    files, _ = stdlib_files(stdlib_root(), [str(d) for d in sub["exclude_dirs"]])
    by_split = split_files(files, float(sub["val_fraction"]), float(sub["test_fraction"]))
    keys = {s: {f.key for f in by_split[s]} for s in SPLITS}
    assert {s: len(keys[s]) for s in SPLITS} == data.meta["files"]
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not keys[a] & keys[b], f"{family}/{subtask}: files in both {a} and {b}"
        sa, sb = getattr(data, a).stream, getattr(data, b).stream
        assert len(sa) != len(sb) or not bool((sa == sb).all())


@pytest.mark.parametrize("family", sorted(TASKS.names()))
def test_offline_splits_are_disjoint_at_the_tiny_budget(family):
    task = TASKS.get(family).obj
    cfg = _tiny_task_config(family)
    checked = []
    for info in task.subtasks():
        try:
            data = task.load(info.name, cfg, 0, None)
        except SkipCell:
            continue  # needs real data that this machine does not have
        if isinstance(data.train, StreamSplit):
            _check_stream_splits(family, info.name, cfg, data)
        else:
            limit = PER_SPLIT if isinstance(data.train, ExampleSplit) else None
            seen = {s: _examples(getattr(data, s), limit) for s in SPLITS}
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                shared = seen[a] & seen[b]
                assert not shared, f"{family}/{info.name}: {len(shared)} examples in both {a} and {b}"
            assert all(seen[s] for s in SPLITS), f"{family}/{info.name}: an empty split"
        checked.append(info.name)
    assert checked, f"{family}: no subtask runs offline"


def test_importing_the_cli_does_not_import_torch_or_pandas():
    code = ("import sys, bimix_bench.cli.app, bimix_bench.config, bimix_bench.registry; "
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # Nor does answering --help or listing budgets.
    for args in (["--help"], ["list", "budgets"]):
        probe = ("import runpy, sys; sys.argv = ['bimix-bench', *sys.argv[1:]]\n"
                 "try:\n    runpy.run_module('bimix_bench', run_name='__main__')\n"
                 "except SystemExit as e:\n    code = e.code\n"
                 "print('torch' in sys.modules, 'pandas' in sys.modules, code, file=sys.stderr)")
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        assert out.stderr.strip().splitlines()[-1] == "False False 0", out.stderr

