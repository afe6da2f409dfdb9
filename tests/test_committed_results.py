"""The committed result folders are what results/README.md says: every record is valid, and the
`bimix-bench compare` lines it lists reproduce each folder's compare.md from the records."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from bimix_bench.cli.app import main
from bimix_bench.results.records import read_records, run_folders

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "results" / "README.md"


def _compare_args() -> list[list[str]]:
    """The arguments of each `bimix-bench compare` line of the README."""
    return [shlex.split(line)[2:] for line in README.read_text().splitlines()
            if line.startswith("bimix-bench compare ")]


def _folders(args: list[str]) -> list[str]:
    """The run folders among a line's arguments (speed documents and options left out)."""
    first_option = next((i for i, a in enumerate(args) if a.startswith("--")), len(args))
    return [a for a in args[:first_option] if "*" not in a and not a.endswith(".json")]


def compare_lines() -> list[list[str]]:
    """Run folders of each plain compare line (one per folder group, with its compare.md)."""
    lines = []
    for args in _compare_args():
        folders = _folders(args)
        if folders and "--versus" not in args and folders not in lines:
            lines.append(folders)
    return lines


def versus_lines() -> list[tuple[list[str], str, str]]:
    """(folders, model, markdown file) of each `compare --versus` line."""
    return [(_folders(args), args[args.index("--versus") + 1], args[args.index("--markdown") + 1])
            for args in _compare_args() if "--versus" in args]


LINES = compare_lines()
VERSUS = versus_lines()


def _runs(folders) -> set[str]:
    """The run folders named by a line (a group folder stands for each run folder inside it),
    relative to the repository."""
    return {str(run.relative_to(ROOT)) for folder in folders for run in run_folders(ROOT / folder)}


def test_every_committed_run_folder_is_listed():
    listed = _runs(f for folders in LINES for f in folders)
    on_disk = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "results").rglob("records.jsonl")}
    assert on_disk and listed == on_disk


@pytest.mark.parametrize("folders", LINES, ids=lambda f: "+".join(Path(x).name for x in f))
def test_compare_reproduces_compare_md(folders, tmp_path, monkeypatch):
    """Each folder of the line that keeps a compare.md (the first always does) holds exactly
    what the line writes."""
    monkeypatch.chdir(ROOT)  # the markdown names folders as the README does
    for run in _runs(folders):
        assert read_records(ROOT / run)  # parses and validates every record
    out = tmp_path / "compare.md"
    assert main(["compare", *folders, "--markdown", str(out)]) == 0
    assert (ROOT / folders[0] / "compare.md").is_file(), folders[0]
    for folder in folders:
        if (ROOT / folder / "compare.md").is_file():
            assert (ROOT / folder / "compare.md").read_text() == out.read_text(), folder


def test_readme_names_only_existing_plots():
    names = set(re.findall(r"gpu/plots/[\w.-]+\.png", README.read_text()))
    assert names and all((ROOT / "results" / n).is_file() for n in names)


def _cells(runs: set[str]) -> set[tuple]:
    """(task, subtask, budget, model, variant, seed, learning rate) of every record of `runs`."""
    return {(r["task"], r["subtask"], r["budget"], r["model"], r.get("variant"), r["seed"],
             (r.get("learning_rate") or {}).get("lr"))
            for run in runs for r in read_records(ROOT / run)}


def test_readme_sets_bimix_against_every_folder():
    """Every folder is on the `--versus` line, but for one that only repeats cells the line
    already holds (a re-run on another processor, say): its repeats would displace the line's
    records of those seeds and say nothing new about BiMix."""
    assert VERSUS, "results/README.md has no `compare --versus` line"
    listed = _runs(f for folders in LINES for f in folders)
    for folders, model, _ in VERSUS:
        assert model == "bimix"
        on_line = _runs(folders)
        assert on_line <= listed
        for run in listed - on_line:
            missing = _cells({run}) - _cells(on_line)
            assert not missing, f"{run} is not on the --versus line and adds cells: {missing}"


@pytest.mark.parametrize("folders,model,markdown", VERSUS, ids=lambda v: str(v)[-40:])
def test_compare_versus_reproduces_its_markdown(folders, model, markdown, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "versus.md"
    assert main(["compare", *folders, "--versus", model, "--markdown", str(out)]) == 0
    assert (ROOT / markdown).read_text() == out.read_text()


def test_readme_holds_the_host_share_table_of_its_documents():
    """The host-share table is scripts/host_share.py --table over the committed processes."""
    from bimix_bench.speed.host_share import markdown_table

    paths = sorted((ROOT / "results" / "gpu" / "host_share").glob("process*.json"))
    assert len(paths) == 6
    table = markdown_table([json.loads(path.read_text()) for path in paths])
    assert table in README.read_text()


def test_the_small_budget_verdicts_on_the_committed_folders():
    """What the small-budget GPU folders can tell apart: Pathfinder, Path-X, multi-document QA
    (its four subtasks under the shared protocol, and the single needle under the 4,000-step
    candidate, results/gpu/multidoc_small_transformer) and MQAR at 512 and 1K are flagged
    uninformative; ListOps' anchor is reproduced, and MQAR's
    at (64, 4) on Zoology's protocol; Pathfinder's, and MQAR's at (256, 16) on the old protocol,
    are not (docs/protocols.md)."""
    from bimix_bench.results.comparison import comparison_frame
    from bimix_bench.results.tables import records_frame
    from bimix_bench.results.verdicts import anchor_lines

    records = [r for p in sorted((ROOT / "results" / "gpu").glob("*/records.jsonl"))
               for r in read_records(p.parent)]
    table, _ = comparison_frame(records)
    informative = {(t, s): bool(v) for (t, s), v in
                   table.groupby(["task", "subtask"])["informative"].first().items()}
    assert {k for k, v in informative.items() if not v} == {
        ("lra", "pathfinder"), ("lra", "pathx"), ("mqar", "T512_kv32"), ("mqar", "T1024_kv64"),
        ("multidoc_qa", "bridge"), ("multidoc_qa", "multikey_needle"),
        ("multidoc_qa", "multivalue"), ("multidoc_qa", "variable_tracking"),
        ("multidoc_qa", "single_needle_noise")}  # the 4,000-step candidate's grid (its README)
    assert informative[("mqar", "T256_kv16")] and informative[("lra", "listops")]
    assert informative[("mqar", "T64_kv4")]
    status = {(l.task, l.anchor.subtask): l.status for l in anchor_lines(records, records_frame(records))}
    assert status == {("lra", "listops"): "reproduced", ("lra", "pathfinder"): "not reproduced",
                      ("mqar", "T256_kv16"): "not reproduced", ("mqar", "T64_kv4"): "reproduced"}
