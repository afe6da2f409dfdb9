"""State tracking: the running state of a group word, after every prefix.

A sequence is x_1 .. x_L, each x_t an element of a finite group G (given by its index); the
target at position t is the state s_t = x_1 * x_2 * ... * x_t (s_0 = the identity), so a model
must carry a group element through the whole sequence. Three groups, from easy to hard for
first-order recurrences (Merrill et al. 2024, "The Illusion of State in State-Space Models";
Grazzi et al. 2025 on negative eigenvalues):
  parity   Z_2: bits, the state is their running XOR
  mod_add  Z_m: residues, the state is their running sum mod m (default m = 5)
  s5       S_5: the 120 permutations of 5 elements, the state is their running composition
           (non-solvable: not computable by any constant-depth circuit, TC^0 / NC^1)
Elements and states share one index space 0 .. |G| - 1, which is the task's vocabulary.
S_5 uses itertools.permutations order (index 0 is the identity); (p * q)(i) = q(p(i)): apply
p first, then q, so s_t = s_{t-1} * x_t applies the newest element last.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GROUPS = ("parity", "mod_add", "s5")


@lru_cache(maxsize=None)
def s5_elements() -> tuple[tuple[int, ...], ...]:
    return tuple(itertools.permutations(range(5)))


@lru_cache(maxsize=None)
def multiplication_table(group: str, modulus: int = 5) -> np.ndarray:
    """(|G|, |G|) int64: table[a, b] = index of a * b."""
    if group == "parity":
        return np.array([[0, 1], [1, 0]], dtype=np.int64)
    if group == "mod_add":
        r = np.arange(modulus)
        return (r[:, None] + r[None, :]) % modulus
    if group == "s5":
        elements = s5_elements()
        index = {p: i for i, p in enumerate(elements)}
        return np.array([[index[tuple(q[p[i]] for i in range(5))] for q in elements] for p in elements],
                        dtype=np.int64)
    raise ValueError(f"unknown group {group!r}; valid: {', '.join(GROUPS)}")


@dataclass(frozen=True)
class StateTrackingConfig:
    group: str
    length: int  # L: elements per sequence
    modulus: int = 5  # m of mod_add

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown group {self.group!r}; valid: {', '.join(GROUPS)}")
        if self.length < 1 or self.modulus < 2:
            raise ValueError(f"need length >= 1 and modulus >= 2, got {self.length}, {self.modulus}")

    @property
    def order(self) -> int:
        return len(multiplication_table(self.group, self.modulus))


def running_states(elements: np.ndarray, table: np.ndarray) -> np.ndarray:
    """elements (n, L) -> states (n, L): states[:, t] = elements[:, 0] * ... * elements[:, t]."""
    states = np.empty_like(elements)
    state = np.zeros(len(elements), dtype=np.int64)  # the identity has index 0 in every group
    for t in range(elements.shape[1]):
        state = table[state, elements[:, t]]
        states[:, t] = state
    return states


def generate(n: int, cfg: StateTrackingConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of uniformly drawn elements and their running states, both (n, L)."""
    table = multiplication_table(cfg.group, cfg.modulus)
    elements = rng.integers(0, len(table), size=(n, cfg.length))
    return elements, running_states(elements, table)
