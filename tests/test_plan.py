"""`bimix-bench run --plan`: the cells a run would train and their cost here, nothing trained."""

import pytest
import torch
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.engine.plan import plan_costs
from bimix_bench.engine.runner import RunRequest, prepare

SHORT = ["--set", "train.steps=7", "--set", "train.eval_every=3", "--set", "throughput.repeats=1"]


def test_plan_lists_each_model_and_subtask_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--task", "mqar", "--budget", "tiny", "--models",
                                      "transformer,linear_attn", "--plan", *SHORT])
    assert result.exit_code == 0, result.output
    for text in ("transformer", "linear_attn", "T64_kv4", "Nothing was trained"):
        assert text in result.output
    assert list(tmp_path.iterdir()) == []  # no run folder, no records


def test_plan_counts_a_grid_and_its_later_seeds_and_the_cap_per_cell():
    overrides = [*SHORT[1::2], "train.lr_grid=[0.001, 0.01]"]
    cfg, cells, task = prepare(RunRequest(task="mqar", budget="tiny", models=["transformer"],
                                          seeds=[0, 1, 2], overrides=overrides))
    (cost,) = plan_costs(cfg, cells, task, torch.device("cpu"), repeats=1)
    assert (cost.cells, cost.steps, cost.validation_every) == (4, 7, 3)  # 2 rates + seeds 1, 2
    assert cost.step_s > 0 and cost.validation_s > 0
    # validations after steps 3, 6 and 7; a cell stopped at step 4: after 3 and 4
    assert cost.cell_s() == pytest.approx(7 * cost.step_s + 3 * cost.validation_s)
    assert cost.cell_s(4) == pytest.approx(4 * cost.step_s + 2 * cost.validation_s)
    assert cost.worst_case_s == pytest.approx(4 * cost.cell_s())
