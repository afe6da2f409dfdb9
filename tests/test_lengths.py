"""Length generalization in `compare`: curves over test lengths and the effective length."""

from __future__ import annotations

import pytest

from bimix_bench.results.lengths import effective_lengths, length_curves
from tests.test_records import make_record


def rec(model: str, seed: int, by_factor: dict[int, float]) -> dict:
    test = {"accuracy": by_factor[1], "loss": 1.0}
    test.update({f"accuracy_len{f}x": v for f, v in by_factor.items() if f > 1})
    r = make_record(task="mqar", subtask="T64_kv4", model=model, seed=seed, test=test)
    r["arch"] = {**r["arch"], "max_seq_len": 64}
    return r


def test_curves_average_seeds_and_the_effective_length_stops_at_the_first_miss():
    records = [rec("transformer", 0, {1: 1.0, 2: 0.96, 4: 0.5, 8: 0.95}),
               rec("transformer", 1, {1: 1.0, 2: 0.86, 4: 0.5, 8: 0.95}),
               rec("bimix", 0, {1: 0.8, 2: 0.8, 4: 0.8, 8: 0.8})]
    curves = length_curves(records)
    tf = curves[curves["model"] == "transformer"].set_index("length")["mean"].to_dict()
    assert tf == pytest.approx({64: 1.0, 128: 0.91, 256: 0.5, 512: 0.95})
    eff = effective_lengths(curves, 0.9).set_index("model")
    # 0.9 holds at 64 and 128, fails at 256: 512's 0.95 does not count after a miss.
    assert eff.loc["transformer", "effective_length"] == 128
    assert eff.loc["bimix", "effective_length"] == 0  # misses at the training length already
    assert eff.loc["bimix", "tested_up_to"] == 512 and eff.loc["bimix", "trained_at"] == 64


def test_records_without_longer_lengths_give_no_curve():
    plain = make_record(task="mqar", subtask="T64_kv4", test={"accuracy": 0.9, "loss": 0.1})
    assert length_curves([plain]).empty
