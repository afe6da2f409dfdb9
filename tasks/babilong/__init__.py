"""BABILong-style reasoning in a haystack as a task family: `--task babilong` (Kuratov et al.
2024, over the bAbI tasks of Weston et al. 2015).

A bAbI story (stories.py, in the world of world.py) is hidden sentence by sentence, in order,
in background prose from Python's own documentation, the question at the end (haystack.py).
Training: language-model loss on the answer bytes and the closing EOS only. Evaluation: greedy
generation of the answer, scored as BABILong scores it, as `exact_match` (scoring.py,
evaluation.py); the chance level is that of a story-blind guess among the answer labels.

Subtasks:
  qa1 ... qa5                 generated offline: single, two and three supporting facts; two-
                              and three-argument relations. Examples are built from (seed,
                              split, subtask, index) alone, identical for every model; longer
                              test inputs keep the stories and add background.
  release_qa1 ... release_qa5 BABILong's published rows (RMT-team/babilong; real.py)
`facts_window` sets where in the context the facts lie ([0, 1]: anywhere, BABILong's default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.task import Chance, ExampleSplit, SubtaskInfo, Task, TaskData, register_task
from bimix_bench.tasks.babilong.evaluation import answer_metrics
from bimix_bench.tasks.babilong.haystack import BabiExample, build_example, check_window
from bimix_bench.tasks.babilong.real import load_release
from bimix_bench.tasks.babilong.scoring import TASK_LABELS, chance_level
from bimix_bench.tasks.babilong.stories import SUBTASKS, make_story, max_story_bytes
from bimix_bench.tasks.long_code.sources import python_description
from bimix_bench.tasks.multidoc_qa.corpus import python_docs_corpus
from bimix_bench.tasks.multidoc_qa.layout import prompt_overhead

SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
RELEASE_SUBTASKS = {f"release_{qa}": qa for qa in SUBTASKS}
MAX_ANSWER_BYTES = max(len(label) for labels in TASK_LABELS.values() for label in labels)
_DESCRIPTIONS = {
    "qa1": "single supporting fact: where is a person",
    "qa2": "two supporting facts: where is an object someone carried",
    "qa3": "three supporting facts: where was an object before a place",
    "qa4": "two-argument relations: what is north/south/east/west of a place",
    "qa5": "three-argument relations: who gave what to whom",
    **{name: f"BABILong's published {qa} (real data: --data-dir or hub)" for name, qa in RELEASE_SUBTASKS.items()},
}
CHANCE_BASIS = ("a story-blind guess among the answer labels of the answer's kind that the question "
                "does not name, averaged over the test questions")


def example_maker(subtask: str, cfg: dict[str, Any], seed: int) -> Callable[[str, int, int], BabiExample]:
    """make(split, i, prompt_len): example i of a split, a pure function of (seed, split,
    subtask, i) and the settings. The story does not depend on prompt_len, only the background
    around it does."""
    settings, window = cfg.get(subtask, {}), check_window(cfg["facts_window"])
    corpus, code = python_docs_corpus(), SUBTASKS.index(subtask)

    def make(split: str, i: int, prompt_len: int) -> BabiExample:
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], code, i])
        return build_example(make_story(subtask, rng, settings), corpus, rng, prompt_len, window)

    return make


def _fixed_split(examples: list[BabiExample]) -> ExampleSplit:
    return ExampleSplit(len(examples), lambda i: examples[i].qa.inputs_and_targets(MAX_ANSWER_BYTES))


def _generated(subtask: str, cfg: dict[str, Any], seed: int, sizes: dict[str, int]
               ) -> tuple[dict[str, Any], dict[str, list[BabiExample]], dict[str, Any], Callable]:
    """Train examples are built on demand; val and test once (scored repeatedly, decoded)."""
    context, settings = int(cfg["context"]), cfg.get(subtask, {})
    prompt_len = context - MAX_ANSWER_BYTES
    try:
        need = max_story_bytes(subtask, settings) + prompt_overhead(1, b"")
        if need > prompt_len:
            raise ValueError(f"a story may need {need} of the prompt's {prompt_len} ids: raise the "
                             f"context or lower max_facts")
        make = example_maker(subtask, cfg, seed)
        fixed = {s: [make(s, i, prompt_len) for i in range(sizes[s])] for s in ("val", "test")}
    except ValueError as err:
        raise UsageError(f"babilong/{subtask}: {err}") from None

    def on_demand(split: str, n: int, length: int) -> ExampleSplit:
        return ExampleSplit(n, lambda i: make(split, i, length).qa.inputs_and_targets(MAX_ANSWER_BYTES))

    def longer_test(factor: int) -> ExampleSplit:
        """The test stories in factor x the context: the same facts in more background."""
        return on_demand("test", sizes["test"], factor * context - MAX_ANSWER_BYTES)

    splits = {"train": on_demand("train", sizes["train"], prompt_len),
              **{s: _fixed_split(fixed[s]) for s in ("val", "test")}}
    corpus = python_docs_corpus()
    meta = {"source": f"generated bAbI stories over prose of pydoc_data.topics ({python_description()})",
            "note": "the documentation text differs between Python versions",
            "corpus_bytes": len(corpus.text), "prompt_len": prompt_len,
            "facts_window": list(check_window(cfg["facts_window"])), "settings": dict(settings)}
    return splits, fixed, meta, longer_test


def load_babilong(subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
    sizes = {s: int(cfg[f"n_{s}"]) for s in SPLITS}
    qa = RELEASE_SUBTASKS.get(subtask, subtask)
    longer_test = None
    if subtask in SUBTASKS:
        splits, examples, meta, longer_test = _generated(subtask, cfg, seed, sizes)
    else:
        prompt_len = int(cfg["context"]) - MAX_ANSWER_BYTES
        examples, meta = load_release(qa, cfg["release"], sizes, prompt_len, data_dir)
        empty = [s for s in SPLITS if not examples[s]]
        if empty:
            raise SkipCell(f"babilong/{subtask}: no examples for the {', '.join(empty)} split(s) in "
                           f"{meta['source']} (rows longer than the context are skipped)")
        splits = {s: _fixed_split(examples[s]) for s in SPLITS}
    test_examples = examples["test"]
    labels = TASK_LABELS[qa]
    meta = {**meta, "max_answer_bytes": MAX_ANSWER_BYTES, "sizes": {s: len(splits[s]) for s in SPLITS},
            "labels": list(labels),
            "chance_exact_match": chance_level([(e.question, e.answer) for e in test_examples], labels)}
    data = TaskData(task="babilong", subtask=subtask, objective="lm", context=int(cfg["context"]),
                    train=splits["train"], val=splits["val"], test=splits["test"], meta=meta,
                    longer_test=longer_test)

    def extra_metrics(model, split: str, device, run_cfg: dict[str, Any]) -> dict[str, float]:
        if split != "test":
            raise ValueError(f"babilong decodes answers of the test split, not {split!r}")
        return answer_metrics(model, test_examples, labels, device, run_cfg, MAX_ANSWER_BYTES,
                              int(cfg["decode_batch_size"]))

    data.extra_metrics = extra_metrics
    return data


@register_task
class BabiLong(Task):
    name = "babilong"
    description = "BABILong-style bAbI qa1-qa5 hidden in long prose; BABILong's published rows"
    defaults_path = Path(__file__).parent / "defaults.yaml"

    def subtasks(self) -> list[SubtaskInfo]:
        return [SubtaskInfo(name, text) for name, text in _DESCRIPTIONS.items()]

    def chance(self, subtask: str, data_meta: dict[str, Any]) -> Chance | None:
        value = data_meta.get("chance_exact_match")
        return None if value is None else Chance("exact_match", float(value), CHANCE_BASIS)

    def load(self, subtask: str, cfg: dict[str, Any], seed: int, data_dir: Path | None) -> TaskData:
        return load_babilong(subtask, cfg, seed, data_dir)
