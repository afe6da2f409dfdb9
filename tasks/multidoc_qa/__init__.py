"""Multi-document question answering as a task family: `--task multidoc_qa`.

Documents separated by SEP, then the question, then the answer (layout.py). Training: language-
model loss on the answer bytes (and the closing EOS) only. Evaluation: greedy generation of
the answer through the model's decode path, exact match and token F1 under the SQuAD /
HotpotQA / LongBench normalization, overall and by evidence depth (evaluation.py).

Subtasks:
  multikey_needle, multivalue, variable_tracking, bridge, single_needle_noise, multiquery,
  common_words
      generated offline (generated.py, ruler.py): needles in real English prose from Python's
      documentation or in repeated filler, and word lists; RULER- and HotpotQA-style; every
      prompt fills the context exactly, and the test questions can be asked again in longer
      haystacks (length generalization)
  hotpotqa                  HotpotQA distractor setting (local release or hub; real.py)
  longbench_hotpotqa, longbench_2wikimqa, longbench_musique
      LongBench's multi-document subsets (local jsonl files; real.py)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.task import Chance, ExampleSplit, SubtaskInfo, Task, TaskData, register_task
from bimix_bench.tasks.long_code.sources import python_description
from bimix_bench.tasks.multidoc_qa.corpus import python_docs_corpus
from bimix_bench.tasks.multidoc_qa.evaluation import qa_metrics, scoring_for
from bimix_bench.tasks.multidoc_qa.generated import (
    GENERATED,
    GENERATED_SUBTASKS,
    generate_example,
    max_answer_bytes,
)
from bimix_bench.tasks.multidoc_qa.layout import QAExample
from bimix_bench.tasks.multidoc_qa.real import LONGBENCH_SUBSETS, load_hotpot, load_longbench

SPLITS = ("train", "val", "test")
# What the training loss counts (validation and test always score the answer alone):
# "answer": the answer bytes and EOS; "sequence": every byte of prompt and answer.
TRAIN_TARGETS = ("answer", "sequence")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_DESCRIPTIONS = {
    "multikey_needle": "several 'special magic number' needles; recall one key's number",
    "multivalue": "one key with several numbers among other keys; recall all of them",
    "variable_tracking": "VAR chains across documents; list the variables holding a value",
    "bridge": "entity -> city in one document, city -> code in another; answer the code",
    "single_needle_noise": "RULER S-NIAH: one magic-number needle in repeated filler text",
    "multiquery": "RULER MQ-NIAH: several needles; recall the numbers of several keys at once",
    "common_words": "RULER CWE: a word list; name the words that occur most often",
    "hotpotqa": "HotpotQA distractor setting (real data: --data-dir or hub)",
    **{name: f"LongBench {subset} (real data: --data-dir)" for name, subset in LONGBENCH_SUBSETS.items()},
}


def _generated_splits(subtask: str, cfg: dict[str, Any], seed: int, sizes: dict[str, int],
                      prompt_loss: bool
                      ) -> tuple[dict[str, Any], list[QAExample], int, dict[str, Any], Callable]:
    """Train examples are built on demand from (seed, split, subtask, index); val and test are
    built once (they are scored repeatedly and decoded). Also returns the test split at a
    multiple of the context (the same questions in more haystack), built on demand."""
    sub_cfg = cfg[subtask]
    max_answer = max_answer_bytes(subtask, sub_cfg)
    context = int(cfg["context"])
    corpus = python_docs_corpus()
    n_docs, n_buckets = int(cfg["n_docs"]), int(cfg["depth_buckets"])
    code = GENERATED_SUBTASKS.index(subtask)

    def example(split: str, i: int, prompt_len: int = context - max_answer) -> QAExample:
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], code, i])
        return generate_example(subtask, sub_cfg, rng, i, n_buckets, n_docs, prompt_len)

    try:
        fixed = {s: [example(s, i) for i in range(sizes[s])] for s in ("val", "test")}
    except ValueError as err:
        raise UsageError(f"multidoc_qa/{subtask}: {err}") from None
    splits = {
        "train": ExampleSplit(sizes["train"], lambda i: example("train", i).inputs_and_targets(
            max_answer, prompt_loss)),
        **{s: _fixed_split(fixed[s], max_answer) for s in ("val", "test")},
    }

    def longer_test(factor: int) -> ExampleSplit:
        length = factor * context - max_answer
        return ExampleSplit(sizes["test"],
                            lambda i: example("test", i, length).inputs_and_targets(max_answer))

    meta = {
        "source": f"generated over prose of pydoc_data.topics ({python_description()})",
        "note": "the documentation text differs between Python versions",
        "corpus_paragraphs": len(corpus.paragraph_starts), "corpus_bytes": len(corpus.text),
        "n_docs": n_docs, "prompt_len": context - max_answer, "settings": dict(sub_cfg),
        "depth": "of the evidence farthest from the question; stratified over depth buckets",
    }
    spec = GENERATED[subtask]
    if spec.source:
        meta["source"] = spec.source
    if spec.one_document:
        meta["n_docs"] = 1
    return splits, fixed["test"], max_answer, meta, longer_test


def _fixed_split(examples: list[QAExample], max_answer: int, prompt_loss: bool = False
                 ) -> ExampleSplit:
    return ExampleSplit(len(examples),
                        lambda i: examples[i].inputs_and_targets(max_answer, prompt_loss))


def _train_targets(cfg: dict[str, Any]) -> str:
    """cfg["train_targets"], checked: one of TRAIN_TARGETS."""
    targets = str(cfg.get("train_targets", "answer"))
    if targets not in TRAIN_TARGETS:
        raise UsageError(f"multidoc_qa train_targets must be one of {', '.join(TRAIN_TARGETS)}, "
                         f"not {targets!r}")
    return targets


def _real_splits(subtask: str, cfg: dict[str, Any], sizes: dict[str, int], data_dir: Path | None,
                 prompt_loss: bool
                 ) -> tuple[dict[str, Any], list[QAExample], int, dict[str, Any]]:
    section = cfg["hotpotqa"] if subtask == "hotpotqa" else cfg["longbench"]
    max_answer = int(section["max_answer_bytes"])
    prompt_len = int(cfg["context"]) - max_answer
    if subtask == "hotpotqa":
        examples, meta = load_hotpot(section, sizes, prompt_len, max_answer, data_dir)
    else:
        examples, meta = load_longbench(subtask, section, sizes, prompt_len, max_answer, data_dir)
    empty = [s for s in SPLITS if not examples[s]]
    if empty:
        raise SkipCell(f"multidoc_qa/{subtask}: no examples for the {', '.join(empty)} split(s) in "
                       f"{meta['source']}")
    splits = {s: _fixed_split(examples[s], max_answer, s == "train" and prompt_loss)
              for s in SPLITS}
    return splits, examples["test"], max_answer, {**meta, "prompt_len_max": prompt_len}


def load_multidoc(subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    sizes = {s: int(cfg[f"n_{s}"]) for s in SPLITS}
    train_targets = _train_targets(cfg)
    prompt_loss = train_targets == "sequence"  # the training loss counts the prompt's bytes too
    longer_test = None
    if subtask in GENERATED_SUBTASKS:
        splits, test_examples, max_answer, meta, longer_test = _generated_splits(
            subtask, cfg, seed, sizes, prompt_loss)
    else:
        splits, test_examples, max_answer, meta = _real_splits(subtask, cfg, sizes, data_dir,
                                                               prompt_loss)
    meta = {**meta, "max_answer_bytes": max_answer,
            "sizes": {s: len(splits[s]) for s in SPLITS}, "depth_buckets": int(cfg["depth_buckets"]),
            "f1_scoring": scoring_for(subtask),
            "train_targets": train_targets}
    data = TaskData(task="multidoc_qa", subtask=subtask, objective="lm", context=int(cfg["context"]),
                    train=splits["train"], val=splits["val"], test=splits["test"], meta=meta,
                    longer_test=longer_test)

    def extra_metrics(model, split: str, device, run_cfg: dict[str, Any]) -> dict[str, float]:
        if split != "test":
            raise ValueError(f"multidoc_qa decodes answers of the test split, not {split!r}")
        return qa_metrics(model, test_examples, device, run_cfg, max_answer,
                          int(cfg["decode_batch_size"]), int(cfg["depth_buckets"]),
                          scoring_for(subtask))

    data.extra_metrics = extra_metrics
    return data


@register_task
class MultiDocQA(Task):
    name = "multidoc_qa"
    description = ("Multi-document QA: RULER needles (multi-key, multi-value, multi-query, in noise), "
                   "variable tracking, common words, bridge; HotpotQA, LongBench")
    defaults_path = Path(__file__).parent / "defaults.yaml"

    def subtasks(self) -> list[SubtaskInfo]:
        return [SubtaskInfo(name, text) for name, text in _DESCRIPTIONS.items()]

    def chance(self, subtask: str, data_meta: dict[str, Any]) -> Chance | None:
        """Generated answers are random keys, values and names: no answer is matched without
        reading the documents. Real data sets (yes/no questions) declare none."""
        if subtask not in GENERATED_SUBTASKS:
            return None
        return Chance("exact_match", 0.0, "a generated answer is not matched without reading")

    def check_options(self, cfg: dict[str, Any], subtasks: list[str]) -> None:
        _train_targets(cfg)

    def load(self, subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
        return load_multidoc(subtask, cfg, seed, data_dir)
