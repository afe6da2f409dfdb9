"""Config resolution: budgets, task defaults, typed --set overrides and their errors."""

import pytest

from bimix_bench.config import apply_override, budget_names, load_budget, resolve_config
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
