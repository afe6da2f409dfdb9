"""Multi-query associative recall (Zoology, Arora et al. 2023) as a task family: `--task mqar`.

Subtask `T{T}_kv{N}`: sequences of T ids with N key-value pairs followed by queries (see
generator.py), over the task's own vocabulary (Zoology: 8,192 ids; the model's embedding and
head take that size). Language-model objective with the loss on the answer positions only; the
headline metric ("accuracy") is the accuracy of the argmax prediction on those positions, the
same number Zoology reports.
Examples are built on demand from (seed, split, index), so the data set never sits in memory
and is identical for every model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bimix_bench.task import Chance, ExampleSplit, SubtaskInfo, Task, TaskData, register_task
from bimix_bench.tasks.mqar.generator import MQARConfig, generate_mqar, parse_subtask

# The grid offered as subtasks: Zoology's sequence lengths and pair counts, extended to longer
# sequences, keeping 4N <= T <= 64N (the query region has room; the task is not mostly noise).
SEQ_LENS = (64, 128, 256, 512, 1024, 2048, 4096)
KV_PAIRS = (4, 8, 16, 32, 64)
SUBTASKS = tuple(f"T{t}_kv{n}" for t in SEQ_LENS for n in KV_PAIRS if 4 * n <= t <= 64 * n)
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def example_fetcher(cfg: MQARConfig, seed: int, split: str):
    """fetch(i) -> (inputs (T,), targets (T,)): example i of a split, a pure function of
    (seed, split, T, N, i); targets are -100 except at the N query positions."""
    def fetch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], cfg.seq_len, cfg.n_kv, i])
        inputs, positions, answers = generate_mqar(1, cfg, rng)
        targets = np.full(cfg.seq_len, -100, dtype=np.int64)
        targets[positions[0]] = answers[0]
        return torch.from_numpy(inputs[0]), torch.from_numpy(targets)

    return fetch


def load_mqar(subtask: str, cfg: dict[str, Any], seed: int) -> TaskData:
    seq_len, n_kv = parse_subtask(subtask)
    gen = MQARConfig(seq_len, n_kv, float(cfg["power_a"]), bool(cfg["random_non_queries"]),
                     int(cfg["vocab_size"]))
    sizes = {s: int(cfg[f"n_{s}"]) for s in ("train", "val", "test")}
    splits = {s: ExampleSplit(n, example_fetcher(gen, seed, s)) for s, n in sizes.items()}
    meta = {
        "source": "generated offline with the Zoology MQAR process",
        "vocab_size": gen.vocab_size,
        "seq_len": seq_len, "n_kv_pairs": n_kv, "power_a": gen.power_a,
        "random_non_queries": gen.random_non_queries,
        "key_ids": [1, gen.vocab_size // 2 - 1], "value_ids": [gen.vocab_size // 2, gen.vocab_size - 1],
        "sizes": sizes,
    }
    def longer_test(factor: int) -> ExampleSplit:
        """The same N pairs in sequences factor x T long: more distance between keys and their
        queries, more noise in between."""
        longer = dataclasses.replace(gen, seq_len=factor * seq_len)
        return ExampleSplit(sizes["test"], example_fetcher(longer, seed, "test"))

    return TaskData(
        task="mqar", subtask=subtask, objective="lm", context=seq_len,
        train=splits["train"], val=splits["val"], test=splits["test"], meta=meta,
        vocab_size=gen.vocab_size, answer_accuracy=True, longer_test=longer_test,
    )


@register_task
class AssociativeRecall(Task):
    name = "mqar"
    description = "Multi-query associative recall (Zoology): recall the value of each queried key"
    defaults_path = Path(__file__).parent / "defaults.yaml"

    def subtasks(self) -> list[SubtaskInfo]:
        return [SubtaskInfo(name, f"{parse_subtask(name)[1]} key-value pairs in sequences of "
                                  f"{parse_subtask(name)[0]} ids") for name in SUBTASKS]

    def chance(self, subtask: str, data_meta: dict[str, Any]) -> Chance | None:
        n_kv = parse_subtask(subtask)[1]
        return Chance("accuracy", 1.0 / n_kv, f"guessing among the sequence's {n_kv} values")

    def load(self, subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
        return load_mqar(subtask, cfg, seed)
