"""Multi-query associative recall: the generator's structure and its power-law query slots
(against numpy's sequential weighted sampling, which Zoology uses), determinism, the split
and accuracy plumbing with an oracle model, and a tiny end-to-end run through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.registry import TASKS
from bimix_bench.results.records import read_records, validate_record
from bimix_bench.task import evaluate_split
from bimix_bench.tasks.mqar import SUBTASKS, example_fetcher
from bimix_bench.tasks.mqar.generator import MQARConfig, generate_mqar, parse_subtask, slot_probabilities

CFG = MQARConfig(seq_len=64, n_kv=8)


def test_structure_of_generated_sequences():
    inputs, positions, answers = generate_mqar(300, CFG, np.random.default_rng(0))
    T, N, half = CFG.seq_len, CFG.n_kv, CFG.vocab_size // 2
    assert inputs.shape == (300, T) and positions.shape == answers.shape == (300, N)
    assert inputs.min() >= 0 and inputs.max() < CFG.vocab_size
    for row, pos, ans in zip(inputs, positions, answers):
        keys, values = row[0 : 2 * N : 2], row[1 : 2 * N : 2]
        assert len(set(keys)) == N and len(set(values)) == N
        assert keys.min() >= 1 and keys.max() < half  # disjoint vocab ranges
        assert values.min() >= half
        assert len(set(pos)) == N  # each query slot used once
        assert all(p >= 2 * N and (p - 2 * N) % 2 == 0 and p < T for p in pos)
        value_of = dict(zip(keys, values))
        assert [value_of[row[p]] for p in pos] == list(ans)  # the target is the paired value
        assert sorted(row[pos]) == sorted(keys)  # every key queried exactly once


def test_non_queries_random_or_zero():
    small = MQARConfig(seq_len=64, n_kv=8, vocab_size=256)
    inputs, positions, _ = generate_mqar(200, small, np.random.default_rng(1))
    free = np.ones_like(inputs, dtype=bool)
    free[:, : 2 * small.n_kv] = False
    np.put_along_axis(free, positions, False, axis=1)
    fill = inputs[free]
    counts = np.bincount(fill, minlength=256)
    assert counts.min() > 0 and counts.max() < 4 * counts.mean()  # spread over all 256 ids
    zeros, positions0, _ = generate_mqar(50, MQARConfig(64, 8, random_non_queries=False), np.random.default_rng(1))
    free0 = np.ones_like(zeros, dtype=bool)
    free0[:, :16] = False
    np.put_along_axis(free0, positions0, False, axis=1)
    assert (zeros[free0] == 0).all()


def test_query_slots_follow_zoology_sequential_weighted_draws():
    """Gumbel-top-k must give the distribution of numpy's choice(replace=False, p=...)."""
    cfg = MQARConfig(seq_len=40, n_kv=4, power_a=0.3)  # 16 slots, a clearly non-uniform law
    n = 6000
    _, positions, _ = generate_mqar(n, cfg, np.random.default_rng(2))
    ours = (positions - 2 * cfg.n_kv) // 2  # slot of key j
    rng = np.random.default_rng(3)
    p = slot_probabilities(cfg.n_slots, cfg.power_a)
    ref = np.stack([rng.choice(cfg.n_slots, size=cfg.n_kv, replace=False, p=p) for _ in range(n)])
    for j in (0, cfg.n_kv - 1):  # the first draw and the last (most renormalized) one
        table = [np.bincount(ours[:, j], minlength=cfg.n_slots), np.bincount(ref[:, j], minlength=cfg.n_slots)]
        assert chi2_contingency(np.array(table) + 1).pvalue > 1e-3
    assert np.mean(ours[:, 0] == 0) > 2 * np.mean(ours[:, 0] == cfg.n_slots - 1)  # near slots favoured


def test_slot_probabilities():
    p = slot_probabilities(5, 0.01)
    assert np.isclose(p.sum(), 1) and np.all(np.diff(p) < 0)
    assert np.allclose(slot_probabilities(4, 1.0), 0.25)  # a = 1 is uniform


def test_config_and_names():
    assert parse_subtask("T256_kv16") == (256, 16)
    with pytest.raises(ValueError):
        parse_subtask("T256-kv16")
    with pytest.raises(ValueError):
        MQARConfig(63, 4)
    with pytest.raises(ValueError):
        MQARConfig(64, 17)  # 4 * 17 > 64
    with pytest.raises(ValueError):
        MQARConfig(1024, 128, vocab_size=256)  # more keys than the key range 1..127 holds
    for name in SUBTASKS:
        t, n = parse_subtask(name)
        assert MQARConfig(t, n).name == name


def test_examples_are_pure_functions_of_seed_split_index():
    fetch = example_fetcher(CFG, seed=0, split="train")
    a_in, a_tg = fetch(5)
    b_in, b_tg = fetch(5)
    assert torch.equal(a_in, b_in) and torch.equal(a_tg, b_tg)
    assert a_in.shape == (64,) and int((a_tg != -100).sum()) == CFG.n_kv
    assert not torch.equal(example_fetcher(CFG, 0, "test")(5)[0], a_in)
    assert not torch.equal(example_fetcher(CFG, 1, "train")(5)[0], a_in)


class RecallOracle(torch.nn.Module):
    """Predicts, at a query, the value that followed the same key in the kv region; a uniform
    guess elsewhere. Accuracy on answer positions must be exactly 1."""

    def __init__(self, n_kv: int, vocab_size: int):
        super().__init__()
        self.n_kv, self.vocab_size = n_kv, vocab_size

    def forward(self, tokens: torch.Tensor, lengths=None, scored=None) -> torch.Tensor:
        B, T = tokens.shape  # (B, T) -> (B, T, V), or (n, V) at the `scored` positions
        logits = torch.zeros(B, T, self.vocab_size)
        for b in range(B):
            kv = {int(tokens[b, 2 * i]): int(tokens[b, 2 * i + 1]) for i in range(self.n_kv)}
            for t in range(2 * self.n_kv, T):
                value = kv.get(int(tokens[b, t]))
                if value is not None:
                    logits[b, t, value] = 10.0
        return logits if scored is None else logits[scored]


def test_accuracy_metric_with_an_oracle():
    task = TASKS.get("mqar").obj
    cfg = {"family": "mqar", **task.defaults("tiny")}
    data = task.load("T64_kv4", cfg, seed=0, data_dir=None)
    assert data.vocab_size == cfg["vocab_size"] == 8192 and data.selection_metric == "accuracy"
    out = evaluate_split(RecallOracle(4, data.vocab_size), data, "test", torch.device("cpu"), 8, limit=20)
    # Random fill can repeat a key inside the query region; the oracle then guesses that key's
    # value there too, but only answer positions are scored.
    assert out["accuracy"] == 1.0 and out["n"] == 20 * 4
    assert data.meta["sizes"] == {"train": 2048, "val": 64, "test": 128}


def test_tiny_run_through_the_cli(tmp_path):
    result = CliRunner().invoke(app, [
        "run", "--task", "mqar", "--budget", "tiny", "--models", "transformer", "--out", str(tmp_path),
        "--set", "train.steps=3", "--set", "train.eval_every=3", "--set", "throughput.repeats=1",
        "--set", "throughput.decode_tokens=2", "--set", "eval.test_examples=32", "--no-checkpoints",
    ])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(tmp_path)
    validate_record(rec)
    assert rec["status"] == "ok", rec["reason"]
    test = rec["metrics"]["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and test["n"] == 32 * 4  # answer positions only
    assert rec["data"]["seq_len"] == 64 and rec["subtask"] == "T64_kv4"
    assert rec["arch"]["vocab_size"] == rec["data"]["vocab_size"] == 8192
    assert rec["protocol"]["selection_metric"] == "accuracy"
    assert rec["learning_rate"] == {"lr": 3e-3, "grid": [3e-3], "role": "fixed"}
