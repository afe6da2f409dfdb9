"""Config resolution: budgets, task defaults, typed --set overrides and their errors."""

import pytest

from bimix_bench.config import apply_override, budget_names, load_budget, resolve_config
from bimix_bench.errors import UsageError


def resolve(overrides=()):
    return resolve_config("tiny", "lra", {"subtasks": ["listops"], "listops": {"context": 200}},
                          {"transformer": {"backend": "auto"}}, list(overrides))


def test_four_budgets_with_every_section():
    assert budget_names()[:4] == ["tiny", "small", "medium", "large"]
    targets = [load_budget(n)["params"]["non_embedding"] for n in budget_names()[:4]]
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
