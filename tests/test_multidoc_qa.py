"""Multi-document QA: prompt layout and loss mask, the prose corpus, the four generated
subtasks (each answer re-derived from the prompt text by an independent parser, evidence depth
re-measured), the HotpotQA and LongBench loaders on fixture files in their real formats,
answer scoring through generation, and tiny end-to-end runs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.config import deep_merge, load_budget
from bimix_bench.errors import SkipCell, UsageError
from bimix_bench.models.tokenizer import BOS, EOS, SEP, VOCAB_SIZE
from bimix_bench.registry import TASKS
from bimix_bench.results.records import read_records, validate_record
from bimix_bench.tasks.multidoc_qa.corpus import python_docs_corpus, sentence_boundaries
from bimix_bench.tasks.multidoc_qa.evaluation import qa_metrics
from bimix_bench.tasks.multidoc_qa.generated import GENERATED_SUBTASKS, generate_example, max_answer_bytes
from bimix_bench.tasks.multidoc_qa.layout import QAExample, build_prompt
from bimix_bench.tasks.multidoc_qa.ruler import FILLER
from bimix_bench.metrics.qa import item_recall
from bimix_bench.tasks.multidoc_qa.real import (
    LoadStats,
    find_hotpot_files,
    hotpot_example,
    hotpot_record,
    load_hotpot,
    load_longbench,
    longbench_documents,
)
from tests.scripted_reader import ScriptedReader

FIXTURES = Path(__file__).parent / "fixtures" / "multidoc_qa"
SETTINGS = {"multikey_needle": {"n_keys": 4}, "multivalue": {"n_values": 3, "n_distractors": 2},
            "variable_tracking": {"n_chains": 3, "n_hops": 3}, "bridge": {"n_distractors": 3},
            "single_needle_noise": {}, "multiquery": {"n_keys": 5, "n_queries": 3},
            "common_words": {"n_common": 4, "common_freq": 9, "uncommon_freq": 3}}
CONTEXT, N_DOCS, BUCKETS = 2048, 5, 5
RUN_CFG = deep_merge(load_budget("tiny"), {"train": {"precision": "fp32"}, "eval": {"test_examples": 100}})


def make(subtask: str, i: int, seed: int = 0) -> QAExample:
    cfg = SETTINGS[subtask]
    prompt_len = CONTEXT - max_answer_bytes(subtask, cfg)
    rng = np.random.default_rng([seed, 2, GENERATED_SUBTASKS.index(subtask), i])
    return generate_example(subtask, cfg, rng, i, BUCKETS, N_DOCS, prompt_len)


def parts(example: QAExample) -> tuple[list[str], str]:
    """The documents and the question of a prompt, split at SEP (independent of layout.py)."""
    ids = example.prompt.long().tolist()
    assert ids[0] == BOS and ids[-1] == SEP and ids.count(BOS) == 1
    segments, current = [], []
    for i in ids[1:]:
        if i == SEP:
            segments.append(bytes(current).decode("ascii"))
            current = []
        else:
            current.append(i)
    return segments[:-1], segments[-1]


def depth_of(example: QAExample, needle: str) -> float:
    """Depth of a needle's first byte: offset in the documents region over its length - 1."""
    ids = example.prompt.long().tolist()
    docs_region = ids[1 : len(ids) - 1 - len(parts(example)[1]) - 1]  # BOS .. closing SEP of the last doc
    text = bytes(i if i < 256 else 0 for i in docs_region)
    return text.index(needle.encode()) / (len(docs_region) - 1)


# --- layout ---------------------------------------------------------------------------------
def test_prompt_layout_and_loss_mask():
    layout = build_prompt([b"alpha", b"", b"be"], b"q?")
    assert layout.ids.tolist() == [BOS, *b"alpha", SEP, SEP, *b"be", SEP, *b"q?", SEP]
    assert layout.doc_offsets == [1, 7, 8] and layout.docs_end == 10
    assert layout.depth(0, 0) == 0.0 and layout.depth(2, 1) == 1.0
    example = QAExample(torch.from_numpy(layout.ids), ("xyz", "other"), 0.5)
    inputs, targets = example.inputs_and_targets(max_answer_bytes=8)
    assert inputs.tolist() == [*layout.ids.tolist(), *b"xyz"]
    scored = [(i, t) for i, t in enumerate(targets.tolist()) if t != -100]
    assert scored == [(13, ord("x")), (14, ord("y")), (15, ord("z")), (16, EOS)]  # answer + EOS only
    _, cut = example.inputs_and_targets(max_answer_bytes=2)
    assert [t for t in cut.tolist() if t != -100] == [ord("x"), ord("y"), EOS]
    # prompt_loss: every next byte is a target, the prompt's as well as the answer's
    whole_in, whole = example.inputs_and_targets(max_answer_bytes=8, prompt_loss=True)
    assert torch.equal(whole_in, inputs)
    assert whole.tolist() == [*layout.ids.tolist()[1:], *b"xyz", EOS]


def test_corpus_is_real_english_prose():
    corpus = python_docs_corpus()
    text = corpus.text.decode("ascii")
    assert len(text) > 100_000 and len(corpus.paragraph_starts) > 300
    words = text.lower().split()
    assert words.count("the") / len(words) > 0.03  # English function words, not lorem ipsum
    assert "lorem" not in words and "ipsum" not in words
    assert "exception" in corpus.words and all(4 <= len(w) <= 10 for w in corpus.words)
    assert sentence_boundaries(b"One. Two.\nThree").tolist() == [0, 5, 10]


# --- generated subtasks: answers re-derived from the prompt ------------------------------------
MAGIC = re.compile(r"The special magic number for (\S+) is (\d+)\.")


@pytest.mark.parametrize("i", range(6))
def test_multikey_needle(i):
    ex = make("multikey_needle", i)
    docs, question = parts(ex)
    assert len(docs) == N_DOCS and len(ex.prompt) == CONTEXT - 7
    needles = [m for d in docs for m in MAGIC.findall(d)]
    assert len(needles) == 4 and len({k for k, _ in needles}) == 4
    key = re.fullmatch(r"What is the special magic number for (\S+)\?", question).group(1)
    assert ex.answers == (dict(needles)[key],) and len(ex.answers[0]) == 7
    assert math.isclose(ex.depth, depth_of(ex, f"The special magic number for {key} is"), abs_tol=1e-12)


@pytest.mark.parametrize("i", range(6))
def test_multivalue(i):
    ex = make("multivalue", i)
    docs, question = parts(ex)
    key = re.fullmatch(r"What are all the special magic numbers for (\S+)\?", question).group(1)
    found = [(k, v) for d in docs for k, v in MAGIC.findall(d)]
    values = [v for k, v in found if k == key]
    assert len(values) == 3 and len(found) == 5  # plus two other keys' needles
    assert ex.answers == (", ".join(values),)  # in document order
    assert math.isclose(ex.depth, depth_of(ex, f"The special magic number for {key} is {values[0]}."),
                        abs_tol=1e-12)


@pytest.mark.parametrize("i", range(6))
def test_variable_tracking(i):
    ex = make("variable_tracking", i)
    docs, question = parts(ex)
    value = re.fullmatch(r"Find all variables that are assigned the value (\d+)\.", question).group(1)
    resolved: dict[str, str] = {}
    order = []
    for doc in docs:  # statements must resolve in reading order
        for name, rhs in re.findall(r"VAR ([A-Z]{5}) = (VAR [A-Z]{5}|\d+)\.", doc):
            resolved[name] = resolved[rhs[4:]] if rhs.startswith("VAR ") else rhs
            order.append(name)
    assert len(order) == 3 * 4
    holders = [n for n in order if resolved[n] == value]
    assert ex.answers == (" ".join(holders),) and len(holders) == 4
    assert math.isclose(ex.depth, depth_of(ex, f"VAR {holders[0]} = {value}."), abs_tol=1e-12)


@pytest.mark.parametrize("i", range(6))
def test_bridge(i):
    ex = make("bridge", i)
    docs, question = parts(ex)
    entity = re.fullmatch(r"What is the registry code of the city where (.+) is located\?", question).group(1)
    located = {e.lower(): (c, d) for d, doc in enumerate(docs)
               for e, c in re.findall(r"([A-Z][\w ]+?) is located in the city of (\w+)\.", doc)}
    coded = {c: (k, d) for d, doc in enumerate(docs)
             for c, k in re.findall(r"The registry code of (\w+) is ([A-Z]{2}-\d{4})\.", doc)}
    assert len(located) == 4 and len(coded) == 4
    city, doc_a = located[entity.lower()]
    code, doc_b = coded[city]
    assert ex.answers == (code,) and doc_a != doc_b  # two hops across two documents


@pytest.mark.parametrize("i", range(6))
def test_single_needle_in_noise(i):
    ex = make("single_needle_noise", i)
    docs, question = parts(ex)
    assert len(docs) == 1  # one continuous haystack, as in RULER
    (needle,) = MAGIC.findall(docs[0])
    key = re.fullmatch(r"What is the special magic number for (\S+)\?", question).group(1)
    assert needle[0] == key and ex.answers == (needle[1],) and ex.items == (needle[1],)
    # Everything but the needle is the filler passage, sentence by sentence.
    rest = re.sub(r"The special magic number for \S+ is \d+\. ", "", docs[0])
    sentences = {t.strip() for t in re.split(r"(?<=\.)[ \n]", rest) if t.strip()}
    filler = {t.strip() for t in re.split(r"(?<=\.) ", FILLER)}
    partial = sentences - filler
    assert len(partial) <= 1  # at most the last sentence, cut where the document ends
    assert all(any(f.startswith(t) for f in filler) for t in partial)
    assert math.isclose(ex.depth, depth_of(ex, f"The special magic number for {key} is"), abs_tol=1e-12)


@pytest.mark.parametrize("i", range(6))
def test_multiquery(i):
    ex = make("multiquery", i)
    docs, question = parts(ex)
    found = dict(m for d in docs for m in MAGIC.findall(d))
    asked = re.fullmatch(r"What are the special magic numbers for (.+)\?", question).group(1)
    keys = re.split(r", | and ", asked)
    assert len(found) == 5 and len(keys) == 3 and set(keys) <= set(found)
    assert ex.answers == (", ".join(found[k] for k in keys),) and ex.items == tuple(found[k] for k in keys)
    first = min(depth_of(ex, f"The special magic number for {k} is") for k in keys)
    assert math.isclose(ex.depth, first, abs_tol=1e-12)


def test_multiquery_asks_in_an_order_unrelated_to_the_documents():
    orders = set()
    for i in range(12):
        ex = make("multiquery", i)
        keys = re.split(r", | and ", re.fullmatch(r"What are the special magic numbers for (.+)\?",
                                                  parts(ex)[1]).group(1))
        depths = [depth_of(ex, f"The special magic number for {k} is") for k in keys]
        orders.add(tuple(np.argsort(depths)))
    assert len(orders) > 2


@pytest.mark.parametrize("i", range(6))
def test_common_words(i):
    ex = make("common_words", i)
    docs, question = parts(ex)
    assert len(docs) == 1 and ex.depth is None
    n = int(re.fullmatch(r"What are the (\d+) most common words in the list above\?", question).group(1))
    listed = re.findall(r"(\d+)\. ([a-z]+)", docs[0])
    assert [int(k) for k, _ in listed] == list(range(1, len(listed) + 1))  # numbered in order
    assert docs[0].rstrip(" ") == " ".join(f"{k}. {w}" for k, w in listed)  # only padding after it
    counts: dict[str, int] = {}
    for _, w in listed:
        counts[w] = counts.get(w, 0) + 1
    common = [w for w, c in counts.items() if c == 9]
    assert n == 4 and len(common) == 4 and set(counts.values()) == {9, 3}
    assert len(counts) > 4  # other words fill the list
    first_seen = sorted(common, key=[w for _, w in listed].index)
    assert ex.answers == (" ".join(first_seen),) and ex.items == tuple(first_seen)
    assert len(docs[0]) - len(docs[0].rstrip(" ")) < 3 * (len(str(len(listed) + 3)) + 3 + 10)


def test_item_recall_is_rulers_string_match_all():
    assert item_recall("1234567, 7654321", ("1234567", "7654321")) == 1.0
    assert item_recall("7654321 and more", ("1234567", "7654321")) == 0.5
    assert item_recall("The words: Apple pear", ("apple", "plum")) == 0.5
    with pytest.raises(ValueError):
        item_recall("x", ())


def test_longer_test_asks_the_same_questions_in_more_haystack():
    cfg = TASKS.get("multidoc_qa").obj.defaults("tiny")
    data = TASKS.get("multidoc_qa").obj.load("multiquery", cfg, 0, None)
    base, longer = data.test, data.at_length(4).test
    assert len(longer) == len(base) and data.at_length(4).context == 4 * data.context
    for i in range(3):
        short_in, short_t = base.fetch(i)
        long_in, long_t = longer.fetch(i)
        assert len(long_in) - len(short_in) == 3 * data.context
        # the same question and answer, at the end of a prompt 4 times as long
        answer = short_t[short_t != -100]
        assert torch.equal(long_t[long_t != -100], answer)
        question_tail = short_in[-(len(answer) + 40):]
        assert torch.equal(long_in[-len(question_tail):], question_tail)


def test_sequence_targets_train_on_the_prompt_but_score_the_answer_alone():
    task = TASKS.get("multidoc_qa").obj
    cfg = task.defaults("tiny")
    answer_only = task.load("single_needle_noise", cfg, 0, None)
    whole = task.load("single_needle_noise", {**cfg, "train_targets": "sequence"}, 0, None)
    assert whole.meta["train_targets"] == "sequence"
    assert answer_only.meta["train_targets"] == "answer"
    a_in, a_t = answer_only.train.fetch(5)
    w_in, w_t = whole.train.fetch(5)
    assert torch.equal(a_in, w_in)  # the same example; only what the loss counts differs
    assert int((w_t != -100).sum()) == len(w_t) > int((a_t != -100).sum())
    assert torch.equal(w_t[a_t != -100], a_t[a_t != -100])
    for split in ("val", "test"):  # selection and test scores stay on the answer
        targets = [getattr(data, split).fetch(2)[1] for data in (whole, answer_only)]
        assert torch.equal(*targets)
    with pytest.raises(UsageError, match="train_targets"):
        task.load("single_needle_noise", {**cfg, "train_targets": "prompt"}, 0, None)


@pytest.mark.parametrize("subtask", GENERATED_SUBTASKS)
def test_generation_is_deterministic_and_exactly_sized(subtask):
    a, b, c = make(subtask, 3), make(subtask, 3), make(subtask, 3, seed=1)
    assert torch.equal(a.prompt, b.prompt) and a.answers == b.answers
    assert not torch.equal(a.prompt, c.prompt)
    lengths = {len(make(subtask, i).prompt) for i in range(4)}
    assert lengths == {CONTEXT - max_answer_bytes(subtask, SETTINGS[subtask])}


def test_depths_are_stratified_over_buckets():
    depths = [make("multikey_needle", i).depth for i in range(40)]
    counts = np.histogram(depths, bins=BUCKETS, range=(0, 1))[0]
    assert counts.min() >= 4  # every bucket populated (8 requested in each)
    assert np.mean([min(int(d * BUCKETS), BUCKETS - 1) == i % BUCKETS for i, d in enumerate(depths)]) > 0.7


def test_too_small_context_is_a_clear_error():
    with pytest.raises(ValueError, match="raise the context"):
        rng = np.random.default_rng(0)
        generate_example("multivalue", {"n_values": 8, "n_distractors": 4}, rng, 0, 5, 4, prompt_len=300)
    with pytest.raises(ValueError, match="raise the context"):
        generate_example("common_words", {"n_common": 10, "common_freq": 30, "uncommon_freq": 3},
                         np.random.default_rng(0), 0, 5, 1, prompt_len=1000)
    with pytest.raises(ValueError, match="uncommon_freq < common_freq"):
        generate_example("common_words", {"n_common": 2, "common_freq": 3, "uncommon_freq": 3},
                         np.random.default_rng(0), 0, 5, 1, prompt_len=1000)
    with pytest.raises(ValueError, match="n_queries <= n_keys"):
        generate_example("multiquery", {"n_keys": 2, "n_queries": 3}, np.random.default_rng(0), 0, 5, 4,
                         prompt_len=1000)


# --- real data loaders on fixtures --------------------------------------------------------------
HOTPOT_CFG = {"from_hub": False, "hub_id": "hotpotqa/hotpot_qa", "hub_config": "distractor",
              "val_fraction": 0.2, "max_answer_bytes": 64}
SIZES = {"train": 100, "val": 100, "test": 100}


def test_hotpot_parquet_and_original_json_give_the_same_examples():
    hf, meta_hf = load_hotpot(HOTPOT_CFG, SIZES, 1000, 64, FIXTURES / "hf")
    orig, meta_orig = load_hotpot(HOTPOT_CFG, SIZES, 1000, 64, FIXTURES / "original")
    assert [len(hf[s]) for s in ("train", "val", "test")] == [6, 1, 7]
    for split in hf:
        for a, b in zip(hf[split], orig[split]):
            assert torch.equal(a.prompt, b.prompt) and a.answers == b.answers and a.depth == b.depth
    assert "parquet" in meta_hf["source"] and "json" in meta_orig["source"]
    assert meta_hf["truncated"] == 0 and meta_hf["evidence_lost"] == 0


def test_hotpot_example_depth_and_truncation():
    import json

    row = json.loads((FIXTURES / "original" / "hotpotqa" / "hotpot_dev_distractor_v1.json").read_text())[0]
    rec = hotpot_record(row)
    stats = LoadStats()
    ex = hotpot_example(rec, 1000, stats)
    docs, question = parts(ex)
    assert question == rec.question and len(docs) == len(rec.paragraphs)
    first_fact = min(depth_of(ex, dict(rec.paragraphs)[t][i]) for t, i in rec.supporting)  # found by text
    assert math.isclose(ex.depth, first_fact, abs_tol=1e-12)
    # A tight prompt drops distractor paragraphs first: the gold ones survive whole.
    gold = {t for t, _ in rec.supporting}
    need = sum(len(f"{t}\n{''.join(s)}") + 1 for t, s in rec.paragraphs if t in gold) + len(rec.question) + 2
    tight = hotpot_example(rec, need, stats)
    docs, _ = parts(tight)
    assert len(tight.prompt) <= need and {d.split("\n")[0] for d in docs} == gold
    assert stats.truncated == 1 and stats.evidence_lost == 0
    tighter = hotpot_example(rec, need - 40, stats)
    assert len(tighter.prompt) <= need - 40 and stats.truncated == 2


def test_hotpot_absent_is_skipped_with_instructions(tmp_path):
    assert find_hotpot_files(tmp_path) == {}
    assert find_hotpot_files(FIXTURES.parent) == {}  # other data sets' parquet files are not HotpotQA
    with pytest.raises(SkipCell, match="hotpot_dev_distractor_v1.json"):
        load_hotpot(HOTPOT_CFG, SIZES, 1000, 64, tmp_path)


def test_longbench_loader_and_middle_truncation():
    cfg = {"train_fraction": 0.5, "val_fraction": 0.25, "max_answer_bytes": 64}
    splits, meta = load_longbench("longbench_hotpotqa", cfg, SIZES, 2000, 64, FIXTURES / "hf")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 3, 5]
    ex = splits["test"][0]
    docs, question = parts(ex)
    assert len(docs) == 5 and question.startswith("In which city")
    assert ex.depth is None and meta["truncated"] == 0
    short, meta = load_longbench("longbench_hotpotqa", cfg, SIZES, 300, 64, FIXTURES / "hf")
    assert meta["truncated"] == 14 and all(len(e.prompt) == 300 for s in short.values() for e in s)
    full_ids, cut_ids = splits["test"][0].prompt.tolist(), short["test"][0].prompt.tolist()
    q = len(question) + 2  # question and closing SEP survive whole, as do the first documents' bytes
    assert cut_ids[-q:] == full_ids[-q:] and cut_ids[:100] == full_ids[:100]
    for subset in ("longbench_2wikimqa", "longbench_musique"):
        got, _ = load_longbench(subset, {**cfg, "train_fraction": 0.3, "val_fraction": 0.3}, SIZES, 2000, 64,
                                FIXTURES / "hf")
        assert sum(len(v) for v in got.values()) == 4
    assert longbench_documents("Passage 1:\nA\nx\nPassage 2:\nB\ny\n") == ["A\nx", "B\ny"]
    with pytest.raises(SkipCell, match="LongBench/data/musique.jsonl"):
        load_longbench("longbench_musique", cfg, SIZES, 2000, 64, FIXTURES / "original")


# --- scoring through generation ---------------------------------------------------------------


def test_qa_metrics_with_scripted_answers():
    examples = [make("multikey_needle", i) for i in range(10)]
    # A trailing period fills the room of answer + 1 ids and is removed by the normalization.
    perfect = {tuple(e.prompt.long().tolist()): f"{e.answers[0]}." for e in examples}
    out = qa_metrics(ScriptedReader(perfect), examples, torch.device("cpu"), RUN_CFG, 7, 4, BUCKETS)
    assert out["exact_match"] == 1.0 and out["f1"] == 1.0 and out["n_questions"] == 10
    assert all(out[f"em_depth_{b / 5:.1f}-{(b + 1) / 5:.1f}"] == 1.0 for b in range(5)
               if f"n_depth_{b / 5:.1f}-{(b + 1) / 5:.1f}" in out)
    # Seven bytes is the answer room: a longer answer is cut there, and half are wrong.
    half = {tuple(e.prompt.long().tolist()): (e.answers[0] if i % 2 else "0000000 extra")
            for i, e in enumerate(examples)}
    out = qa_metrics(ScriptedReader(half), examples, torch.device("cpu"), RUN_CFG, 7, 4, BUCKETS)
    assert out["exact_match"] == 0.5 and out["f1"] == 0.5
    limited = qa_metrics(ScriptedReader(half), examples, torch.device("cpu"),
                         deep_merge(RUN_CFG, {"eval": {"test_examples": 3}}), 7, 4, BUCKETS)
    assert limited["n_questions"] == 3


# --- end to end ---------------------------------------------------------------------------------
FAST = ["--budget", "tiny", "--models", "transformer", "--no-checkpoints", "--set", "train.steps=2",
        "--set", "train.eval_every=2", "--set", "throughput.repeats=1", "--set", "throughput.decode_tokens=2",
        "--set", "task.n_test=6", "--set", "task.n_val=4"]


def test_tiny_generated_run_through_the_cli(tmp_path):
    result = CliRunner().invoke(app, ["run", "--task", "multidoc_qa", "--subtasks", "variable_tracking",
                                      "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(tmp_path)
    validate_record(rec)
    assert rec["status"] == "ok", rec["reason"]
    test = rec["metrics"]["test"]
    assert 0 <= test["exact_match"] <= test["f1"] <= 1 and test["n_questions"] == 6
    assert sum(v for k, v in test.items() if k.startswith("n_depth_")) == 6
    assert test["n_bytes"] > 0  # bits per byte over answer bytes and EOS only
    assert rec["data"]["prompt_len"] == 512 - rec["data"]["max_answer_bytes"]
    assert 0 <= test["item_recall"] <= 1  # RULER's score beside exact match
    assert "bits_per_byte_len2x" in test and "loss_len2x" in test  # the same questions at 2x the context


def test_every_generated_subtask_runs_through_the_cli(tmp_path):
    result = CliRunner().invoke(app, ["run", "--task", "multidoc_qa", "--subtasks", ",".join(GENERATED_SUBTASKS),
                                      "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    records = read_records(tmp_path)
    assert sorted(r["subtask"] for r in records) == sorted(GENERATED_SUBTASKS)
    for rec in records:
        validate_record(rec)
        assert rec["status"] == "ok", rec["reason"]
        assert 0 <= rec["metrics"]["test"]["item_recall"] <= 1
    noise = next(r for r in records if r["subtask"] == "single_needle_noise")
    assert "RULER" in noise["data"]["source"] and noise["data"]["n_docs"] == 1


def test_tiny_hotpotqa_run_on_fixtures_and_skip_without(tmp_path):
    out = tmp_path / "with"
    result = CliRunner().invoke(app, ["run", "--task", "multidoc_qa", "--subtasks", "hotpotqa", "--out", str(out),
                                      "--data-dir", str(FIXTURES / "hf"), "--set", "train.batch_tokens=1024",
                                      *FAST])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(out)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["data"]["sizes"] == {"train": 6, "val": 1, "test": 6}
    assert "exact_match" in rec["metrics"]["test"]
    out = tmp_path / "without"
    result = CliRunner().invoke(app, ["run", "--task", "multidoc_qa", "--subtasks", "hotpotqa", "--out", str(out),
                                      *FAST])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(out)
    assert rec["status"] == "skipped" and "hotpot_qa" in rec["reason"]


def test_family_lists_subtasks_and_grows_context_with_budget():
    task = TASKS.get("multidoc_qa").obj
    names = [s.name for s in task.subtasks()]
    assert names[:len(GENERATED_SUBTASKS)] == list(GENERATED_SUBTASKS) and "hotpotqa" in names and "longbench_musique" in names
    contexts = [task.defaults(b)["context"] for b in ("cpu", "small", "medium", "large")]
    assert contexts == sorted(contexts) and len(set(contexts)) == 4 and contexts[2] >= 8192
