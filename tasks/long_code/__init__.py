"""Long-code modelling as a task family: `--task long_code`.

Byte-level language modelling of whole source files joined by SEP, split by file (sources.py).
Subtasks:
  python_stdlib   the Python standard library of the interpreter that runs the benchmark
                  (offline; the files differ between Python versions, so records name it)
  hf              a code data set with one file per row (the-stack / codeparrot style), from
                  local parquet / jsonl files under --data-dir or streamed from the hub
The runner reports bits per byte over the test windows; metrics.py adds bits per byte by
position in the window, near structural boundaries, and on windows 2x / 4x the context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bimix_bench.errors import SkipCell
from bimix_bench.task import Chance, StreamSplit, SubtaskInfo, Task, TaskData, register_task
from bimix_bench.tasks.long_code.boundaries import boundary_masks
from bimix_bench.tasks.long_code.metrics import CodeMetricSettings, code_metrics
from bimix_bench.tasks.long_code.sources import (
    SPLITS,
    CodeFile,
    dataset_files,
    dataset_rows,
    join_files,
    python_description,
    split_files,
    stdlib_files,
    stdlib_root,
)


def build_task_data(subtask: str, files: list[CodeFile], cfg: dict[str, Any], sub_cfg: dict[str, Any],
                    meta: dict[str, Any]) -> TaskData:
    """Split `files`, join each split into a stream, and attach the code metrics."""
    context = int(sub_cfg["context"])
    by_split = split_files(files, float(sub_cfg["val_fraction"]), float(sub_cfg["test_fraction"]))
    streams = {s: join_files(by_split[s]) for s in SPLITS}
    meta = {
        **meta,
        "split_rule": "by file: sha256 of the file key (relative path) picks test, val or train",
        "val_fraction": float(sub_cfg["val_fraction"]), "test_fraction": float(sub_cfg["test_fraction"]),
        "files": {s: len(by_split[s]) for s in SPLITS},
        "bytes": {s: int(sum(len(f.data) for f in by_split[s])) for s in SPLITS},
        "stream_tokens": {s: int(len(streams[s][0])) for s in SPLITS},
    }
    for s in SPLITS:
        if len(streams[s][0]) <= context + 1:
            raise SkipCell(f"long_code/{subtask}: the {s} split holds {len(streams[s][0])} tokens, "
                           f"not more than one window of {context}; use more files or a shorter context")
    metric_cfg = cfg["metrics"]
    settings = CodeMetricSettings(
        position_buckets=int(metric_cfg["position_buckets"]),
        extrapolation_factors=tuple(int(f) for f in metric_cfg["extrapolation_factors"]),
        extrapolation_windows=int(metric_cfg["extrapolation_windows"]),
    )
    k = int(metric_cfg["boundary_bytes"])
    test_masks = boundary_masks(by_split["test"], streams["test"][1], len(streams["test"][0]), k)
    data = TaskData(
        task="long_code", subtask=subtask, objective="lm", context=context,
        train=StreamSplit(streams["train"][0]), val=StreamSplit(streams["val"][0]),
        test=StreamSplit(streams["test"][0]), meta=meta,
    )

    def extra_metrics(model, split: str, device, run_cfg: dict[str, Any]) -> dict[str, float]:
        if split != "test":
            raise ValueError(f"long_code extra metrics are computed on the test split, not {split!r}")
        return code_metrics(model, data, split, device, run_cfg, test_masks, settings)

    data.extra_metrics = extra_metrics
    return data


def load_python_stdlib(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    sub = cfg["python_stdlib"]
    excluded = [str(d) for d in sub["exclude_dirs"]]
    files, non_utf8 = stdlib_files(stdlib_root(), excluded)
    meta = {
        "source": f"Python standard library .py files of {python_description()}",
        "python": python_description(),
        "note": "the standard library differs between Python versions (files, sizes and content), "
                "so results are comparable only between runs on the same Python version",
        "excluded_dirs": excluded,
        "skipped_non_utf8_files": non_utf8,
        "seed_independent": True,
    }
    return build_task_data("python_stdlib", files, cfg, sub, meta)


def load_hf_code(cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    sub = cfg["hf"]
    rows, origin = dataset_rows(sub, data_dir)
    files, skipped = dataset_files(rows, sub)
    if not files:
        raise SkipCell(f"long_code/hf: {origin} holds no non-empty {sub['text_column']!r} rows")
    meta = {
        "source": origin,
        "text_column": sub["text_column"], "path_columns": list(sub["path_columns"]),
        "max_files": int(sub["max_files"]), "skipped_empty_rows": skipped,
        "seed_independent": True,
    }
    return build_task_data("hf", files, cfg, sub, meta)


@register_task
class LongCode(Task):
    name = "long_code"
    description = "Byte-level modelling of whole source files: bpb by position, at boundaries, at 2x/4x length"
    defaults_path = Path(__file__).parent / "defaults.yaml"

    loaders = {"python_stdlib": load_python_stdlib, "hf": load_hf_code}

    def subtasks(self) -> list[SubtaskInfo]:
        return [
            SubtaskInfo("python_stdlib", "the running Python's standard library sources (offline)"),
            SubtaskInfo("hf", "a code data set with a `content` column (local parquet/jsonl or hub)"),
        ]

    def chance(self, subtask: str, data_meta: dict[str, Any]) -> Chance | None:
        return Chance("bits_per_byte", 8.0, "uniform over the 256 byte values")

    def load(self, subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
        return self.loaders[subtask](cfg, seed, data_dir)
