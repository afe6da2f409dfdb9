"""State tracking: the generator checked by hand on small words, the group tables checked
against the group laws, determinism, and the family's plumbing (vocabulary, chance level)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bimix_bench.registry import TASKS
from bimix_bench.tasks.state_tracking import example_fetcher
from bimix_bench.tasks.state_tracking.generator import (
    StateTrackingConfig,
    multiplication_table,
    running_states,
    s5_elements,
)


def states(group: str, word: list[int], modulus: int = 5) -> list[int]:
    return running_states(np.array([word]), multiplication_table(group, modulus))[0].tolist()


def test_parity_by_hand():
    assert states("parity", [1, 0, 1, 1, 0]) == [1, 1, 0, 1, 1]


def test_modular_addition_by_hand():
    assert states("mod_add", [3, 4, 1, 0, 2]) == [3, 2, 3, 3, 0]
    assert states("mod_add", [2, 2, 2], modulus=3) == [2, 1, 0]


def test_s5_by_hand():
    elements = s5_elements()
    index = {p: i for i, p in enumerate(elements)}
    identity, swap01, swap12 = index[(0, 1, 2, 3, 4)], index[(1, 0, 2, 3, 4)], index[(0, 2, 1, 3, 4)]
    cycle = index[(1, 2, 0, 3, 4)]  # 0 -> 1 -> 2 -> 0
    assert identity == 0
    # (p * q)(i) = q(p(i)): swap 0,1 then swap 1,2 sends 0 -> 1 -> 2, 1 -> 0 -> 0, 2 -> 2 -> 1.
    assert elements[states("s5", [swap01, swap12])[1]] == (2, 0, 1, 3, 4)
    assert states("s5", [swap01, swap01]) == [swap01, identity]
    assert states("s5", [cycle, cycle, cycle]) == [cycle, index[(2, 0, 1, 3, 4)], identity]


@pytest.mark.parametrize("group", ["parity", "mod_add", "s5"])
def test_tables_obey_the_group_laws(group):
    table = multiplication_table(group)
    n = len(table)
    assert all(sorted(row) == list(range(n)) for row in table.tolist())  # a Latin square
    assert (table[0] == np.arange(n)).all() and (table[:, 0] == np.arange(n)).all()  # identity 0
    a, b, c = np.random.default_rng(0).integers(0, n, size=(3, 200))
    assert (table[table[a, b], c] == table[a, table[b, c]]).all()  # associative
    if group == "s5":
        assert n == 120 and not (table == table.T).all()  # S5 is not commutative


def test_examples_are_pure_functions_of_seed_split_index():
    cfg = StateTrackingConfig("s5", 32)
    x1, y1 = example_fetcher(cfg, 0, "train")(7)
    x2, y2 = example_fetcher(cfg, 0, "train")(7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == y1.shape == (32,)
    assert not torch.equal(example_fetcher(cfg, 0, "test")(7)[0], x1)
    assert y1.tolist() == states("s5", x1.tolist())


def test_family_plumbing():
    task = TASKS.get("state_tracking").obj
    data = task.load("s5", task.defaults("tiny"), 0, None)
    assert data.vocab_size == 120 and data.selection_metric == "accuracy" and data.context == 16
    assert task.chance("parity", {"group_order": 2}).value == 0.5
    assert task.chance("s5", data.meta).value == pytest.approx(1 / 120)
    with pytest.raises(ValueError):
        StateTrackingConfig("s6", 8)
