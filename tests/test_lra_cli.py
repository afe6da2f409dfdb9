"""`bimix-bench run --task lra` end to end at the tiny budget (shrunk further with --set): the
generated subtasks run, the real-data ones are recorded as skipped with a reason offline and
run when --data-dir holds them; and every registered model trains on Pathfinder batches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.registry import MODELS, TASKS
from bimix_bench.results.records import read_records, validate_record
from bimix_bench.task import sequence_loss
from bimix_bench.tasks.lra.loaders import LOADERS

FIXTURES = Path(__file__).parent / "fixtures" / "lra"
SHRINK = ["--set", "train.steps=2", "--set", "train.eval_every=2", "--set", "throughput.repeats=1",
          "--set", "throughput.warmup=0", "--set", "throughput.decode_tokens=2",
          "--set", "eval.val_examples=16", "--set", "eval.test_examples=16", "--no-checkpoints"]
SMALL_GENERATED = ["--set", "train.batch_tokens=1024",
                   "--set", "task.listops.n_train=32", "--set", "task.listops.n_val=16",
                   "--set", "task.listops.n_test=16", "--set", "task.pathfinder.n_train=32",
                   "--set", "task.pathfinder.n_val=16", "--set", "task.pathfinder.n_test=16",
                   # Path-X at Pathfinder's tiny 16x16 geometry: the pipeline, not the size.
                   "--set", "task.pathx.image_size=16", "--set", "task.pathx.paddle_gap=0",
                   "--set", "task.pathx.seed_distance=4.0", "--set", "task.pathx.distractor_paddles=6",
                   "--set", "task.pathx.n_train=32", "--set", "task.pathx.n_val=16",
                   "--set", "task.pathx.n_test=16"]


def run(out: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["run", "--task", "lra", "--budget", "tiny", "--out", str(out),
                                      *args, *SHRINK])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    out = tmp_path_factory.mktemp("lra")
    output = run(out, "--models", "transformer", *SMALL_GENERATED)
    return out, output


def test_default_subtasks_run_offline_or_skip_with_a_reason(offline):
    out, output = offline
    records = {r["subtask"]: r for r in read_records(out)}
    assert list(records) == ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
    for rec in records.values():
        validate_record(rec)
    for sub in ("listops", "pathfinder", "pathx"):
        rec = records[sub]
        assert rec["status"] == "ok", rec["reason"]
        assert 0.0 <= rec["metrics"]["test"]["accuracy"] <= 1.0 and rec["steps"] == 2
        assert rec["data"]["standard_lengths"] is False  # tiny shrinks every subtask
    assert records["pathfinder"]["data"]["image_size"] == 16
    assert records["pathx"]["data"]["image_size"] == 16
    assert records["pathfinder"]["config"]["task"]["pathfinder"]["difficulty"] == "easy"
    for sub, needle in (("text", "stanfordnlp/imdb"), ("retrieval", "lra_release.gz"),
                        ("image", "cifar-10-python.tar.gz")):
        assert records[sub]["status"] == "skipped" and needle in records[sub]["reason"]
        assert f"skipping lra/{sub}:" in output  # the CLI says which were skipped and why
    assert output.count("cifar-10-python.tar.gz") == 1  # the reason is printed once per subtask


def test_real_data_subtasks_run_from_the_data_dir(tmp_path):
    run(tmp_path, "--models", "transformer", "--subtasks", "text,retrieval,image",
        "--data-dir", str(FIXTURES / "release"), "--set", "train.batch_tokens=1024")
    records = {r["subtask"]: r for r in read_records(tmp_path)}
    for sub, context in (("text", 512), ("retrieval", 513), ("image", 1024)):
        assert records[sub]["status"] == "ok", records[sub]["reason"]
        assert records[sub]["data"]["context"] == context
    assert records["retrieval"]["data"]["bytes_per_document"] == 256
    json.dumps(records)  # records stay JSON


@pytest.fixture(scope="module")
def pathfinder_batch():
    section = dict(TASKS.get("lra").obj.defaults("tiny")["pathfinder"], n_train=4, n_val=2, n_test=2)
    data = LOADERS["pathfinder"](section, 0, None)
    return data.train.batch([0, 1, 2, 3], data.context)


@pytest.mark.parametrize("model", MODELS.names())
def test_every_registered_model_trains_on_pathfinder_batches(pathfinder_batch, model):
    """Each model's classifier reads a Pathfinder batch (pixels as byte ids) and back-propagates."""
    spec = MODELS.get(model).obj
    step = math.lcm(4, spec.width_multiple)
    width = step * -(-32 // step)
    torch.manual_seed(0)
    net = LanguageModel(Architecture(width, 1, 2, 2 * width, 256, "cls", 2), spec, spec.default_options)
    logits = net(pathfinder_batch.tokens, pathfinder_batch.lengths)
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    sequence_loss("classify", logits, pathfinder_batch).backward()
    grad = net.embed.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
