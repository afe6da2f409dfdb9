"""`compare`: seed statistics checked by hand, figures relative to the Transformer, the flags
for comparisons that are not like for like, and the files the command writes."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from bimix_bench.cli.app import app, main
from bimix_bench.results.comparison import backend_kind, comparison_frame, record_device
from bimix_bench.results.records import append_record
from tests.test_records import make_record

GPU_ENV = {"python": "3.12", "device_type": "cuda", "packages": {"torch": "2.11"}}


def _speed(value: float, backend: str, method: str) -> dict:
    return {"value": value, "method": method, "backend": backend}


def _rec(model: str, seed: int, acc: float, train: float = 1.0e4, infer: float = 3.0e4,
         params: int = 102_000, backend: str = "torch-reference", method: str = "median of 5, cpu clock",
         **kw) -> dict:
    rec = make_record(model=model, seed=seed, test={"accuracy": acc, "loss": 1.0}, **kw)
    rec["throughput"] = {"train_tokens_per_s": _speed(train, backend, method),
                         "inference_tokens_per_s": _speed(infer, backend, method),
                         "decode_tokens_per_s": None}
    rec["backends"] = {"mixer": backend, "mixer_reason": "test"}
    rec["params"] = {"total": params + 16_000, "non_embedding": params,
                     "target_non_embedding": 100_000, "relative_error": (params - 100_000) / 100_000}
    return rec


@pytest.fixture
def records() -> list[dict]:
    return [
        _rec("transformer", 0, 0.5), _rec("transformer", 1, 0.6), _rec("transformer", 2, 0.7),
        _rec("bimix", 0, 0.6, train=1.8e4, infer=6.0e4), _rec("bimix", 1, 0.7, train=1.8e4, infer=6.0e4),
        make_record(model="bimix", seed=2, status="failed", params=None, arch=None, metrics=None,
                    throughput=None, backends={}),
        _rec("mamba2", 0, 0.55, train=2.0e4, params=110_000),  # +7.8% parameters
    ]


def _row(table: pd.DataFrame, model: str) -> pd.Series:
    return table[table["model"] == model].iloc[0]


def test_quality_mean_and_ci_checked_by_hand(records):
    table, _ = comparison_frame(records)
    tf, bm = _row(table, "transformer"), _row(table, "bimix")
    # transformer: 0.5, 0.6, 0.7 -> mean 0.6, sd 0.1, t_{0.975,2} = 4.302653
    assert tf["mean"] == pytest.approx(0.6)
    assert tf["ci95"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert tf["n_ok"] == 3
    # bimix: 0.6, 0.7 (the failed seed does not count) -> sd 0.0707, t_{0.975,1} = 12.7062
    assert bm["mean"] == pytest.approx(0.65)
    assert bm["ci95"] == pytest.approx(12.7062 * math.sqrt(0.005) / math.sqrt(2), rel=1e-4)
    assert (bm["n_seeds"], bm["n_ok"]) == (3, 2)


def test_figures_relative_to_the_transformer(records):
    table, _ = comparison_frame(records)
    bm = _row(table, "bimix")
    assert bm["train_vs_transformer"] == pytest.approx(1.8)
    assert bm["inference_vs_transformer"] == pytest.approx(2.0)
    assert bm["quality_vs_transformer"] == pytest.approx(0.05)
    assert bm["params_vs_transformer"] == pytest.approx(1.0)
    assert _row(table, "mamba2")["params_vs_transformer"] == pytest.approx(110 / 102)
    assert _row(table, "transformer")["train_vs_transformer"] == pytest.approx(1.0)


def test_flags_failed_runs_and_parameter_mismatch(records):
    table, notes = comparison_frame(records)
    assert "not ok: failed:1" in _row(table, "bimix")["flags"]
    assert "params +7.8% vs transformer" in _row(table, "mamba2")["flags"]
    assert _row(table, "transformer")["flags"] == ""
    assert notes == []  # one budget, one device


def test_flags_fused_gpu_kernels_against_torch_reference_paths():
    records = [
        _rec("transformer", 0, 0.6, backend="sdpa-flash", method="NVIDIA H200, synchronized perf_counter",
             environment=GPU_ENV),
        _rec("bimix", 0, 0.6, backend="dct=chunked,cheb=chunked", method="NVIDIA H200, synchronized perf_counter",
             environment=GPU_ENV),
        _rec("gla", 0, 0.6, backend="fla", method="NVIDIA H200, synchronized perf_counter", environment=GPU_ENV),
    ]
    table, _ = comparison_frame(records)
    kinds = {m: _row(table, m)["backend_kind"] for m in ("transformer", "bimix", "gla")}
    assert kinds == {"transformer": "gpu-fused", "bimix": "gpu-torch", "gla": "gpu-fused"}
    assert "kernels not like for like: gpu-torch" in _row(table, "bimix")["flags"]
    assert _row(table, "gla")["flags"] == ""


def test_flags_cpu_figures_against_gpu_figures_and_mixed_budgets():
    records = [
        _rec("transformer", 0, 0.6, backend="sdpa-flash", method="NVIDIA H200, synchronized perf_counter",
             environment=GPU_ENV),
        _rec("bimix", 0, 0.6, backend="dct=chunked,cheb=chunked", method="CPU, 2 torch threads, perf_counter"),
        _rec("bimix", 0, 0.6, budget="small"),
    ]
    table, notes = comparison_frame(records)
    tiny = table[table["budget"] == "tiny"]
    assert "kernels not like for like: cpu" in _row(tiny, "bimix")["flags"]
    assert any("budgets differ" in n and "small" in n and "tiny" in n for n in notes)
    assert any("different devices (cpu, cuda)" in n for n in notes)
    assert any("tiny" not in n and "no transformer" in n for n in notes)  # the small budget


@pytest.mark.parametrize("backend, device, kind", [
    ("sdpa-flash", "cuda", "gpu-fused"),
    ("sdpa-math", "cuda", "gpu-torch"),
    ("torch-reference", "cuda", "gpu-torch"),
    ("dct=fla,cheb=triton", "cuda", "gpu-fused"),
    ("dct=fla,cheb=chunked", "cuda", "gpu-mixed"),
    ("chunked", "cpu", "cpu"),
    ("sdpa-cpu", "cpu", "cpu"),
])
def test_backend_kind(backend, device, kind):
    assert backend_kind(backend, device) == kind


def test_record_device_prefers_the_measurement_over_the_environment():
    cpu_on_gpu_machine = _rec("transformer", 0, 0.5, method="CPU, 2 torch threads, perf_counter",
                              environment=GPU_ENV)
    assert record_device(cpu_on_gpu_machine) == "cpu"
    gpu = _rec("transformer", 0, 0.5, method="NVIDIA H200, synchronized perf_counter", environment=GPU_ENV)
    assert record_device(gpu) == "cuda"


def test_speeds_from_another_processor_are_flagged_and_not_related():
    """Two CPUs of different makes: the quality row stays, the speed ratio goes, a flag says why."""
    xeon = {"python": "3.11", "device_type": "cpu", "cpu": "Intel Xeon", "devices": ["Intel Xeon"]}
    epyc = {**xeon, "cpu": "AMD EPYC", "devices": ["AMD EPYC"]}
    records = [_rec("transformer", 0, 0.5, environment=xeon),
               _rec("bimix", 0, 0.6, train=2.0e4, environment=xeon),
               _rec("mamba2", 0, 0.4, train=3.0e4, environment=epyc)]
    table, _ = comparison_frame(records)
    bimix, mamba = _row(table, "bimix"), _row(table, "mamba2")
    assert bimix["train_vs_transformer"] == pytest.approx(2.0) and bimix["flags"] == ""
    assert math.isnan(mamba["train_vs_transformer"])
    assert math.isnan(mamba["inference_vs_transformer"])
    assert mamba["params_vs_transformer"] == pytest.approx(1.0)
    assert mamba["processor"] == "AMD EPYC"
    flag = "speeds from another processor (AMD EPYC) than transformer's (Intel Xeon)"
    assert flag in mamba["flags"]


def test_a_row_names_the_processor_of_the_records_it_counts():
    """A seed run again on another machine: the later record is the one counted, so the row's
    processor (and with it the speed ratio) is the later record's, not both machines'."""
    xeon = {"python": "3.11", "device_type": "cpu", "cpu": "Intel Xeon", "devices": ["Intel Xeon"]}
    epyc = {**xeon, "cpu": "AMD EPYC", "devices": ["AMD EPYC"]}
    records = [_rec("transformer", 0, 0.5, environment=epyc),
               _rec("mamba2", 0, 0.4, train=3.0e3, environment=xeon, created_at="2026-01-01T00:00:00"),
               _rec("mamba2", 0, 0.4, train=2.0e4, environment=epyc, created_at="2026-02-01T00:00:00")]
    table, notes = comparison_frame(records)
    mamba = _row(table, "mamba2")
    assert any("2 records of the same seed" in n for n in notes)
    assert mamba["processor"] == "AMD EPYC" and mamba["flags"] == ""
    assert mamba["train_vs_transformer"] == pytest.approx(2.0)


def test_compare_command_writes_markdown_csv_json_and_plots(records, tmp_path):
    run = tmp_path / "run"
    for rec in records:
        append_record(run, rec)
    md, csv, js, plots = tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.json", tmp_path / "plots"
    result = CliRunner().invoke(app, ["compare", str(run), "--markdown", str(md), "--csv", str(csv),
                                      "--json", str(js), "--plot", str(plots)])
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert "0.6 ± 0.25 (n=3)" in text and "18,000 (1.80x)" in text and "params +7.8%" in text
    frame = pd.read_csv(csv)
    assert frame.loc[frame["model"] == "bimix", "train_vs_transformer"].item() == pytest.approx(1.8)
    data = json.loads(js.read_text())
    assert {r["model"] for r in data["rows"]} == {"transformer", "bimix", "mamba2"}
    png = plots / "quality_vs_throughput_lra_listops_tiny.png"
    assert png.exists() and png.stat().st_size > 0


def test_compare_refuses_a_folder_without_records(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "no records in" in capsys.readouterr().err


def test_a_folder_of_run_folders_reads_as_all_of_them(records, tmp_path):
    """Side-by-side training leaves one run folder per model inside one folder."""
    group = tmp_path / "group"
    for rec in records:
        append_record(group / rec["model"], rec)
    (group / "plots").mkdir()  # a folder without records inside the group is not a run
    (group / "compare.md").write_text("| a table |\n")  # nor is a file
    by_group, by_runs = tmp_path / "group.md", tmp_path / "runs.md"
    assert main(["compare", str(group), "--markdown", str(by_group)]) == 0
    runs = sorted(str(p) for p in group.iterdir() if (p / "records.jsonl").is_file())
    assert len(runs) == 3 and main(["compare", *runs, "--markdown", str(by_runs)]) == 0
    assert by_group.read_text() == by_runs.read_text() and "0.6 ± 0.25 (n=3)" in by_group.read_text()


def test_runs_under_different_step_caps_are_different_cells():
    """A run under an older, shorter protocol is not more seeds (or a rival grid cell) of the
    current one: each cap gets its own rows, and the cap is named only where caps differ."""
    from bimix_bench.results.records import protocols_apart

    def capped(seed: int, acc: float, cap: int) -> dict:
        rec = _rec("transformer", seed, acc)
        rec["protocol"] = {**(rec.get("protocol") or {}), "planned_steps": cap}
        return rec

    mixed = [capped(0, 0.3, 1000), capped(1, 0.4, 1000), capped(0, 0.9, 2000)]
    table, _ = comparison_frame(protocols_apart(mixed))
    rows = {row["budget"]: row for _, row in table.iterrows()}
    assert set(rows) == {"tiny (1,000-step cap)", "tiny (2,000-step cap)"}
    assert rows["tiny (1,000-step cap)"]["n_ok"] == 2 and rows["tiny (2,000-step cap)"]["mean"] == 0.9
    alike = [capped(0, 0.3, 2000), capped(1, 0.4, 2000)]
    assert protocols_apart(alike) == alike
    uncapped = dict(_rec("transformer", 2, 0.5), protocol=None, status="failed")  # before training
    assert protocols_apart([*alike, uncapped]) == [*alike, uncapped]


def test_a_record_older_than_its_protocol_field_is_capped_by_its_config():
    """Records written before `protocol` was recorded ran their config's steps: a later run of
    the same cell under a longer cap is another protocol, not a newer copy of that seed."""
    from bimix_bench.results.records import protocols_apart

    def old(seed: int, steps: int) -> dict:
        rec = dict(_rec("transformer", seed, 0.5), protocol=None)
        rec["config"] = {**rec["config"], "train": {"steps": steps}}
        return rec

    probe = _rec("transformer", 0, 0.9)
    probe["protocol"] = {**(probe.get("protocol") or {}), "planned_steps": 4000}
    table, notes = comparison_frame(protocols_apart([old(0, 800), old(1, 800), probe]))
    rows = {row["budget"]: row for _, row in table.iterrows()}
    assert set(rows) == {"tiny (800-step cap)", "tiny (4,000-step cap)"}
    assert rows["tiny (800-step cap)"]["n_ok"] == 2 and rows["tiny (4,000-step cap)"]["mean"] == 0.9
    assert not [n for n in notes if "same seed" in n]
    assert protocols_apart([old(0, 800), old(1, 800)]) == [old(0, 800), old(1, 800)]


def test_runs_under_different_batches_are_different_cells():
    """Sequences per step are part of the protocol too: a run with a smaller batch is neither
    more seeds nor a rival grid cell of the budget's own, and a cap that differs as well is
    named beside it."""
    from bimix_bench.results.records import protocols_apart

    def trained(seed: int, acc: float, sequences: int, cap: int = 2000) -> dict:
        rec = _rec("transformer", seed, acc)
        rec["protocol"] = {**(rec.get("protocol") or {}), "planned_steps": cap}
        rec["config"] = {**rec["config"], "train": {"batch_tokens": 32768,
                                                    "batch_sequences": sequences}}
        return rec

    mixed = [trained(0, 0.99, 0), trained(1, 0.98, 0), trained(0, 0.3, 32)]
    rows = {row["budget"]: row for _, row in comparison_frame(protocols_apart(mixed))[0].iterrows()}
    assert set(rows) == {"tiny (64 sequences per step)", "tiny (32 sequences per step)"}
    assert rows["tiny (64 sequences per step)"]["n_ok"] == 2
    both = protocols_apart([trained(0, 0.99, 0), trained(0, 0.3, 32, cap=4000)])
    assert [r["budget"] for r in both] == ["tiny (2,000-step cap, 64 sequences per step)",
                                           "tiny (4,000-step cap, 32 sequences per step)"]


def test_a_batch_in_tokens_and_the_same_batch_in_sequences_are_one_cell():
    """The budget's 32,768 tokens per step over 512-token sequences and a protocol's 64
    sequences per step are the same batch: the seeds pool; without the context the record
    keeps its tokens."""
    from bimix_bench.results.records import protocols_apart

    def trained(seed: int, sequences: int) -> dict:
        rec = _rec("transformer", seed, 0.9)
        rec["config"] = {**rec["config"], "train": {"batch_tokens": 32768,
                                                    "batch_sequences": sequences}}
        return rec

    pooled = protocols_apart([trained(0, 0), trained(1, 64), trained(2, 64)])
    table = comparison_frame(pooled)[0]
    assert list(table["budget"]) == ["tiny"] and int(table.iloc[0]["n_ok"]) == 3
    contextless = {**trained(0, 0), "arch": {}}
    apart = protocols_apart([contextless, trained(1, 64)])
    assert [r["budget"] for r in apart] == ["tiny (32,768 tokens per step)",
                                            "tiny (64 sequences per step)"]


def test_runs_with_different_loss_targets_are_different_cells():
    """Multi-document QA's loss on the answer and on the whole sequence are two protocols: the
    same seed under each is two cells, not one counted once."""
    from bimix_bench.results.records import protocols_apart

    def trained(targets: str, acc: float) -> dict:
        rec = _rec("transformer", 0, acc)
        rec["data"] = {**(rec.get("data") or {}), "train_targets": targets}
        return rec

    rows = {row["budget"]: row for _, row in comparison_frame(
        protocols_apart([trained("answer", 0.6), trained("sequence", 0.0)]))[0].iterrows()}
    assert set(rows) == {"tiny (loss on the answer)", "tiny (loss on the sequence)"}
    assert rows["tiny (loss on the answer)"]["mean"] == pytest.approx(0.6)


def test_runs_of_a_different_backbone_are_different_cells():
    """A --set of the budget's heads, depth or parameter target makes another model size: its
    seed is not another seed of the budget's run (nor, same seed, a copy to be dropped). The
    head count each model was sized to (rec["arch"]) may differ by model and splits nothing."""
    from bimix_bench.results.records import protocols_apart
    from bimix_bench.results.comparison import terminal_view, display_frame

    def sized(model: str, acc: float, heads: int, own_heads: int | None = None,
              layers: int = 2, params: int = 100_000) -> dict:
        rec = _rec(model, 0, acc)
        rec["config"] = {**rec["config"], "arch": {"n_layers": layers, "n_heads": heads},
                         "params": {"non_embedding": params}}
        rec["arch"] = {**(rec.get("arch") or {}), "n_heads": own_heads or heads}
        return rec

    run = [sized("transformer", 0.0, 1), sized("mamba2", 0.0, 1, own_heads=4)]
    assert protocols_apart(run) == run  # one backbone asked for: nothing to name
    table, _ = comparison_frame(protocols_apart([*run, sized("transformer", 1.0, 2)]))
    rows = {(r["model"], r["budget"]): r for _, r in table.iterrows()}
    assert set(rows) == {("transformer", "tiny (1 head)"), ("mamba2", "tiny (1 head)"),
                         ("transformer", "tiny (2 heads)")}
    assert rows[("transformer", "tiny (1 head)")]["mean"] == 0.0
    assert rows[("transformer", "tiny (2 heads)")]["mean"] == 1.0
    deeper = protocols_apart([run[0], sized("transformer", 0.5, 1, layers=4, params=200_000)])
    assert [r["budget"] for r in deeper] == [
        "tiny (2 layers, 100,000 non-embedding parameters)",
        "tiny (4 layers, 200,000 non-embedding parameters)"]
    # Below the terminal table, a flag line names the budget of its cell where budgets differ.
    _, lines = terminal_view(table, display_frame(table))
    assert any(line.startswith("lra/listops at tiny (1 head)") for line in lines), lines


def test_the_same_seed_from_two_folders_counts_once():
    """Comparing a run folder with a copy of itself must not double n or narrow the interval."""
    once = [_rec("transformer", s, acc) for s, acc in ((0, 0.5), (1, 0.7))]
    twice = once + [dict(r, created_at="2025-01-02T00:00:00+00:00") for r in once]
    single, _ = comparison_frame(once)
    doubled, notes = comparison_frame(twice)
    for column in ("n_seeds", "n_ok", "mean", "ci95"):
        assert doubled.iloc[0][column] == pytest.approx(single.iloc[0][column])
    assert doubled.iloc[0]["n_ok"] == 2
    assert any("2 records of the same seed, counted once" in n for n in notes)


def test_compare_reads_at_80_columns(tmp_path, records):
    """Names are never broken, skipped rows and flags go below the table, every line fits."""
    import subprocess
    import sys

    run = tmp_path / "run"
    for rec in records + [make_record(model="gla", subtask="text", status="skipped", params=None,
                                      arch=None, metrics=None, throughput=None, backends={})]:
        append_record(run, rec)
    done = subprocess.run([sys.executable, "-m", "bimix_bench", "compare", str(run)],
                          capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    table_rows = [line for line in lines if line.startswith("│")]
    assert any("transformer" in row for row in table_rows)
    assert all("transfor" not in row or "transformer" in row for row in table_rows)  # not broken
    assert not any("lra/text" in row for row in table_rows)  # the skipped cell is a line below
    assert any("rows without a result" in line and "lra/text" in line for line in lines)
    assert any("params +7.8% vs transformer" in line for line in lines if not line.startswith("│"))


def test_a_variant_is_its_own_row_not_more_seeds_of_the_model(tmp_path):
    """multistate with pattern=sqrt (or a BiMix ablation) in a second folder: its seeds are
    not pooled with the default model's, and the table names the variant."""
    default, variant = tmp_path / "pow2", tmp_path / "sqrt"
    for seed, acc in ((0, 0.5), (1, 0.7)):
        append_record(default, _rec("multistate", seed, acc))
        append_record(variant, dict(_rec("multistate", seed, acc - 0.2), variant="pattern=sqrt"))
    for seed in (0, 1):
        append_record(default, _rec("transformer", seed, 0.9))
    out = tmp_path / "t.json"
    result = CliRunner().invoke(app, ["compare", str(default), str(variant), "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"transformer", "multistate", "multistate[pattern=sqrt]"}
    assert rows["multistate"]["n_ok"] == 2 and rows["multistate[pattern=sqrt]"]["n_ok"] == 2
    assert rows["multistate[pattern=sqrt]"]["mean"] == pytest.approx(0.4)
    assert "multistate[pattern=sqrt]" in result.output  # printed as is, not read as Rich markup


def test_model_variant_names_the_options_set_away_from_the_defaults():
    from bimix_bench.results.records import model_variant

    defaults = {"pattern": "pow2", "backend": "auto", "conv_width": 4}
    assert model_variant(dict(defaults), defaults) is None
    assert model_variant({**defaults, "pattern": "sqrt", "conv_width": 2}, defaults) == "conv_width=2,pattern=sqrt"


def test_seeds_at_different_fixed_rates_are_flagged():
    """Two fixed-rate probes of one protocol pool as seeds of one cell; the row says so."""
    records = [_rec("transformer", 0, 0.6, config={"train": {"lr": 4.6e-4}}),
               _rec("transformer", 1, 0.0, config={"train": {"lr": 1e-3}}),
               _rec("bimix", 0, 0.5, config={"train": {"lr": 4.6e-4}}),
               _rec("bimix", 1, 0.5, config={"train": {"lr": 4.6e-4}})]
    table, _ = comparison_frame(records)
    assert "seeds trained at different rates (0.00046, 0.001)" in _row(table, "transformer")["flags"]
    assert "different rates" not in _row(table, "bimix")["flags"]


def test_fixed_rate_runs_sharing_a_seed_are_chosen_among_on_validation():
    """Probes at two rates with seed 0 in common: the rate with the better seed-0 validation
    counts (as a grid's choice would), whatever the test split says; the other is left out."""
    def probe(seed: int, lr: float, val: float, test: float) -> dict:
        rec = _rec("transformer", seed, test, config={"train": {"lr": lr}})
        rec["metrics"]["val"] = {"accuracy": val, "loss": 1.0}
        return rec

    records = [probe(0, 4.6e-4, val=0.7, test=0.6), probe(1, 4.6e-4, val=0.9, test=0.9),
               probe(0, 1e-3, val=0.2, test=0.95)]  # the best test score is at the worse rate
    table, notes = comparison_frame(records)
    row = _row(table, "transformer")
    assert row["n_ok"] == 2 and row["mean"] == pytest.approx(0.75)
    assert "different rates" not in row["flags"]
    assert any("fixed-rate runs at 0.00046, 0.001; 0.00046 counted, chosen on seed 0's "
               "validation" in note for note in notes)
