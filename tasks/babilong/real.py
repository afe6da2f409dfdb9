"""BABILong's published data (Kuratov et al. 2024), the subtasks release_qa1 ... release_qa5.

The Hugging Face data set RMT-team/babilong has one configuration per context length ("0k",
"1k", "2k", ... in LLM tokens, about four bytes each) and one split per task (qa1, qa2, ...);
each row has `input` (PG19 background with the story's facts), `question` and `target` (the
answer word). It is read from --data-dir/babilong/data/<qa>/<length>.json (the repository's
own layout; JSON lines or one JSON list), or streamed from the hub with
task.release.from_hub=true.

BABILong is an evaluation set (100 rows per task and length), so train / val / test are carved
from the rows by a hash of question and input (scores are then not comparable with BABILong's
zero-shot leaderboard). A row is laid out like a generated one (haystack.py): BOS input SEP
question SEP | target EOS. Rows longer than the prompt room are skipped and counted, never
cut: a cut could remove a fact the answer needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from bimix_bench.errors import SkipCell
from bimix_bench.tasks.babilong.haystack import BabiExample
from bimix_bench.tasks.long_code.sources import unit_hash
from bimix_bench.tasks.multidoc_qa.layout import build_prompt, to_example

SPLITS = ("train", "val", "test")


def find_release_file(qa: str, length: str, data_dir: Path | None) -> Path | None:
    if data_dir is None:
        return None
    for root in (data_dir / "babilong", data_dir):
        path = root / "data" / qa / f"{length}.json"
        if path.is_file():
            return path
    return None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a release file: one JSON list, or one JSON object per line."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path.name}:{line_no}: not JSON ({err.msg})") from None
    return rows


def release_rows(qa: str, cfg: dict[str, Any], data_dir: Path | None) -> tuple[Iterable[dict], str]:
    length = str(cfg["length"])
    path = find_release_file(qa, length, data_dir)
    if path is not None:
        return read_rows(path), f"BABILong {qa} at {length} (local file data/{qa}/{path.name})"
    how_to = (f"download data/{qa}/{length}.json of Hugging Face {cfg['hub_id']} so that "
              f"--data-dir/babilong/data/{qa}/{length}.json exists, or set task.release.from_hub=true "
              f"with network access")
    if not cfg["from_hub"]:
        raise SkipCell(f"BABILong {qa} at {length} not found; {how_to}")
    try:
        from datasets import load_dataset

        rows = load_dataset(cfg["hub_id"], length, split=qa, streaming=True)
    except Exception as err:  # offline, moved repository, missing package ...
        raise SkipCell(f"cannot open {cfg['hub_id']!r} from the hub ({type(err).__name__}: {err}); "
                       f"{how_to}") from None
    return rows, f"BABILong {qa} at {length}, hub {cfg['hub_id']}"


def release_example(row: dict[str, Any]) -> BabiExample:
    layout = build_prompt([row["input"].encode("utf-8")], row["question"].encode("utf-8"))
    return BabiExample(to_example(layout, (row["target"],), None), row["question"])


def load_release(qa: str, cfg: dict[str, Any], sizes: dict[str, int], prompt_len: int,
                 data_dir: Path | None) -> tuple[dict[str, list[BabiExample]], dict[str, Any]]:
    rows, origin = release_rows(qa, cfg, data_dir)
    train_fraction, val_fraction = float(cfg["train_fraction"]), float(cfg["val_fraction"])
    splits: dict[str, list[BabiExample]] = {s: [] for s in SPLITS}
    n_rows = too_long = 0
    for row in rows:
        u = unit_hash(f"{row['question']}\n{row['input']}")
        split = "train" if u < train_fraction else "val" if u < train_fraction + val_fraction else "test"
        if len(splits[split]) >= sizes[split]:
            continue
        n_rows += 1
        example = release_example(row)
        if len(example.qa.prompt) > prompt_len:
            too_long += 1
            continue
        splits[split].append(example)
    meta = {"source": origin, "rows": n_rows, "too_long_skipped": too_long,
            "split_rule": f"carved from the rows by sha256 of question and input (train {train_fraction}, "
                          f"val {val_fraction}, test the rest)",
            "note": "BABILong is an evaluation set; scores are not comparable with its zero-shot leaderboard"}
    return splits, meta
