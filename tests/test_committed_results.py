"""The committed result folders are what results/README.md says: every record is valid, and the
`bimix-bench compare` lines it lists reproduce each folder's compare.md from the records."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bimix_bench.cli.app import main
from bimix_bench.results.records import read_records

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "results" / "README.md"


def compare_lines() -> list[list[str]]:
    """Run folders named by each `bimix-bench compare` line of the README (speed documents and
    options left out)."""
    lines = []
    for line in README.read_text().splitlines():
        if not line.startswith("bimix-bench compare "):
            continue
        args = shlex.split(line)[2:]
        folders = [a for a in args[:args.index("--plot")] if "*" not in a and not a.endswith(".json")]
        if folders and folders not in lines:
            lines.append(folders)
    return lines


LINES = compare_lines()


def test_every_committed_run_folder_is_listed():
    listed = {f for folders in LINES for f in folders}
    on_disk = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "results").glob("*/*/records.jsonl")}
    assert on_disk and listed == on_disk


@pytest.mark.parametrize("folders", LINES, ids=lambda f: "+".join(Path(x).name for x in f))
def test_compare_reproduces_compare_md(folders, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the markdown names folders as the README does
    for folder in folders:
        assert read_records(ROOT / folder)  # parses and validates every record
    out = tmp_path / "compare.md"
    assert main(["compare", *folders, "--markdown", str(out)]) == 0
    for folder in folders:
        assert (ROOT / folder / "compare.md").read_text() == out.read_text(), folder


def test_readme_names_only_existing_plots():
    names = set(re.findall(r"gpu/plots/[\w.-]+\.png", README.read_text()))
    assert names and all((ROOT / "results" / n).is_file() for n in names)
