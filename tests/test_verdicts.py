"""Chance levels, published anchors and the uninformative flag: what `compare` says a table
can and cannot tell apart. Hand-made records test each verdict both ways."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.registry import TASKS
from bimix_bench.results.comparison import comparison_frame
from bimix_bench.results.records import append_record
from bimix_bench.results.tables import records_frame
from bimix_bench.results.verdicts import anchor_lines
from tests.test_records import make_record


def mqar(model: str, seed: int, acc: float, subtask: str = "T64_kv4", budget: str = "cpu",
         n: int = 12000) -> dict:
    return make_record(task="mqar", subtask=subtask, model=model, seed=seed, budget=budget,
                       test={"accuracy": acc, "loss": 1.0, "n": n})


def test_every_family_declares_a_chance_level_for_its_offline_subtasks():
    offline = {"lra": ["listops", "pathfinder", "pathx"], "mqar": ["T64_kv4", "T1024_kv64"],
               "long_code": ["python_stdlib"],
               "multidoc_qa": ["multikey_needle", "multivalue", "variable_tracking", "bridge"]}
    for family, subtasks in offline.items():
        for sub in subtasks:
            assert TASKS.get(family).obj.chance(sub, {}) is not None, (family, sub)
    assert TASKS.get("mqar").obj.chance("T128_kv8", {}).value == pytest.approx(1 / 8)
    listops = TASKS.get("lra").obj.chance("listops", {"test_majority_share": 0.17})
    assert listops.value == 0.17 and "majority" in listops.basis
    assert TASKS.get("lra").obj.chance("pathfinder", {}).value == 0.5


def test_anchors_name_their_source_and_threshold():
    anchors = TASKS.get("mqar").obj.anchors() + TASKS.get("lra").obj.anchors()
    assert {a.subtask for a in anchors} >= {"T64_kv4", "T128_kv8", "T256_kv16", "listops", "pathfinder"}
    for a in anchors:
        assert a.source and a.model == "transformer" and a.reproduced_at <= a.published


def test_a_cell_where_no_model_clears_chance_is_flagged_uninformative():
    # 1/4 = 0.25 is chance at T64_kv4; three seeds each, intervals around the means.
    flat = [mqar("transformer", s, v) for s, v in enumerate((0.25, 0.26, 0.24))]
    flat += [mqar("bimix", s, v) for s, v in enumerate((0.27, 0.25, 0.26))]
    table, _ = comparison_frame(flat)
    assert not table["informative"].any() and not table["above_chance"].any()
    assert all("uninformative" in f for f in table["flags"])
    learned = flat[:3] + [mqar("bimix", s, v) for s, v in enumerate((0.90, 0.92, 0.91))]
    table, _ = comparison_frame(learned)
    assert table["informative"].all()
    assert table.set_index("model")["above_chance"].to_dict() == {"bimix": True, "transformer": False}
    assert not any("uninformative" in f for f in table["flags"])


def test_a_tiny_gain_over_chance_is_not_enough_even_when_significant():
    # 0.036 against 1/32 with 96,000 queries is many standard errors above, yet no recall.
    records = [mqar("transformer", s, 0.036 + 0.0005 * s, subtask="T512_kv32", budget="small", n=96000)
               for s in range(3)]
    table, _ = comparison_frame(records)
    assert table["informative"].tolist() == [False]


def test_one_seed_must_clear_the_binomial_noise_of_its_test_set():
    few = comparison_frame([mqar("transformer", 0, 0.40, n=20)])[0]  # 0.40 vs 0.25 on 20 items
    many = comparison_frame([mqar("transformer", 0, 0.40, n=4000)])[0]
    assert few["above_chance"].tolist() == [False] and many["above_chance"].tolist() == [True]


def test_anchor_reproduced_only_when_every_seed_reaches_it():
    good = [mqar("transformer", s, v) for s, v in enumerate((0.99, 0.97, 0.96))]
    lines = {l.anchor.subtask: l for l in anchor_lines(good, records_frame(good))}
    assert lines["T64_kv4"].status == "reproduced"
    one_bad = good[:2] + [mqar("transformer", 2, 0.90)]
    lines = {l.anchor.subtask: l for l in anchor_lines(one_bad, records_frame(one_bad))}
    assert lines["T64_kv4"].status == "not reproduced"
    failed = good[:2] + [make_record(task="mqar", subtask="T64_kv4", seed=2, budget="cpu", status="diverged")]
    lines = {l.anchor.subtask: l for l in anchor_lines(failed, records_frame(failed))}
    assert lines["T64_kv4"].status == "not reproduced"  # a seed that did not finish does not pass
    other = [mqar("bimix", 0, 0.99)]
    lines = {l.anchor.subtask: l for l in anchor_lines(other, records_frame(other))}
    assert lines["T64_kv4"].status == "not run"


def test_anchor_is_judged_in_each_protocol_of_its_budget():
    """Where protocols_apart names a step cap in the budget label ("small (800-step cap)"), an
    anchor declared for budget small (LRA's ListOps) still applies to each of those cells."""
    from bimix_bench.results.records import protocols_apart

    def listops(seed: int, acc: float, cap: int) -> dict:
        rec = make_record(task="lra", subtask="listops", model="transformer", seed=seed,
                          budget="small", test={"accuracy": acc, "loss": 1.0, "n": 2000})
        rec["protocol"] = {**(rec.get("protocol") or {}), "planned_steps": cap}
        return rec

    records = protocols_apart([listops(0, 0.20, 800), listops(0, 0.36, 4000)])
    lines = {l.budget: l.status for l in anchor_lines(records, records_frame(records))
             if l.anchor.subtask == "listops"}
    assert lines == {"small (800-step cap)": "not reproduced",
                     "small (4,000-step cap)": "reproduced"}


def test_compare_prints_and_writes_the_verdicts(tmp_path):
    run = tmp_path / "run"
    for rec in [mqar("transformer", s, v) for s, v in enumerate((0.99, 0.98, 0.97))] + \
               [mqar("bimix", s, 0.25) for s in range(3)]:
        append_record(run, rec)
    md, js = tmp_path / "t.md", tmp_path / "t.json"
    out = CliRunner().invoke(app, ["compare", str(run), "--markdown", str(md), "--json", str(js)],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "mqar/T64_kv4 (cpu): reference reproduced: transformer accuracy 0.99, 0.98, 0.97" in out.output
    assert "reference reproduced" in md.read_text()
    doc = json.loads(js.read_text())
    assert doc["anchors"][0]["status"] == "reproduced"
    rows = {r["model"]: r for r in doc["rows"]}
    assert rows["transformer"]["above_chance"] is True and rows["bimix"]["above_chance"] is False
    assert rows["bimix"]["informative"] is True and rows["bimix"]["chance"] == 0.25
