"""Matched budgets: every registered model lands within +-5% of every budget's target."""

import pytest

from bimix_bench.config import budget_names, load_budget
from bimix_bench.models.backbone import LanguageModel, count_parameters
from bimix_bench.models.sizing import solve_architecture
from bimix_bench.registry import MODELS, TASKS

BUDGETS = budget_names()


def lra_context(budget: str) -> int:
    return TASKS.get("lra").obj.defaults(budget)["listops"]["context"]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("model", MODELS.names())
def test_parameters_match_the_budget(model, budget):
    b = load_budget(budget)
    spec = MODELS.get(model).obj
    target = b["params"]["non_embedding"]
    arch, count = solve_architecture(
        spec, spec.default_options, target, b["arch"]["n_layers"], b["arch"]["n_heads"],
        b["arch"]["ffn_ratio"], lra_context(budget), head="lm",
    )
    assert abs(count - target) / target <= 0.05
    assert arch.d_model % (2 * arch.n_heads) == 0
    assert arch.d_model <= arch.ffn_hidden <= 4 * arch.d_model


@pytest.mark.parametrize("model", MODELS.names())
def test_reported_count_is_the_real_model(model):
    """The solver's count equals the parameters of the model actually built on CPU."""
    spec = MODELS.get(model).obj
    arch, count = solve_architecture(spec, spec.default_options, 60_000, 2, 4, 2.6667, 64,
                                     head="cls", n_classes=10)
    model = LanguageModel(arch, spec, spec.default_options)
    assert count_parameters(model)["non_embedding"] == count
