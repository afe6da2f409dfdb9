"""State tracking as a task family: `--task state_tracking` (parity, mod_add, s5).

The expressivity probe that separates recurrences over several past states (and attention)
from first-order ones: the running product of a group word, with the answer after every
prefix (generator.py). Language-model objective over the task's own vocabulary (the group's
elements), every position scored; the headline metric "accuracy" is the share of positions
whose state is predicted exactly, the chance level 1/|G|. Examples are built on demand from
(seed, split, index), identical for every model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bimix_bench.task import Chance, ExampleSplit, SubtaskInfo, Task, TaskData, register_task
from bimix_bench.tasks.state_tracking.generator import GROUPS, StateTrackingConfig, generate

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_DESCRIPTIONS = {
    "parity": "running XOR of a bit string (Z_2)",
    "mod_add": "running sum of residues mod m (Z_m, m = 5 by default)",
    "s5": "running composition of permutations of 5 elements (S_5, non-solvable)",
}


def example_fetcher(cfg: StateTrackingConfig, seed: int, split: str):
    """fetch(i) -> (elements (L,), states (L,)): a pure function of (seed, split, group, L, i)."""
    group_code = GROUPS.index(cfg.group)

    def fetch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], group_code, cfg.length, cfg.modulus, i])
        elements, states = generate(1, cfg, rng)
        return torch.from_numpy(elements[0]), torch.from_numpy(states[0])

    return fetch


def load_state_tracking(subtask: str, cfg: dict[str, Any], seed: int) -> TaskData:
    gen = StateTrackingConfig(subtask, int(cfg["length"]), int(cfg["modulus"]))
    sizes = {s: int(cfg[f"n_{s}"]) for s in ("train", "val", "test")}
    splits = {s: ExampleSplit(n, example_fetcher(gen, seed, s)) for s, n in sizes.items()}
    meta = {"source": "generated offline (tasks/state_tracking/generator.py)", "group": subtask,
            "group_order": gen.order, "length": gen.length, "sizes": sizes}
    if subtask == "mod_add":
        meta["modulus"] = gen.modulus
    def longer_test(factor: int) -> ExampleSplit:  # words factor x L long
        longer = dataclasses.replace(gen, length=factor * gen.length)
        return ExampleSplit(sizes["test"], example_fetcher(longer, seed, "test"))

    return TaskData(task="state_tracking", subtask=subtask, objective="lm", context=gen.length,
                    train=splits["train"], val=splits["val"], test=splits["test"], meta=meta,
                    vocab_size=max(gen.order, 2), answer_accuracy=True, longer_test=longer_test)


@register_task
class StateTracking(Task):
    name = "state_tracking"
    description = "State tracking: parity, modular addition and S5 composition after every prefix"
    defaults_path = Path(__file__).parent / "defaults.yaml"

    def subtasks(self) -> list[SubtaskInfo]:
        return [SubtaskInfo(name, text) for name, text in _DESCRIPTIONS.items()]

    def chance(self, subtask: str, data_meta: dict[str, Any]) -> Chance | None:
        order = int(data_meta.get("group_order") or {"parity": 2, "s5": 120}.get(subtask, 0))
        if not order:
            return None
        return Chance("accuracy", 1.0 / order, f"guessing the state among the group's {order} elements")

    def load(self, subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
        return load_state_tracking(subtask, cfg, seed)
