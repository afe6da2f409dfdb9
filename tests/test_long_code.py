"""Long-code modelling: the stdlib file list and its split by path hash, streams and SEP
boundaries, structural-boundary regions on hand-made code, the code metrics against an
independent computation, length extrapolation for every registered model, the `datasets`
loader on fixture files in the codeparrot layout, and tiny CLI runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.config import deep_merge, load_budget
from bimix_bench.errors import SkipCell
from bimix_bench.models.tokenizer import SEP
from bimix_bench.registry import MODELS, TASKS
from bimix_bench.results.records import read_records, validate_record
from bimix_bench.task import StreamSplit, TaskData
from bimix_bench.tasks.long_code.boundaries import boundary_masks, boundary_offsets
from bimix_bench.tasks.long_code.metrics import CodeMetricSettings, code_metrics, position_bucket_edges
from bimix_bench.tasks.long_code.sources import (
    CodeFile,
    dataset_files,
    dataset_rows,
    join_files,
    python_description,
    split_files,
    split_of,
    stdlib_files,
    stdlib_root,
)
from tests.test_qa_metrics import tiny_language_model

FIXTURES = Path(__file__).parent / "fixtures"
RUN_CFG = deep_merge(load_budget("tiny"), {"train": {"precision": "fp32"},
                                            "eval": {"test_examples": 6, "val_examples": 6, "batch_size": 4}})
HF_CFG = {"text_column": "content", "path_columns": ["repo_name", "path"], "max_files": 0,
          "from_hub": False, "hub_id": "codeparrot/codeparrot-clean-valid", "hub_config": "",
          "hub_split": "train"}


# --- sources and splits -------------------------------------------------------------------
def test_split_is_a_function_of_the_key_only():
    keys = [f"pkg/mod{i}.py" for i in range(2000)]
    splits = [split_of(k, 0.1, 0.2) for k in keys]
    assert splits == [split_of(k, 0.1, 0.2) for k in reversed(keys)][::-1]
    shares = {s: splits.count(s) / len(keys) for s in ("train", "val", "test")}
    assert abs(shares["test"] - 0.2) < 0.04 and abs(shares["val"] - 0.1) < 0.03
    # Growing val takes files from train only: test membership never moves.
    assert all(split_of(k, 0.3, 0.2) == "test" for k, s in zip(keys, splits) if s == "test")
    with pytest.raises(ValueError):
        split_of("x", 0.6, 0.5)


def test_stdlib_listing_is_sorted_and_excludes_tests_and_site_packages():
    files, _ = stdlib_files(stdlib_root())
    keys = [f.key for f in files]
    assert keys == sorted(keys) and len(keys) > 100
    assert "os.py" in keys and "json/decoder.py" in keys
    for k in keys:
        parts = k.split("/")
        assert not {"test", "tests", "idle_test", "site-packages"} & set(parts[:-1]), k
        assert k.endswith(".py")


def test_join_files_puts_one_sep_after_every_file():
    files = [CodeFile("a.py", b"x = 1\n"), CodeFile("b.py", b""), CodeFile("c.py", b"def f():\n    pass\n")]
    stream, starts = join_files(files)
    assert starts.tolist() == [0, 7, 8]
    assert (stream == SEP).nonzero().flatten().tolist() == [6, 7, 26]
    assert bytes(stream[8:26].tolist()) == files[2].data


def test_boundary_offsets_on_hand_made_code():
    code = (b"import os\n"          # 0
            b"\n"                    # 10: blank
            b"@cache\n"              # 11: decorator
            b"def f(x):\n"           # 18: def
            b"    return x\n"        # 28
            b"   \t\n"               # 41: blank (whitespace only)
            b"class A:\n"            # 46: class
            b"    async def g(self): pass\n"  # 55: async def
            b"    undefined = 1\n"   # 83: "def" inside a word is not a boundary
            b"\n")                   # 101: blank, at the very end
    out = boundary_offsets(code)
    assert out["blank_line"].tolist() == [11, 46]  # the line after each blank line
    assert out["def_class"].tolist() == [11, 18, 46, 55]
    assert out["file_start"].tolist() == [0]


def test_boundary_masks_clip_regions_at_the_end_of_their_file():
    files = [CodeFile("a.py", b"x\n\ny = 2\n"), CodeFile("b.py", b"def g(): pass\n")]
    stream, starts = join_files(files)
    masks = boundary_masks(files, starts, len(stream), k=4)
    blank = np.flatnonzero(masks["blank_line"]).tolist()
    assert blank == [3, 4, 5, 6]  # "y = " after the blank line
    # file_start regions: file a from 0, file b from its start 10; never the SEP at 9.
    assert np.flatnonzero(masks["file_start"]).tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
    masks = boundary_masks(files, starts, len(stream), k=100)
    assert not masks["file_start"][9] and masks["file_start"][:9].all()


def test_position_bucket_edges():
    assert position_bucket_edges(4096, 5) == [0, 256, 512, 1024, 2048, 4096]
    assert position_bucket_edges(256, 3) == [0, 64, 128, 256]
    assert position_bucket_edges(8, 6) == [0, 1, 2, 4, 8]  # duplicates of tiny contexts dropped
    assert position_bucket_edges(100, 1) == [0, 100]


# --- metrics against an independent computation ----------------------------------------------
class FixedBelief(torch.nn.Module):
    """The same next-byte distribution at every position: its loss on a byte is known exactly,
    so every bucket's bits per byte can be computed without the model."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.logits = torch.randn(261, generator=g, dtype=torch.float64) * 2

    def forward(self, tokens, lengths=None):
        return self.logits.expand(*tokens.shape, 261).clone()  # (B, T, V)


def _code_data(files: list[CodeFile], context: int) -> tuple[TaskData, dict[str, np.ndarray]]:
    stream, starts = join_files(files)
    split = StreamSplit(stream)
    data = TaskData("long_code", "t", "lm", context, split, split, split)
    return data, boundary_masks(files, starts, len(stream), k=3)


def test_code_metrics_match_an_independent_computation():
    files, _ = stdlib_files(stdlib_root())
    files = [f for f in files if f.key in ("bisect.py", "colorsys.py", "keyword.py", "this.py")]
    context = 64
    data, masks = _code_data(files, context)
    settings = CodeMetricSettings(position_buckets=3, extrapolation_factors=(2, 3), extrapolation_windows=2)
    out = code_metrics(FixedBelief(), data, "test", torch.device("cpu"), RUN_CFG, masks, settings)

    model = FixedBelief()
    nll_of = -F.log_softmax(model.logits, -1).numpy() / math.log(2)  # bits per next id
    stream = data.test.stream.numpy()
    n_windows = RUN_CFG["eval"]["test_examples"]
    targets = np.concatenate([np.arange(w * context + 1, (w + 1) * context + 1) for w in range(n_windows)])
    positions = np.tile(np.arange(context), n_windows)
    bits = nll_of[stream[targets]]

    assert math.isclose(out["bpb_pos_0-16"], bits[positions < 16].mean(), rel_tol=1e-6)
    assert math.isclose(out["bpb_pos_32-64"], bits[positions >= 32].mean(), rel_tol=1e-6)
    for kind in ("blank_line", "def_class", "file_start"):
        inside = masks[kind][targets]
        assert out[f"n_after_{kind}"] == inside.sum() > 0
        assert math.isclose(out[f"bpb_after_{kind}"], bits[inside].mean(), rel_tol=1e-6)
    union = masks["blank_line"] | masks["def_class"] | masks["file_start"]
    assert math.isclose(out["bpb_boundary"], bits[union[targets]].mean(), rel_tol=1e-6)
    assert math.isclose(out["bpb_elsewhere"], bits[~union[targets]].mean(), rel_tol=1e-6)
    assert out["n_boundary"] + out["n_elsewhere"] == n_windows * context
    # A position-blind model gains nothing from longer windows: same bytes, same bits.
    for f in (2, 3):
        n_long = min(2, n_windows // f)
        long_bits = bits[: n_long * f * context]
        assert math.isclose(out[f"bpb_len{f}x"], long_bits.mean(), rel_tol=1e-6)
        assert abs(out[f"bpb_len{f}x_delta"]) < 1e-6
        beyond = np.tile(np.arange(f * context) >= context, n_long)
        assert math.isclose(out[f"bpb_len{f}x_beyond"], long_bits[beyond].mean(), rel_tol=1e-6)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_gives_finite_code_metrics_at_longer_windows(name):
    files = [CodeFile(f"m{i}.py", (f"def f{i}(x):\n    return x + {i}\n\n" * 6).encode()) for i in range(4)]
    data, masks = _code_data(files, context=16)
    settings = CodeMetricSettings(position_buckets=2, extrapolation_factors=(2, 4), extrapolation_windows=2)
    model = tiny_language_model(name, max_seq_len=16)
    out = code_metrics(model, data, "test", torch.device("cpu"), RUN_CFG, masks, settings)
    for key in ("bpb_pos_0-8", "bpb_pos_8-16", "bpb_boundary", "bpb_len2x", "bpb_len4x_beyond"):
        assert math.isfinite(out[key]) and out[key] > 0, key


# --- real code data sets through `datasets` ----------------------------------------------------
@pytest.mark.parametrize("folder", ["long_code/parquet", "long_code/jsonl"])
def test_dataset_loader_reads_codeparrot_layout(folder):
    rows, origin = dataset_rows({**HF_CFG, "data_files": folder}, FIXTURES)
    files, skipped = dataset_files(rows, HF_CFG)
    assert "local files" in origin and skipped == 0
    assert len(files) == 12 and [f.key for f in files] == sorted(f.key for f in files)
    assert "acme/geometry/geometry/vector.py" in {f.key for f in files}
    splits = split_files(files, 0.15, 0.1)
    assert {f.key.split("/")[-1] for f in splits["test"]} == {"wrap.py", "cli.py"}
    limited, _ = dataset_files(dataset_rows({**HF_CFG, "data_files": folder}, FIXTURES)[0],
                               {**HF_CFG, "max_files": 3})
    assert len(limited) == 3


def test_dataset_loader_skips_with_instructions_when_absent(tmp_path):
    with pytest.raises(SkipCell, match="--data-dir"):
        dataset_rows({**HF_CFG, "data_files": "long_code"}, tmp_path)
    with pytest.raises(SkipCell, match="from_hub"):
        dataset_rows({**HF_CFG, "data_files": "long_code"}, None)


# --- end to end ------------------------------------------------------------------------------
FAST = ["--set", "train.steps=2", "--set", "train.eval_every=2", "--set", "throughput.repeats=1",
        "--set", "throughput.decode_tokens=2", "--set", "eval.test_examples=8", "--set", "eval.val_examples=4",
        "--no-checkpoints"]


def test_tiny_stdlib_run_through_the_cli(tmp_path):
    result = CliRunner().invoke(app, ["run", "--task", "long_code", "--budget", "tiny", "--models", "transformer",
                                      "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(tmp_path)
    validate_record(rec)
    assert rec["status"] == "ok", rec["reason"]
    test = rec["metrics"]["test"]
    for key in ("bits_per_byte", "bpb_pos_0-64", "bpb_pos_128-256", "bpb_after_def_class",
                "bpb_boundary", "bpb_elsewhere", "bpb_len2x", "bpb_len4x_beyond", "bpb_len4x_delta"):
        assert math.isfinite(test[key]), key
    assert test["n_boundary"] + test["n_elsewhere"] == test["n_bytes"] == 8 * 256
    data = rec["data"]
    assert data["python"] == python_description()
    assert data["files"]["test"] > 0 and data["bytes"]["train"] > data["bytes"]["test"] > 0
    assert "Python version" in data["note"]


def test_tiny_hf_run_on_fixture_files(tmp_path):
    result = CliRunner().invoke(app, [
        "run", "--task", "long_code", "--subtasks", "hf", "--budget", "tiny", "--models", "transformer",
        "--out", str(tmp_path), "--data-dir", str(FIXTURES), "--set", "task.hf.data_files=long_code/jsonl",
        "--set", "task.hf.context=64", "--set", "task.hf.val_fraction=0.15", "--set", "task.hf.test_fraction=0.1",
        "--set", "train.batch_tokens=256", *FAST])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(tmp_path)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["data"]["files"] == {"train": 8, "val": 2, "test": 2}
    assert math.isfinite(rec["metrics"]["test"]["bpb_len2x"])


def test_hf_subtask_is_skipped_without_data(tmp_path):
    result = CliRunner().invoke(app, ["run", "--task", "long_code", "--subtasks", "hf", "--budget", "tiny",
                                      "--models", "transformer", "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(tmp_path)
    assert rec["status"] == "skipped" and "--data-dir" in rec["reason"]


def test_family_is_registered_with_both_subtasks():
    task = TASKS.get("long_code").obj
    assert [s.name for s in task.subtasks()] == ["python_stdlib", "hf"]
    assert task.defaults("small")["python_stdlib"]["context"] >= 4096
    assert task.defaults("large")["python_stdlib"]["context"] > task.defaults("medium")["python_stdlib"]["context"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_code_metrics_on_cuda_match_cpu():
    files = [CodeFile(f"m{i}.py", (f"class C{i}:\n    x = {i}\n\n" * 8).encode()) for i in range(4)]
    data, masks = _code_data(files, context=32)
    settings = CodeMetricSettings(position_buckets=3, extrapolation_factors=(2,), extrapolation_windows=2)
    model = tiny_language_model("transformer", max_seq_len=32)
    cpu = code_metrics(model, data, "test", torch.device("cpu"), RUN_CFG, masks, settings)
    gpu = code_metrics(model.cuda(), data, "test", torch.device("cuda"), RUN_CFG, masks, settings)
    assert cpu.keys() == gpu.keys()
    for key in cpu:
        assert math.isclose(cpu[key], gpu[key], rel_tol=1e-3), key
