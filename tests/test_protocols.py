"""Per-task training protocols: a family's protocol replaces the budget's train keys for every
model alike, --set still wins, bad values are refused with one line; early stopping, epochs,
logits at the scored positions only, and a budget that runs no subtask of a family."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bimix_bench.config import resolve_config
from bimix_bench.engine.trainer import planned_steps, train_model
from bimix_bench.errors import UsageError
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.registry import MODELS, TASKS
from bimix_bench.task import scored_positions, sequence_loss

PROTOCOL = {"protocol": "a test protocol (source: here)", "steps": 7, "early_stop_at": 0.9,
            "lr_grid": [1.0e-3, 1.0e-2]}


def resolve(task_defaults, overrides=()):
    return resolve_config("tiny", "mqar", task_defaults, {"transformer": {}}, list(overrides))


def test_a_task_protocol_replaces_the_budget_train_keys_and_set_wins():
    cfg = resolve({"subtasks": ["T64_kv4"], "protocol": dict(PROTOCOL)})
    assert cfg["train"]["steps"] == 7 and cfg["train"]["lr_grid"] == [1e-3, 1e-2]
    assert cfg["train"]["protocol"] == "a test protocol (source: here)"
    assert "protocol" not in cfg["task"]  # moved, not copied: one place says it
    assert cfg["train"]["weight_decay"] == 0.1  # untouched keys stay the budget's
    cfg = resolve({"protocol": dict(PROTOCOL)}, ["train.steps=3", "train.lr_grid=[1e-4]"])
    assert cfg["train"]["steps"] == 3 and cfg["train"]["lr_grid"] == [1e-4]


def test_a_protocol_may_not_set_parameters_or_unknown_keys():
    with pytest.raises(UsageError, match="unknown train key.*non_embedding"):
        resolve({"protocol": {"non_embedding": 5}})


@pytest.mark.parametrize("item, message", [
    ("train.steps=0", "train.steps must be a positive number"),
    ("train.lr=-1", "train.lr must be a positive number"),
    ("eval.batch_size=0", "eval.batch_size must be a positive number"),
    ("train.lr_grid=[1e-3, -1]", "lr_grid must be a list of positive numbers"),
    ("train.lr_grid=[1e-3, 1e-3]", "repeats a rate"),
    ("train.early_stop_at=-0.5", "early_stop_at must be a number >= 0"),
    ("train.epochs=-1", "epochs must be an integer >= 0"),
    ("seeds=[-1]", "seeds must be a non-empty list of integers >= 0"),
])
def test_out_of_range_values_are_refused(item, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        resolve({}, [item])


def test_every_budget_runs_every_family_with_a_valid_protocol():
    from bimix_bench.config import budget_names

    for budget in budget_names():
        for entry in TASKS:
            cfg = resolve_config(budget, entry.name, entry.obj.defaults(budget), {}, [])
            assert cfg["train"]["protocol"], (budget, entry.name)


def _mqar(cfg_overrides=()):
    from bimix_bench.tasks.mqar import load_mqar

    task_cfg = dict(power_a=0.01, random_non_queries=True, vocab_size=256, n_train=64, n_val=32, n_test=32)
    cfg = resolve({"subtasks": ["T64_kv4"], **task_cfg}, ["train.batch_tokens=1024", *cfg_overrides])
    return cfg, load_mqar("T64_kv4", cfg["task"], 0)


def _model(data):
    arch = Architecture(32, 1, 2, 64, data.context, vocab_size=data.vocab_size)
    torch.manual_seed(0)
    return LanguageModel(arch, MODELS.get("transformer").obj, {"backend": "reference"})


def test_epochs_set_the_steps_from_the_training_set():
    cfg, data = _mqar(["train.epochs=3"])
    assert planned_steps(cfg, data) == 3 * (64 // 16)  # 64 examples, 16 sequences per step
    cfg, data = _mqar(["train.batch_sequences=8", "train.epochs=2"])
    assert planned_steps(cfg, data) == 2 * (64 // 8)


def test_early_stopping_ends_training_at_the_first_validation_that_reaches_the_target():
    # Selected on bits per byte (lower is better): any model is below 1,000 at once.
    cfg, data = _mqar(["train.steps=12", "train.eval_every=4", "train.early_stop_at=1000.0"])
    data.answer_accuracy = False
    assert data.selection_metric == "bits_per_byte"
    stopped = train_model(_model(data), data, cfg, torch.device("cpu"), 0)
    assert stopped.steps == 4 and stopped.stopped_early and stopped.planned_steps == 12
    no_stop = {**cfg, "train": {**cfg["train"], "early_stop_at": 0.0}}
    full = train_model(_model(data), data, no_stop, torch.device("cpu"), 0)
    assert full.steps == 12 and not full.stopped_early


def test_early_stopping_is_not_reached_by_a_worse_value():
    cfg, data = _mqar(["train.steps=8", "train.eval_every=4", "train.early_stop_at=0.999"])
    result = train_model(_model(data), data, cfg, torch.device("cpu"), 0)
    assert result.steps == 8 and not result.stopped_early  # a random model is far from 0.999


def test_logits_at_the_scored_positions_equal_the_full_logits_there():
    _, data = _mqar()
    model = _model(data).eval()
    batch = next(data.eval_batches("val", 4))
    mask = scored_positions("lm", batch)
    assert mask.sum() == 4 * 4  # four answers per MQAR sequence
    full = model(batch.tokens)
    some = model(batch.tokens, scored=mask)
    torch.testing.assert_close(some, full[mask])
    assert math.isclose(sequence_loss("lm", some, batch).item(), sequence_loss("lm", full, batch).item(),
                        rel_tol=1e-6)


def test_the_model_embeds_the_task_vocabulary():
    _, data = _mqar()
    assert data.vocab_size == 256 and _model(data).embed.weight.shape[0] == 256
    x, _ = data.train.fetch(0)
    assert int(x.max()) < 256


def test_a_budget_that_runs_no_subtask_of_a_family_says_why():
    done = subprocess.run([sys.executable, "-m", "bimix_bench", "run", "--task", "lra",
                           "--budget", "cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "runs no subtask by default at budget cpu" in done.stderr
    assert "--subtasks" in done.stderr and "Traceback" not in done.stderr


def test_the_training_step_reads_the_loss_only_every_log_interval(monkeypatch):
    """The host waits for the device only when it reads a value: count the reads of tensor
    values (Tensor.item / __float__ / __bool__) made by the product's own code in the training
    loop, outside validation. (torch's CPU optimizer reads its step counters, which live on the
    host anyway; those are not counted.)"""
    import sys

    import bimix_bench
    import bimix_bench.engine.trainer as trainer

    product = str(Path(bimix_bench.__file__).resolve().parent)

    cfg, data = _mqar(["train.steps=40", "train.eval_every=40"])
    model = _model(data)
    reads, validating = [], [False]
    real_eval = trainer.evaluate_split

    def eval_marked(*args, **kwargs):
        validating[0] = True
        try:
            return real_eval(*args, **kwargs)
        finally:
            validating[0] = False

    for name in ("item", "__float__", "__bool__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            caller = str(Path(sys._getframe(1).f_code.co_filename).resolve())
            if not validating[0] and caller.startswith(product):
                reads.append(f"{_name} at {caller}:{sys._getframe(1).f_lineno}")
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    monkeypatch.setattr(trainer, "evaluate_split", eval_marked)
    result = trainer.train_model(model, data, cfg, torch.device("cpu"), 0)
    assert result.steps == 40
    # 4 reads of the summed loss (every LOG_EVERY = 10 steps), each a finiteness check and a
    # value: a handful per read, never one per step.
    assert 0 < len(reads) <= 4 * 3, reads


def test_a_loss_that_becomes_nan_ends_the_cell_as_diverged(monkeypatch):
    import bimix_bench.engine.trainer as trainer

    cfg, data = _mqar(["train.steps=30", "train.eval_every=30"])
    calls = [0]
    real = trainer.sequence_loss

    def nan_from_step_13(objective, logits, batch):
        calls[0] += 1
        loss = real(objective, logits, batch)
        return loss * float("nan") if calls[0] >= 13 else loss

    monkeypatch.setattr(trainer, "sequence_loss", nan_from_step_13)
    with pytest.raises(trainer.Diverged, match="within steps 11-20"):
        trainer.train_model(_model(data), data, cfg, torch.device("cpu"), 0)


def test_longer_test_inputs_keep_the_task_and_scale_the_length():
    _, data = _mqar()
    longer = data.at_length(4)
    x, y = longer.test.fetch(0)
    assert longer.context == 4 * 64 and x.shape == (256,) and int((y != -100).sum()) == 4
    assert longer.vocab_size == data.vocab_size and longer.extra_metrics is None
    from bimix_bench.registry import TASKS

    st = TASKS.get("state_tracking").obj
    words = st.load("parity", st.defaults("tiny"), 0, None).at_length(8)
    x, y = words.test.fetch(3)
    assert x.shape == y.shape == (8 * 16,) and y.tolist() == (x.cumsum(0) % 2).tolist()


def test_records_carry_the_metrics_at_longer_lengths(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bimix_bench", "run", "--task", "state_tracking",
                           "--subtasks", "parity", "--budget", "tiny", "--models", "transformer",
                           "--set", "train.steps=4", "--set", "train.eval_every=4",
                           "--set", "eval.length_factors=[2, 4]", "--set", "throughput.repeats=1",
                           "--no-checkpoints", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from bimix_bench.results.records import read_records

    (rec,) = read_records(tmp_path / "r")
    test = rec["metrics"]["test"]
    for factor in (2, 4):
        assert 0.0 <= test[f"accuracy_len{factor}x"] <= 1.0 and test[f"loss_len{factor}x"] > 0
    bad = subprocess.run([sys.executable, "-m", "bimix_bench", "run", "--task", "state_tracking",
                          "--budget", "tiny", "--set", "eval.length_factors=[1]"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "length_factors" in bad.stderr


SUBTASK_PROTOCOL = {"T128_kv8": {"steps": 11, "protocol": "the longer setting's cap"}}


def test_a_subtask_protocol_applies_to_that_subtasks_cells_alone():
    from bimix_bench.config import subtask_train
    from bimix_bench.engine.cells import Cell, cell_config

    cfg = resolve({"subtasks": ["T64_kv4", "T128_kv8"], "protocol": dict(PROTOCOL),
                   "subtask_protocol": copy.deepcopy(SUBTASK_PROTOCOL)})
    cfg["run"] = {"models": ["transformer"]}
    assert subtask_train(cfg, "T64_kv4")["steps"] == 7
    long_cfg, _ = cell_config(cfg, Cell("T128_kv8", 0, "transformer", "grid", 1e-3), [])
    short_cfg, _ = cell_config(cfg, Cell("T64_kv4", 0, "transformer", "grid", 1e-3), [])
    assert long_cfg["train"]["steps"] == 11 and long_cfg["train"]["protocol"] == "the longer setting's cap"
    assert short_cfg["train"]["steps"] == 7 and long_cfg["train"]["lr"] == 1e-3
    assert long_cfg["train"]["early_stop_at"] == 0.9  # the family's protocol under it


def test_a_train_key_given_with_set_wins_over_a_subtask_protocol():
    from bimix_bench.config import subtask_train

    cfg = resolve({"subtasks": ["T128_kv8"], "subtask_protocol": copy.deepcopy(SUBTASK_PROTOCOL)},
                  ["train.steps=3"])
    assert subtask_train(cfg, "T128_kv8")["steps"] == 3
    assert subtask_train(cfg, "T128_kv8")["protocol"] == (
        "the longer setting's cap; changed by --set: train.steps=3")


def test_a_protocol_changed_with_set_says_so_in_its_name():
    """The record names the protocol a cell trained under: a --set of a protocol key is added
    to the name (the learning rates, recorded apart, and a name given with --set are not)."""
    cfg = resolve({"protocol": dict(PROTOCOL)},
                  ["train.batch_sequences=64", "train.lr=0.01", "train.steps=40"])
    assert cfg["train"]["protocol"] == ("a test protocol (source: here); changed by --set: "
                                        "train.batch_sequences=64, train.steps=40")
    assert resolve({"protocol": dict(PROTOCOL)}, ["train.lr_grid=[]", "train.lr=0.01"])[
        "train"]["protocol"] == "a test protocol (source: here)"
    heads = resolve({"protocol": dict(PROTOCOL), "arch": {"n_heads": 2}}, ["arch.n_heads=1"])
    assert heads["train"]["protocol"] == ("a test protocol (source: here); changed by --set: "
                                          "arch.n_heads=1")
    named = resolve({"protocol": dict(PROTOCOL)}, ["train.steps=40", "train.protocol=mine"])
    assert named["train"]["protocol"] == "mine"


@pytest.mark.parametrize("subtask_protocol, message", [
    ({"T128_kv8": {"lr_grid": [1e-3]}}, "may set only train keys other than lr, lr_grid"),
    ({"T128_kv8": {"non_embedding": 5}}, "sets non_embedding"),
    ({"T128_kv8": 4000}, "must map each subtask to a mapping of train keys"),
    ({"T128_kv8": {"steps": 0}}, "protocol of subtask T128_kv8.*steps must be a positive number"),
])
def test_a_bad_subtask_protocol_is_refused_in_one_line(subtask_protocol, message):
    with pytest.raises(UsageError, match=message):
        resolve({"subtasks": ["T128_kv8"], "subtask_protocol": subtask_protocol})


def test_a_task_may_set_its_head_count_and_nothing_else_of_the_backbone():
    """A family splits the budget's width into its own number of heads, for every model of the
    task alike; depth and parameters stay the budget's, and --set still wins."""
    cfg = resolve({"subtasks": ["T64_kv4"], "arch": {"n_heads": 2}})
    assert cfg["arch"]["n_heads"] == 2 and "arch" not in cfg["task"]
    budget = resolve({"subtasks": ["T64_kv4"]})
    assert cfg["arch"]["n_layers"] == budget["arch"]["n_layers"]
    assert cfg["params"] == budget["params"] and budget["arch"]["n_heads"] != 2
    assert resolve({"arch": {"n_heads": 2}}, ["arch.n_heads=1"])["arch"]["n_heads"] == 1
    with pytest.raises(UsageError, match="arch may set only n_heads, not n_layers"):
        resolve({"arch": {"n_heads": 2, "n_layers": 8}})
    with pytest.raises(UsageError, match="arch must be a mapping"):
        resolve({"arch": 2})
    with pytest.raises(UsageError, match="n_heads must be a positive"):
        resolve({"arch": {"n_heads": 0}})


def test_multidoc_qa_at_cpu_trains_with_two_heads_and_lists_them():
    """The cpu budget's single-needle protocol: two heads of the budget's width, and `list`
    names the head count beside the budget's."""
    from bimix_bench.cli.list_cmd import protocols_table
    from bimix_bench.registry import TASKS
    from rich.console import Console

    entry = TASKS.get("multidoc_qa")
    cfg = resolve_config("cpu", "multidoc_qa", entry.obj.defaults("cpu"), {}, [])
    assert cfg["arch"]["n_heads"] == 2 and cfg["task"]["subtasks"] == ["single_needle_noise"]
    console = Console(width=200, record=True)
    console.print(protocols_table([entry], ["cpu", "small"]))
    text = console.export_text()
    assert text.count("2 heads (the budget's: 1)") == 1  # at cpu, not at small
