"""Multi-query associative recall (MQAR), the synthetic task of Zoology (Arora et al. 2023).

One sequence of T ids (T even):
  * kv region, positions 0 .. 2N-1: N key-value pairs k1 v1 k2 v2 ... kN vN. Keys are N
    distinct ids from 1 .. V/2 - 1, values N distinct ids from V/2 .. V-1 (disjoint ranges;
    Zoology's V = 8,192), both uniform ordered draws without replacement.
  * query region, positions 2N .. T-1, seen as (T - 2N) / 2 slots of two positions. Key k_j is
    placed at position 2N + 2 g_j, and the target at that position (the next id to predict) is
    v_j; every other target is ignored. The slots g_1 .. g_N are drawn without replacement
    with probability proportional to i^(a - 1) for slot i = 1, 2, ... (a power law; Zoology's
    default a = 0.01), drawn in sequence like numpy's choice(replace=False, p=...), so most
    queries come soon after the kv region and a few come far later.
  * every other input position holds a uniformly random id from 0 .. V-1 (Zoology's
    random_non_queries; 0 when disabled), so queries must be recognised by their key.
A model answers query j by recalling which value followed k_j in the kv region.

The sequential weighted draw without replacement is done for all rows at once with the
Gumbel-top-k identity: the indices of the N largest log p_i + Gumbel noise, in decreasing
order, have the distribution of N successive draws that each renormalize over the slots left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

ZOOLOGY_VOCAB = 8192
SUBTASK_PATTERN = re.compile(r"^T(\d+)_kv(\d+)$")


@dataclass(frozen=True)
class MQARConfig:
    seq_len: int  # T: input ids per sequence (the model's context)
    n_kv: int  # N: key-value pairs, each queried once
    power_a: float = 0.01  # slot i has weight i^(power_a - 1); 1.0 = uniform
    random_non_queries: bool = True
    vocab_size: int = ZOOLOGY_VOCAB  # keys from 1 .. V/2 - 1, values from V/2 .. V - 1

    def __post_init__(self) -> None:
        if self.seq_len % 2:
            raise ValueError(f"sequence length must be even, got {self.seq_len}")
        if self.n_kv < 1 or 4 * self.n_kv > self.seq_len:
            raise ValueError(f"need 1 <= 4 * n_kv <= seq_len, got n_kv={self.n_kv}, seq_len={self.seq_len}")
        if self.n_kv > self.vocab_size // 2 - 1:
            raise ValueError(f"{self.n_kv} distinct keys do not fit the key range 1..{self.vocab_size // 2 - 1}")
        if not self.power_a > 0:
            raise ValueError(f"power_a must be > 0, got {self.power_a}")

    @property
    def n_slots(self) -> int:
        return (self.seq_len - 2 * self.n_kv) // 2

    @property
    def name(self) -> str:
        return f"T{self.seq_len}_kv{self.n_kv}"


def parse_subtask(name: str) -> tuple[int, int]:
    """"T256_kv16" -> (256, 16)."""
    match = SUBTASK_PATTERN.match(name)
    if not match:
        raise ValueError(f"MQAR subtask names look like T256_kv16, got {name!r}")
    return int(match.group(1)), int(match.group(2))


def slot_probabilities(n_slots: int, power_a: float) -> np.ndarray:
    """(n_slots,) float64: p_i proportional to i^(power_a - 1), i = 1 .. n_slots."""
    weights = np.arange(1, n_slots + 1, dtype=np.float64) ** (power_a - 1.0)
    return weights / weights.sum()


def _ordered_subset(rng: np.random.Generator, n_rows: int, low: int, high: int, k: int) -> np.ndarray:
    """(n_rows, k): k distinct ids from low .. high - 1 per row, uniform, in random order.
    Generator.choice without replacement costs O(k) per row, not O(high - low) as a full
    permutation would: with Zoology's 4,096 keys this is what keeps generation cheap."""
    return np.stack([rng.choice(high - low, size=k, replace=False) for _ in range(n_rows)]) + low


def generate_mqar(n: int, cfg: MQARConfig, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n sequences. Returns inputs (n, T) int64 ids < V, query positions (n, N) int64 and
    answers (n, N) int64: the target at inputs[r, positions[r, j]] is answers[r, j]."""
    T, N, V = cfg.seq_len, cfg.n_kv, cfg.vocab_size
    half = V // 2
    keys = _ordered_subset(rng, n, 1, half, N)  # (n, N)
    values = _ordered_subset(rng, n, half, V, N)  # (n, N)
    log_p = np.log(slot_probabilities(cfg.n_slots, cfg.power_a))  # (S,)
    scores = log_p[None, :] + rng.gumbel(size=(n, cfg.n_slots))  # (n, S)
    slots = np.argsort(-scores, axis=1, kind="stable")[:, :N]  # (n, N): slot of key j
    positions = 2 * N + 2 * slots  # (n, N)

    if cfg.random_non_queries:
        inputs = rng.integers(0, V, size=(n, T))
    else:
        inputs = np.zeros((n, T), dtype=np.int64)
    inputs[:, 0 : 2 * N : 2] = keys
    inputs[:, 1 : 2 * N : 2] = values
    np.put_along_axis(inputs, positions, keys, axis=1)
    return inputs.astype(np.int64), positions.astype(np.int64), values.astype(np.int64)
