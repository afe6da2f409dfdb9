"""Real multi-document QA data: HotpotQA's distractor setting and LongBench's multi-document
subsets, turned into the prompt layout of layout.py.

HotpotQA (Yang et al. 2018), distractor setting: each question comes with ten Wikipedia
paragraphs (two gold, eight distractors) and its supporting facts (title, sentence index).
Read from the Hugging Face parquet release (columns id, question, answer, context {title,
sentences}, supporting_facts {title, sent_id}) or the original JSON release (lists of
[title, sentences] and [title, sent_id]) under --data-dir/hotpot_qa, or streamed from the hub.
A paragraph becomes the document "<title>\\n<sentences>". Train comes from HotpotQA's train
split; val and test from its validation split, divided by a hash of the question id. Evidence
depth is that of the earliest supporting sentence.
When the prompt is too long for the context, distractor paragraphs are dropped from the end,
then the remaining paragraphs are cut proportionally from their ends.

LongBench (Bai et al. 2024) hotpotqa / 2wikimqa / musique: jsonl rows with input (question),
context ("Passage 1:\\n..."), answers (list), _id, ... from --data-dir/LongBench/data/<name>.jsonl.
Passages become documents. LongBench ships a test set only, so train / val / test are carved
from it by a hash of _id (scores are then not comparable with LongBench's zero-shot
leaderboard). Over-long prompts lose the middle of their documents, as LongBench truncates.
Evidence positions are not annotated: depth is unknown.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from bimix_bench.errors import SkipCell
from bimix_bench.tasks.long_code.sources import unit_hash
from bimix_bench.tasks.multidoc_qa.layout import QAExample, build_prompt, prompt_overhead, to_example

LONGBENCH_SUBSETS = {"longbench_hotpotqa": "hotpotqa", "longbench_2wikimqa": "2wikimqa",
                     "longbench_musique": "musique"}
_PASSAGE = re.compile(r"Passage \d+:\n")


@dataclass
class LoadStats:
    """What happened to the rows on their way into the splits (goes into the record)."""

    rows: int = 0
    truncated: int = 0  # prompts shortened to fit the context
    evidence_lost: int = 0  # HotpotQA: a supporting sentence was cut away
    long_answers_skipped: int = 0  # training rows whose answer exceeds the answer room
    unanswered_skipped: int = 0  # rows without any gold answer

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# --- HotpotQA -------------------------------------------------------------------------------
@dataclass(frozen=True)
class HotpotRecord:
    id: str
    question: str
    answer: str
    paragraphs: list[tuple[str, list[str]]]  # (title, sentences)
    supporting: list[tuple[str, int]]  # (title, sentence index)


def hotpot_record(row: dict[str, Any]) -> HotpotRecord:
    """One row of either release as a HotpotRecord."""
    context, facts = row["context"], row["supporting_facts"]
    if isinstance(context, dict):  # Hugging Face: {title: [...], sentences: [[...], ...]}
        paragraphs = list(zip(context["title"], [list(s) for s in context["sentences"]]))
        supporting = list(zip(facts["title"], [int(i) for i in facts["sent_id"]]))
    else:  # original JSON: [[title, [sentences]], ...] and [[title, sent_id], ...]
        paragraphs = [(t, list(s)) for t, s in context]
        supporting = [(t, int(i)) for t, i in facts]
    return HotpotRecord(str(row.get("id", row.get("_id"))), row["question"], row["answer"],
                        paragraphs, supporting)


def hotpot_example(rec: HotpotRecord, prompt_len: int, stats: LoadStats) -> QAExample:
    question = rec.question.encode("utf-8")
    docs = [f"{t}\n{''.join(s)}".encode("utf-8") for t, s in rec.paragraphs]
    gold_titles = {t for t, _ in rec.supporting}
    keep = list(range(len(docs)))

    def size(kept: list[int]) -> int:
        return prompt_overhead(len(kept), question) + sum(len(docs[i]) for i in kept)

    while size(keep) > prompt_len:
        distractors = [i for i in keep if rec.paragraphs[i][0] not in gold_titles]
        if not distractors:
            break
        keep.remove(distractors[-1])
    texts = [docs[i] for i in keep]
    budget = prompt_len - prompt_overhead(len(keep), question)
    total = sum(map(len, texts))
    if total > budget:
        if budget < len(keep):
            raise ValueError(f"question {rec.id}: a prompt of {prompt_len} ids cannot hold it")
        texts = [t[: len(t) * budget // total] for t in texts]  # sum <= budget
    if len(keep) < len(docs) or total > budget:
        stats.truncated += 1
    layout = build_prompt(texts, question)

    depths, lost = [], False
    for title, sent_id in rec.supporting:
        where = [k for k, i in enumerate(keep) if rec.paragraphs[i][0] == title]
        sentences = rec.paragraphs[keep[where[0]]][1] if where else []
        if not where or not 0 <= sent_id < len(sentences):
            lost = True  # HotpotQA has a few facts pointing past their paragraph
            continue
        offset = len(title.encode("utf-8")) + 1 + sum(len(s.encode("utf-8")) for s in sentences[:sent_id])
        if offset >= len(texts[where[0]]):
            lost = True
            continue
        depths.append(layout.depth(where[0], offset))
    stats.evidence_lost += lost
    return to_example(layout, (rec.answer,), min(depths) if depths else None)


def find_hotpot_files(data_dir: Path | None) -> dict[str, list[Path]]:
    """{"train": [...], "validation": [...]} of a local HotpotQA distractor release, or {}."""
    if data_dir is None:
        return {}
    for root in (data_dir / "hotpot_qa", data_dir / "hotpotqa", data_dir / "HotpotQA", data_dir):
        if not root.is_dir():
            continue
        if root != data_dir:  # parquet shards only inside a HotpotQA folder, never any parquet
            parquet = [p for p in sorted(root.rglob("*.parquet")) if "fullwiki" not in p.parts]
            found = {"train": [p for p in parquet if p.name.startswith("train")],
                     "validation": [p for p in parquet if p.name.startswith("validation")]}
            if found["train"] or found["validation"]:
                return found
        original = {"train": root / "hotpot_train_v1.1.json", "validation": root / "hotpot_dev_distractor_v1.json"}
        if any(p.exists() for p in original.values()):
            return {k: [p] if p.exists() else [] for k, p in original.items()}
    return {}


def hotpot_rows(cfg: dict[str, Any], data_dir: Path | None) -> tuple[dict[str, Iterable[dict]], str]:
    files = find_hotpot_files(data_dir)
    if files:
        rows = {split: _rows_from_files(paths) for split, paths in files.items()}
        names = sorted(p.name for paths in files.values() for p in paths)
        return rows, f"HotpotQA distractor, local files ({', '.join(names)})"
    how_to = ("put HotpotQA's distractor release under --data-dir/hotpot_qa (the Hugging Face parquet "
              "files train-*.parquet and validation-*.parquet, or the original hotpot_train_v1.1.json "
              "and hotpot_dev_distractor_v1.json from hotpotqa.github.io), or set "
              "task.multidoc_qa.hotpotqa.from_hub=true with network access")
    if not cfg.get("from_hub"):
        raise SkipCell(f"HotpotQA not found; {how_to}")
    try:
        from datasets import load_dataset

        rows = {split: load_dataset(cfg["hub_id"], cfg["hub_config"], split=split, streaming=True)
                for split in ("train", "validation")}
    except Exception as err:  # offline, moved repository, missing package ...
        raise SkipCell(f"cannot open {cfg['hub_id']!r} from the hub ({type(err).__name__}: {err}); "
                       f"{how_to}") from None
    return rows, f"HotpotQA distractor, hub {cfg['hub_id']}/{cfg['hub_config']}"


def _rows_from_files(paths: list[Path]) -> Iterator[dict[str, Any]]:
    parquet = [p for p in paths if p.suffix == ".parquet"]
    if parquet:
        from datasets import load_dataset

        yield from load_dataset("parquet", data_files=[str(p) for p in parquet], split="train",
                                streaming=True)
    for path in paths:
        if path.suffix == ".json":
            yield from json.loads(path.read_text(encoding="utf-8"))


def load_hotpot(cfg: dict[str, Any], sizes: dict[str, int], prompt_len: int, max_answer: int,
                data_dir: Path | None) -> tuple[dict[str, list[QAExample]], dict[str, Any]]:
    rows, origin = hotpot_rows(cfg, data_dir)
    val_fraction = float(cfg["val_fraction"])
    stats = LoadStats()
    splits: dict[str, list[QAExample]] = {"train": [], "val": [], "test": []}
    for source, row_iter in rows.items():
        for row in row_iter:
            rec = hotpot_record(row)
            if source == "train":
                split = "train"
            else:
                split = "val" if unit_hash(rec.id) < val_fraction else "test"
            if len(splits[split]) >= sizes[split]:
                if all(len(splits[s]) >= sizes[s] for s in _targets(source)):
                    break
                continue
            stats.rows += 1
            if split == "train" and len(rec.answer.encode("utf-8")) > max_answer:
                stats.long_answers_skipped += 1
                continue
            splits[split].append(hotpot_example(rec, prompt_len, stats))
    meta = {"source": origin, "split_rule": "train: HotpotQA train; val/test: HotpotQA validation "
            f"divided by sha256 of the id (val fraction {val_fraction})", **stats.as_dict()}
    return splits, meta


def _targets(source: str) -> tuple[str, ...]:
    return ("train",) if source == "train" else ("val", "test")


# --- LongBench ------------------------------------------------------------------------------
def find_longbench_file(name: str, data_dir: Path | None) -> Path | None:
    if data_dir is None:
        return None
    for folder in (data_dir / "LongBench" / "data", data_dir / "longbench" / "data",
                   data_dir / "LongBench", data_dir / "longbench", data_dir / "data", data_dir):
        if (folder / f"{name}.jsonl").is_file():
            return folder / f"{name}.jsonl"
    return None


def longbench_documents(context: str) -> list[str]:
    """LongBench's "Passage 1:\\n...Passage 2:\\n..." context as a list of passages."""
    parts = [p.strip() for p in _PASSAGE.split(context)]
    return [p for p in parts if p] or [context.strip()]


def longbench_example(row: dict[str, Any], prompt_len: int, stats: LoadStats) -> QAExample:
    question = row["input"].encode("utf-8")
    layout = build_prompt([d.encode("utf-8") for d in longbench_documents(row["context"])], question)
    ids = layout.ids
    excess = len(ids) - prompt_len
    if excess > 0:
        # Keep the first and last halves of the documents region, as LongBench does.
        first, end = layout.doc_offsets[0], layout.docs_end + 1
        if end - first <= excess:
            raise ValueError(f"LongBench row {row.get('_id')}: the question alone exceeds the prompt room")
        keep_head = (end - first - excess) // 2
        ids = np.concatenate([ids[: first + keep_head], ids[first + keep_head + excess :]])
        stats.truncated += 1
    return QAExample(torch.from_numpy(ids), tuple(str(a) for a in row["answers"]), None)


def load_longbench(subtask: str, cfg: dict[str, Any], sizes: dict[str, int], prompt_len: int,
                   max_answer: int, data_dir: Path | None) -> tuple[dict[str, list[QAExample]], dict[str, Any]]:
    name = LONGBENCH_SUBSETS[subtask]
    path = find_longbench_file(name, data_dir)
    if path is None:
        raise SkipCell(
            f"LongBench {name}.jsonl not found; download LongBench's data.zip (Hugging Face THUDM/LongBench) "
            f"and unpack it so that --data-dir/LongBench/data/{name}.jsonl exists")
    train_fraction, val_fraction = float(cfg["train_fraction"]), float(cfg["val_fraction"])
    stats = LoadStats()
    splits: dict[str, list[QAExample]] = {"train": [], "val": [], "test": []}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path.name}:{line_no}: not JSON ({err.msg})") from None
            u = unit_hash(str(row["_id"]))
            split = "train" if u < train_fraction else "val" if u < train_fraction + val_fraction else "test"
            if len(splits[split]) >= sizes[split]:
                continue
            stats.rows += 1
            if not row["answers"]:
                stats.unanswered_skipped += 1
                continue
            if split == "train" and len(str(row["answers"][0]).encode("utf-8")) > max_answer:
                stats.long_answers_skipped += 1
                continue
            splits[split].append(longbench_example(row, prompt_len, stats))
    meta = {"source": f"LongBench {name} (local file {path.name})",
            "split_rule": f"carved from LongBench's test set by sha256 of _id (train {train_fraction}, "
                          f"val {val_fraction}, test the rest)",
            "note": "LongBench has no training set; scores are not comparable with its zero-shot leaderboard",
            **stats.as_dict()}
    return splits, meta
