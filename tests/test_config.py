"""Config resolution: budgets, task defaults, typed --set overrides and their errors."""

import copy
import dataclasses
import os
import re
from pathlib import Path

import pytest

import bimix_bench
from bimix_bench.config import BUDGET_DIR, apply_override, budget_names, deep_merge, load_budget, resolve_config
from bimix_bench.config.sections import SECTION_VIEWS, check_sections, throughput_config
from bimix_bench.errors import UsageError


def resolve(overrides=()):
    return resolve_config("tiny", "lra", {"subtasks": ["listops"], "listops": {"context": 200}},
                          {"transformer": {"backend": "auto"}}, list(overrides))


def test_five_budgets_with_every_section():
    assert budget_names()[:5] == ["tiny", "cpu", "small", "medium", "large"]
    targets = [load_budget(n)["params"]["non_embedding"] for n in budget_names()[:5]]
    assert targets == sorted(targets)  # budgets grow


def test_overrides_are_typed_and_applied():
    cfg = resolve(["train.steps=7", "train.lr=1e-3", "models.transformer.backend=reference",
                   "seeds=[1, 2]", "task.listops.context=64", "train.lr=2"])
    assert cfg["train"]["steps"] == 7
    assert cfg["train"]["lr"] == 2.0 and isinstance(cfg["train"]["lr"], float)
    assert cfg["models"]["transformer"]["backend"] == "reference"
    assert cfg["seeds"] == [1, 2]
    assert cfg["task"]["listops"]["context"] == 64
    assert cfg["budget"]["name"] == "tiny"


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.stepz=3", "unknown config key 'train.stepz'; valid keys: "),
        ("train.steps=abc", "train.steps expects int"),
        ("train.steps=1.5", "train.steps expects int"),
        ("train.steps", "--set expects key=value"),
        ("train=3", "is a section"),
        ("seeds=[a]", "seeds expects list"),
        ("models.mamba.backend=x", "unknown config key"),
    ],
)
def test_bad_overrides_are_rejected_with_a_clear_message(item, message):
    cfg = resolve()
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(")):
        apply_override(cfg, item)


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(UsageError) as err:
        resolve(["train.nope=1"])
    assert "train.steps" in str(err.value) and "models.transformer.backend" in str(err.value)


def test_budget_files_are_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: [1, 2\n")
    with pytest.raises(UsageError, match="malformed YAML"):
        load_budget(str(bad))
    incomplete = tmp_path / "incomplete.yaml"
    incomplete.write_text("params: {non_embedding: 10}\n")
    with pytest.raises(UsageError, match="lacks section"):
        load_budget(str(incomplete))
    with pytest.raises(UsageError, match="unknown budget 'huge'"):
        load_budget("huge")


def test_a_budget_file_by_path(tmp_path):
    custom = tmp_path / "mine.yaml"
    text = (load_budget.__globals__["BUDGET_DIR"] / "tiny.yaml").read_text()
    custom.write_text(text.replace("steps: 40", "steps: 3"))
    assert load_budget(str(custom))["train"]["steps"] == 3


@pytest.mark.parametrize(
    "item, message",
    [
        ("task.listops.n_train=-5", "task.listops.n_train must be >= 0"),
        ("task.listops.n_val=-1", "task.listops.n_val must be >= 0"),
        ("task.listops.context=0", "task.listops.context must be > 0"),
        ("task.listops.min_len=-3", "task.listops.min_len must be > 0"),
        ("task.listops.max_len=0", "task.listops.max_len must be > 0"),
        ("task.listops.min_len=300", r"task.listops.min_len \(300\) must not exceed"),
        ("task.pathfinder.image_size=-16", "task.pathfinder.image_size must be > 0"),
        ("task.n_test=-2", "task.n_test must be >= 0"),
    ],
)
def test_task_sizes_are_range_checked(item, message):
    defaults = {"subtasks": ["listops"], "n_test": 10,
                "listops": {"context": 200, "min_len": 40, "max_len": 200, "n_train": 8, "n_val": 4},
                "pathfinder": {"image_size": 16, "n_train": 0}}
    cfg = resolve_config("tiny", "lra", defaults, {}, [])  # the defaults pass, 0 = "all" included
    assert cfg["task"]["pathfinder"]["n_train"] == 0
    with pytest.raises(UsageError, match=message):
        resolve_config("tiny", "lra", defaults, {}, [item])


def test_every_task_familys_defaults_pass_the_size_checks():
    from bimix_bench.registry import TASKS

    for entry in TASKS:
        for budget in budget_names():
            resolve_config(budget, entry.name, entry.obj.defaults(budget), {}, [])


# Typed section views (config.sections): each key's type, range and default stated once.

BUDGET_FILES = sorted(BUDGET_DIR.glob("*.yaml"))


def _field_names(view):
    return [f.name for f in dataclasses.fields(view)]


@pytest.mark.parametrize("path", BUDGET_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("view", SECTION_VIEWS, ids=lambda v: v.NAME)
def test_every_budget_file_sets_every_field_of_every_section(path, view):
    budget = load_budget(str(path))
    section = view.of(budget)
    assert sorted(budget[view.NAME]) == sorted(_field_names(view))  # no key without a field
    for name, value in budget[view.NAME].items():  # the view holds the file's value, typed
        assert getattr(section, name) == (tuple(value) if isinstance(value, list) else value)


@pytest.mark.parametrize("view", SECTION_VIEWS, ids=lambda v: v.NAME)
def test_a_missing_key_takes_the_default_or_is_refused_by_name(view):
    budget = load_budget("tiny")
    for f in dataclasses.fields(view):
        without = {**budget, view.NAME: {k: v for k, v in budget[view.NAME].items() if k != f.name}}
        if f.default is dataclasses.MISSING:
            with pytest.raises(UsageError, match=rf"^{view.NAME}\.{f.name} is missing"):
                view.of(without)
        else:
            assert getattr(view.of(without), f.name) == f.default


@pytest.mark.parametrize("section, key, value", [
    ("train", "steps", "40"),
    ("train", "steps", 0),
    ("train", "lr", True),
    ("train", "betas", [0.9]),
    ("train", "warmup_frac", 1.5),
    ("train", "eval_every", 0),
    ("train", "precision", 16),
    ("train", "lr_grid", [1e-3, 1e-3]),
    ("train", "epochs", -1),
    ("eval", "batch_size", 2.0),
    ("eval", "length_factors", [1]),
    ("eval", "length_examples", -1),
    ("throughput", "repeats", 0),
    ("throughput", "decode_tokens", -1),
    ("throughput", "warmup", None),
    ("params", "tolerance", "5%"),
    ("arch", "n_heads", 0),
    ("arch", "ffn_ratio", -2.0),
])
def test_a_wrong_type_or_range_is_refused_naming_the_key(section, key, value):
    budget = load_budget("tiny")
    bad = deep_merge(budget, {section: {key: value}})
    view = next(v for v in SECTION_VIEWS if v.NAME == section)
    with pytest.raises(UsageError, match=rf"^budget x: {section}\.{key} "):
        view.of(bad, "budget x")


def test_set_values_pass_the_same_checks():
    with pytest.raises(UsageError, match="train.eval_every must be a positive number, got 0"):
        resolve(["train.eval_every=0"])


def test_views_leave_the_saved_and_hashed_dict_as_it_was():
    from bimix_bench.results.records import config_hash

    cfg = resolve()
    saved, digest = copy.deepcopy(cfg), config_hash(cfg)
    check_sections(cfg)
    assert cfg == saved and config_hash(cfg) == digest


def test_speed_times_with_the_budgets_throughput_keys_unless_told_otherwise():
    from bimix_bench.speed.sweep import SweepSettings

    tiny = throughput_config(load_budget("tiny"))
    unset = SweepSettings(models=["transformer"], contexts=[16], tokens_per_batch=16, budget="tiny")
    assert (unset.warmup, unset.repeats, unset.decode_tokens) == (
        tiny.warmup, tiny.repeats, tiny.decode_tokens)
    given = SweepSettings(models=["transformer"], contexts=[16], tokens_per_batch=16, budget="tiny",
                          warmup=0, repeats=7, decode_tokens=0)
    assert (given.warmup, given.repeats, given.decode_tokens) == (0, 7, 0)


def test_no_second_decode_tokens_default_outside_the_config_module():
    package = Path(bimix_bench.__file__).parent
    config_dir = package / "config"
    fallback = re.compile(r"""\.get\(\s*["']decode_tokens["']""")
    found = []
    for folder, _, files in os.walk(package, followlinks=True):  # the tasks folder is a link
        if Path(folder) == config_dir or config_dir in Path(folder).parents:
            continue
        for name in files:
            if name.endswith(".py"):
                path = Path(folder) / name
                found += [f"{path}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                          if fallback.search(line)]
    assert found == []
