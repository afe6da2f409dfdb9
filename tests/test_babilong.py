"""BABILong-style family: the bAbI world and its questions checked on hand-built stories
(qa1-qa5), generated stories re-solved by an independent parser, determinism and disjoint
splits, facts hidden in order at the requested depth, BABILong's answer scoring and chance
level, the release loader on a fixture file, and a tiny end-to-end run."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bimix_bench.cli.app import app
from bimix_bench.config import budget_names, deep_merge, load_budget, resolve_config
from bimix_bench.errors import SkipCell
from bimix_bench.models.tokenizer import BOS, EOS, SEP, VOCAB_SIZE
from bimix_bench.registry import TASKS
from bimix_bench.results.records import read_records, validate_record
from bimix_bench.tasks.babilong import MAX_ANSWER_BYTES, example_maker
from bimix_bench.tasks.babilong.evaluation import answer_metrics
from bimix_bench.tasks.babilong.haystack import hide_facts
from bimix_bench.tasks.babilong.real import load_release
from bimix_bench.tasks.babilong.scoring import TASK_LABELS, chance_level, guess_rate, is_correct
from bimix_bench.tasks.babilong.stories import (
    SUBTASKS,
    about_relation,
    about_transfer,
    make_story,
    max_story_bytes,
    where_before,
    where_object,
    where_person,
)
from bimix_bench.tasks.babilong.world import Event, Relation, World
from bimix_bench.tasks.multidoc_qa.corpus import python_docs_corpus
from tests.scripted_reader import ScriptedReader

SETTINGS = {"qa1": {"min_facts": 2, "max_facts": 10}, "qa2": {"min_facts": 4, "max_facts": 20},
            "qa3": {"min_facts": 6, "max_facts": 30}, "qa5": {"min_facts": 4, "max_facts": 16}}
CFG = {"facts_window": [0.0, 1.0], **SETTINGS}


def world_of(*events: Event) -> World:
    world = World()
    for e in events:
        world.apply(e)
    return world


def texts(*events: Event) -> list[str]:
    return [e.sentence() for e in events]


# --- hand-checked stories -----------------------------------------------------------------------
def test_qa1_single_supporting_fact():
    story = (Event("move", "Mary", "bathroom", verb="moved to"), Event("move", "John", "hallway", verb="went to"),
             Event("move", "Mary", "office", verb="travelled to"))
    assert texts(*story) == ["Mary moved to the bathroom.", "John went to the hallway.",
                             "Mary travelled to the office."]
    world = world_of(*story)
    assert where_person(world, "Mary") == ("Where is Mary?", "office")  # her latest move
    assert where_person(world, "John") == ("Where is John?", "hallway")
    assert world.possible("move", ("Mary",)) == [Event("move", "Mary", p) for p in
                                                 ("bathroom", "bedroom", "garden", "hallway", "kitchen")]


def test_qa2_two_supporting_facts():
    story = (Event("move", "John", "kitchen", verb="journeyed to"), Event("grab", "John", "milk", verb="got"),
             Event("move", "Sandra", "office"), Event("move", "John", "garden", verb="went back to"))
    assert texts(*story) == ["John journeyed to the kitchen.", "John got the milk there.",
                             "Sandra moved to the office.", "John went back to the garden."]
    world = world_of(*story)
    assert where_object(world, "milk") == ("Where is the milk?", "garden")  # carried by John
    world = world_of(*story, Event("drop", "John", "milk", verb="put down"), Event("move", "John", "bedroom"))
    assert Event("drop", "John", "milk", verb="put down").sentence() == "John put down the milk."
    assert where_object(world, "milk")[1] == "garden"  # put down there, then John left
    # Only someone whose place is known picks something up, and only where it lies.
    assert {e.actor for e in world.possible("grab", ("John", "Sandra", "Mary"))} == {"John", "Sandra"}
    assert Event("grab", "Sandra", "milk") not in world.possible("grab", ("Sandra",))  # milk is in the garden
    assert Event("grab", "Sandra", "apple") in world.possible("grab", ("Sandra",))  # never seen: anywhere


def test_qa3_three_supporting_facts():
    story = (Event("move", "Daniel", "hallway"), Event("grab", "Daniel", "apple", verb="grabbed"),
             Event("move", "Daniel", "kitchen"), Event("move", "Mary", "garden"), Event("move", "Daniel", "office"),
             Event("drop", "Daniel", "apple", verb="discarded"))
    assert texts(*story)[1] == "Daniel grabbed the apple there." and texts(*story)[5] == "Daniel discarded the apple."
    world = world_of(*story)
    assert world.history["apple"] == ["hallway", "kitchen", "office"]
    assert where_before(world, "apple", "kitchen") == ("Where was the apple before the kitchen?", "hallway")
    assert where_before(world, "apple", "office")[1] == "kitchen"
    with pytest.raises(ValueError):
        where_before(world, "apple", "hallway")  # nothing before its first place
    back = world_of(*story[:5], Event("move", "Daniel", "hallway"))
    with pytest.raises(ValueError):
        where_before(back, "apple", "hallway")  # there twice: ambiguous


def test_qa4_two_argument_relations():
    relation = Relation("hallway", "east", "bathroom")
    assert relation.sentence() == "The hallway is east of the bathroom."
    assert relation.inverse().sentence() == "The bathroom is west of the hallway."
    assert about_relation(relation, ask_place=True) == ("What is east of the bathroom?", "hallway")
    assert about_relation(relation, ask_place=False) == ("What is the hallway east of?", "bathroom")
    assert about_relation(relation.inverse(), ask_place=False) == ("What is the bathroom west of?", "hallway")
    assert about_relation(relation.inverse(), ask_place=True) == ("What is west of the hallway?", "bathroom")


def test_qa5_three_argument_relations():
    story = (Event("move", "Fred", "kitchen"), Event("grab", "Fred", "apple", verb="picked up"),
             Event("give", "Fred", "apple", "Bill", verb="gave"), Event("give", "Bill", "apple", "Jeff", verb="handed"),
             Event("give", "Jeff", "apple", "Bill", verb="passed"))
    assert texts(*story)[2:] == ["Fred gave the apple to Bill.", "Bill handed the apple to Jeff.",
                                 "Jeff passed the apple to Bill."]
    world = world_of(*story)
    first = world.transfers[0]  # Fred -> Bill; the questions below are built from it
    assert about_transfer(world, "receiver", first) == ("Who received the apple?", "Bill")
    assert about_transfer(world, "giver", first) == ("Who gave the apple?", "Jeff")  # the latest
    assert about_transfer(world, "giver_to", first) == ("Who gave the apple to Bill?", "Jeff")
    assert about_transfer(world, "receiver_from", first) == ("Who did Fred give the apple to?", "Bill")
    assert about_transfer(world, "object", first) == ("What did Fred give to Bill?", "apple")
    assert world.holder["apple"] == "Bill"
    assert {(e.actor, e.receiver) for e in world.possible("give", ("Fred", "Bill", "Jeff"))} == {
        ("Bill", "Fred"), ("Bill", "Jeff")}  # only the holder hands it on


# --- generated stories, re-solved independently -----------------------------------------------------
NAME = r"(Mary|John|Daniel|Sandra|Fred|Bill|Jeff)"
MOVE = re.compile(NAME + r" (?:moved to|went to|journeyed to|travelled to|went back to) the (\w+)\.")
GRAB = re.compile(NAME + r" (?:picked up|got|grabbed|took) the (\w+) there\.")
DROP = re.compile(NAME + r" (?:dropped|discarded|put down|left) the (\w+)\.")
GIVE = re.compile(NAME + r" (?:gave|handed|passed) the (\w+) to " + NAME + r"\.")
RELATION = re.compile(r"The (\w+) is (north|south|east|west) of the (\w+)\.")
ANY_FACT = re.compile("|".join(f"(?:{p.pattern})" for p in (MOVE, GRAB, DROP, GIVE, RELATION)))
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
# qa5's questions: pattern, which fields of a hand-over (giver, object, receiver) it names, and
# the field it asks for.
TRANSFER_FORMS = {
    "giver_to": (r"Who gave the (\w+) to (\w+)\?", (1, 2), 0),
    "receiver": (r"Who received the (\w+)\?", (1,), 2),
    "giver": (r"Who gave the (\w+)\?", (1,), 0),
    "receiver_from": (r"Who did (\w+) give the (\w+) to\?", (0, 1), 2),
    "object": (r"What did (\w+) give to (\w+)\?", (0, 2), 1),
}


def solve(facts: tuple[str, ...], question: str) -> str:
    """The answer from the story's text alone, by a second implementation of bAbI's world."""
    at, holds, lies, trail, gives, near = {}, {}, {}, defaultdict(list), [], set()
    for fact in facts:
        if m := MOVE.fullmatch(fact):
            at[m[1]] = m[2]
        elif m := GRAB.fullmatch(fact):
            assert m[1] in at and m[2] not in holds and lies.get(m[2]) in (None, at[m[1]]), fact
            holds[m[2]] = m[1]
            lies.pop(m[2], None)
        elif m := DROP.fullmatch(fact):
            assert holds.pop(m[2]) == m[1], fact
            lies[m[2]] = at.get(m[1])
        elif m := GIVE.fullmatch(fact):
            assert holds[m[2]] == m[1] != m[3], fact
            holds[m[2]] = m[3]
            gives.append((m[1], m[2], m[3]))
        else:
            m = RELATION.fullmatch(fact)
            near |= {(m[1], m[2], m[3]), (m[3], OPPOSITE[m[2]], m[1])}
        for obj in set(holds) | set(lies):
            place = at.get(holds[obj]) if obj in holds else lies[obj]
            if place and trail[obj][-1:] != [place]:
                trail[obj].append(place)
    if m := re.fullmatch(r"Where is (\w+)\?", question):
        return at[m[1]]
    if m := re.fullmatch(r"Where is the (\w+)\?", question):
        return at[holds[m[1]]] if m[1] in holds else lies[m[1]]
    if m := re.fullmatch(r"Where was the (\w+) before the (\w+)\?", question):
        assert trail[m[1]].count(m[2]) == 1
        return trail[m[1]][trail[m[1]].index(m[2]) - 1]
    if m := re.fullmatch(r"What is (\w+) of the (\w+)\?", question):
        (answer,) = [a for a, d, b in near if (d, b) == (m[1], m[2])]
        return answer
    if m := re.fullmatch(r"What is the (\w+) (\w+) of\?", question):
        (answer,) = [b for a, d, b in near if (a, d) == (m[1], m[2])]
        return answer
    for pattern, named, asked in TRANSFER_FORMS.values():
        if m := re.fullmatch(pattern, question):
            return [t for t in gives if tuple(t[k] for k in named) == m.groups()][-1][asked]
    raise AssertionError(f"unknown question {question!r}")


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_generated_answers_match_an_independent_solver(subtask):
    settings = SETTINGS.get(subtask, {})
    for i in range(40):
        story = make_story(subtask, np.random.default_rng([7, i]), settings)
        assert story.answer == solve(story.facts, story.question), (story, i)
        assert story.answer in TASK_LABELS[subtask]
        n = 2 if subtask == "qa4" else len(story.facts)
        assert subtask == "qa4" or settings["min_facts"] <= n <= settings["max_facts"]
        used = sum(len(f) + 1 for f in story.facts) + len(story.question)
        assert used <= max_story_bytes(subtask, settings)


def test_question_kinds_and_story_lengths_vary():
    questions = [make_story("qa5", np.random.default_rng(i), SETTINGS["qa5"]).question for i in range(80)]
    kinds = {kind for q in questions for kind, (pattern, _, _) in TRANSFER_FORMS.items() if re.fullmatch(pattern, q)}
    assert kinds == set(TRANSFER_FORMS)
    lengths = {len(make_story("qa1", np.random.default_rng(i), SETTINGS["qa1"]).facts) for i in range(80)}
    assert min(lengths) == 2 and max(lengths) == 10


# --- examples: determinism, splits, depth -------------------------------------------------------------
def parts(ids: torch.Tensor) -> tuple[str, str]:
    """The context and the question of a prompt (independent of layout.py)."""
    ids = ids.long().tolist()
    assert ids[0] == BOS and ids[-1] == SEP and ids.count(SEP) == 2
    cut = ids.index(SEP)
    return bytes(ids[1:cut]).decode("ascii"), bytes(ids[cut + 1 : -1]).decode("ascii")


def test_examples_are_pure_functions_of_seed_split_index():
    make = example_maker("qa2", CFG, seed=0)
    a, b = make("train", 5, 1000), example_maker("qa2", CFG, seed=0)("train", 5, 1000)
    assert torch.equal(a.qa.prompt, b.qa.prompt) and a.answer == b.answer and len(a.qa.prompt) == 1000
    assert not torch.equal(make("val", 5, 1000).qa.prompt, a.qa.prompt)
    assert not torch.equal(example_maker("qa2", CFG, seed=1)("train", 5, 1000).qa.prompt, a.qa.prompt)
    longer = make("train", 5, 3000)  # the same story and question in more background
    assert parts(longer.qa.prompt)[1] == parts(a.qa.prompt)[1] and longer.answer == a.answer


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_splits_are_disjoint(subtask):
    task = TASKS.get("babilong").obj
    cfg = resolve_config("tiny", "babilong", task.defaults("tiny"), {}, [])["task"]
    data = task.load(subtask, cfg, 0, None)
    seen = {s: {getattr(data, s).fetch(i)[0].numpy().tobytes() for i in range(min(64, len(getattr(data, s))))}
            for s in ("train", "val", "test")}
    assert all(len(v) == min(64, len(getattr(data, s))) for s, v in seen.items())
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])


@pytest.mark.parametrize("window", [(0.0, 1.0), (0.5, 0.75), (0.0, 0.2), (0.8, 1.0)])
def test_facts_lie_in_order_inside_the_depth_window(window):
    """The facts found in the prompt text answer its question; each lies inside the window; the
    text around them is unbroken documentation prose."""
    corpus = python_docs_corpus().text.decode("ascii")
    settings = {"min_facts": 6, "max_facts": 12}
    make = example_maker("qa3", {**CFG, "facts_window": list(window), "qa3": settings}, seed=3)
    for i in range(8):
        example = make("test", i, 4000)
        context, question = parts(example.qa.prompt)
        assert len(example.qa.prompt) == 4000 and question == example.question
        found = list(ANY_FACT.finditer(context))
        facts = tuple(m[0] for m in found)
        assert 6 <= len(facts) <= 12 and solve(facts, question) == example.answer  # in story order
        for m in found:
            assert int(window[0] * len(context)) <= m.start() and m.end() + 1 <= window[1] * len(context), \
                (window, m.start() / len(context))
        background = context
        for m in reversed(found):
            background = background[: m.start()] + background[m.end() + 1 :]  # the fact and its space
        assert background in corpus


def test_hide_facts_at_sentence_starts():
    background = b"One two. Three four. Five six. Seven eight."
    text, offsets = hide_facts([b"A b. ", b"C d. "], background, (0.0, 1.0), np.random.default_rng(0))
    assert text.replace(b"A b. ", b"").replace(b"C d. ", b"") == background
    assert [text[o : o + 5] for o in offsets] == [b"A b. ", b"C d. "]
    assert all(o == 0 or text[o - 2 : o] == b". " or text[o - 5 : o] == b"A b. " for o in offsets)
    # A window without a sentence start falls back to word starts inside it.
    text, offsets = hide_facts([b"X. "], background, (0.3, 0.4), np.random.default_rng(0))
    assert text[offsets[0] - 1 : offsets[0]] == b" " and 0.3 <= offsets[0] / len(text) <= 0.4


# --- scoring and chance ----------------------------------------------------------------------------
def test_babilong_answer_rule():
    places = TASK_LABELS["qa3"]
    q = "Where was the apple before the kitchen?"
    assert is_correct("garden", "garden", q, places) and is_correct("The Garden.", "garden", q, places)
    assert is_correct("kitchen, then garden", "garden", q, places)  # labels in the question never count
    assert not is_correct("garden or office", "garden", q, places)  # two candidates: wrong
    assert is_correct("garden. office", "garden", q, places)  # only the first sentence counts
    assert not is_correct("", "garden", q, places) and not is_correct("hallway", "garden", q, places)
    assert is_correct("bill", "Bill", "Who did Fred give the apple to?", TASK_LABELS["qa5"])


def test_chance_level_is_a_story_blind_guess():
    labels = TASK_LABELS["qa5"]
    assert guess_rate("Bill", "Who received the apple?", labels) == 1 / 4
    assert guess_rate("Jeff", "Who gave the apple to Bill?", labels) == 1 / 3
    assert guess_rate("milk", "What did Fred give to Bill?", labels) == 1 / 3
    assert guess_rate("office", "Where is Mary?", TASK_LABELS["qa1"]) == 1 / 6
    assert guess_rate("office", "What is north of the garden?", TASK_LABELS["qa4"]) == 1 / 5
    assert chance_level([("Who gave the apple?", "Fred"), ("What did Fred give to Bill?", "milk")], labels) == \
        pytest.approx((1 / 4 + 1 / 3) / 2)
    task = TASKS.get("babilong").obj
    cfg = resolve_config("tiny", "babilong", task.defaults("tiny"), {}, [])["task"]
    for subtask, expected in (("qa1", 1 / 6), ("qa3", 1 / 5), ("qa4", 1 / 5)):
        level = task.chance(subtask, task.load(subtask, cfg, 0, None).meta)
        assert level.metric == "exact_match" and level.value == pytest.approx(expected)
    assert 1 / 4 < task.chance("qa5", task.load("qa5", cfg, 0, None).meta).value < 1 / 3




def test_exact_match_through_generation():
    make = example_maker("qa1", CFG, seed=0)
    examples = [make("test", i, 600) for i in range(8)]
    cfg = deep_merge(load_budget("tiny"), {"train": {"precision": "fp32"}, "eval": {"test_examples": 100}})
    key = lambda e: tuple(e.qa.prompt.long().tolist())  # noqa: E731
    right = {key(e): f"{e.answer}." for e in examples}
    out = answer_metrics(ScriptedReader(right), examples, TASK_LABELS["qa1"], torch.device("cpu"), cfg,
                         MAX_ANSWER_BYTES, 4)
    assert out == {"exact_match": 1.0, "n_questions": 8}
    # The answer room is the longest label and EOS: a wordier answer is cut before its label ends.
    wordy = {key(e): f"the {e.answer}" for e in examples}
    out = answer_metrics(ScriptedReader(wordy), examples, TASK_LABELS["qa1"], torch.device("cpu"), cfg,
                         MAX_ANSWER_BYTES, 4)
    assert out["exact_match"] == 0.0
    half = {key(e): e.answer if i % 2 else "nowhere" for i, e in enumerate(examples)}
    out = answer_metrics(ScriptedReader(half), examples, TASK_LABELS["qa1"], torch.device("cpu"), cfg,
                         MAX_ANSWER_BYTES, 4)
    assert out["exact_match"] == 0.5


# --- BABILong's published rows, from a fixture file ----------------------------------------------
RELEASE_CFG = {"from_hub": False, "hub_id": "RMT-team/babilong", "length": "0k",
               "train_fraction": 0.6, "val_fraction": 0.1}
SIZES = {"train": 100, "val": 100, "test": 100}


def release_rows(n: int) -> list[dict[str, str]]:
    people, places = ("Mary", "John", "Daniel", "Sandra"), ("bathroom", "garden", "office", "kitchen")
    return [{"input": f"{people[i % 4]} went to the {places[i % 4]}. {people[(i + 1) % 4]} moved to the "
                      f"{places[(i + 2) % 4]}. (row {i})",
             "question": f"Where is {people[i % 4]}?", "target": places[i % 4]} for i in range(n)]


def write_release(root, rows: list[dict], as_list: bool = False) -> None:
    folder = root / "babilong" / "data" / "qa1"
    folder.mkdir(parents=True)
    text = json.dumps(rows) if as_list else "\n".join(json.dumps(r) for r in rows)
    (folder / "0k.json").write_text(text)


@pytest.mark.parametrize("as_list", [False, True])
def test_release_loader_on_a_fixture_file(tmp_path, as_list):
    rows = release_rows(40) + [{"input": "Mary went to the office. " * 20, "question": "Where is Mary?",
                                "target": "office"}]
    write_release(tmp_path, rows, as_list)
    splits, meta = load_release("qa1", RELEASE_CFG, SIZES, 200, tmp_path)
    assert sum(len(v) for v in splits.values()) == 40 and all(splits.values())
    assert meta["rows"] == 41 and meta["too_long_skipped"] == 1 and "0k.json" in meta["source"]
    ex = splits["test"][0]
    context, question = parts(ex.qa.prompt)
    row = next(r for r in rows if r["input"] == context)
    assert question == row["question"] == ex.question and ex.answer == row["target"]
    inputs, targets = ex.qa.inputs_and_targets(MAX_ANSWER_BYTES)
    assert [t for t in targets.tolist() if t != -100] == [*row["target"].encode(), EOS]  # answer only
    again, _ = load_release("qa1", RELEASE_CFG, SIZES, 200, tmp_path)
    assert [e.question + e.answer for e in again["val"]] == [e.question + e.answer for e in splits["val"]]


def test_release_through_the_family_and_skipped_without_data(tmp_path):
    write_release(tmp_path, release_rows(40))
    task = TASKS.get("babilong").obj
    cfg = resolve_config("tiny", "babilong", task.defaults("tiny"), {}, [])["task"]
    data = task.load("release_qa1", cfg, 0, tmp_path)
    assert sum(data.meta["sizes"].values()) == 40 and data.longer_test is None
    assert task.chance("release_qa1", data.meta).value == pytest.approx(1 / 6)
    with pytest.raises(SkipCell, match="babilong/data/qa2/0k.json"):
        task.load("release_qa2", cfg, 0, tmp_path)
    with pytest.raises(SkipCell, match="from_hub"):
        task.load("release_qa1", cfg, 0, None)


# --- the family -------------------------------------------------------------------------------------
def test_family_settings_per_budget():
    task = TASKS.get("babilong").obj
    names = [s.name for s in task.subtasks()]
    assert names == [*SUBTASKS, *(f"release_{qa}" for qa in SUBTASKS)]
    contexts = {b: task.defaults(b)["context"] for b in budget_names()}
    assert contexts == {"tiny": 512, "cpu": 1024, "small": 4096, "medium": 8192, "large": 16384}
    for budget in budget_names():  # every default story fits its budget's prompt
        cfg = task.defaults(budget)
        for subtask in SUBTASKS:
            assert max_story_bytes(subtask, cfg.get(subtask, {})) + 3 <= cfg["context"] - MAX_ANSWER_BYTES


def question_of(inputs: torch.Tensor) -> bytes:
    """The question of an example's inputs: the ids between its two SEPs."""
    ids = inputs.tolist()
    first = ids.index(SEP)
    return bytes(ids[first + 1 : ids.index(SEP, first + 1)])


def test_longer_test_keeps_the_stories():
    task = TASKS.get("babilong").obj
    cfg = resolve_config("tiny", "babilong", task.defaults("tiny"), {}, [])["task"]
    data = task.load("qa2", cfg, 0, None)
    longer = data.at_length(4)
    assert longer.context == 4 * 512 and longer.extra_metrics is None
    for i in range(4):
        (x, y), (base_x, base_y) = longer.test.fetch(i), data.test.fetch(i)
        assert 3 * 512 < len(x) <= 4 * 512 and question_of(x) == question_of(base_x)
        assert y[y != -100].tolist() == base_y[base_y != -100].tolist()  # the same answer
        context = bytes(x[1 : x.tolist().index(SEP)].tolist()).decode("ascii")
        base = bytes(base_x[1 : base_x.tolist().index(SEP)].tolist()).decode("ascii")
        assert [m[0] for m in ANY_FACT.finditer(context)] == [m[0] for m in ANY_FACT.finditer(base)]


def test_tiny_run_through_the_cli(tmp_path):
    result = CliRunner().invoke(app, [
        "run", "--task", "babilong", "--budget", "tiny", "--models", "transformer", "--out", str(tmp_path),
        "--no-checkpoints", "--set", "train.steps=2", "--set", "train.eval_every=2",
        "--set", "throughput.repeats=1", "--set", "throughput.decode_tokens=2",
        "--set", "task.n_test=6", "--set", "task.n_val=4", "--set", "eval.length_examples=4"])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(tmp_path)
    validate_record(rec)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["subtask"] == "qa1"
    test = rec["metrics"]["test"]
    assert 0.0 <= test["exact_match"] <= 1.0 and test["n_questions"] == 6
    assert test["n_bytes"] > 0 and test["bits_per_byte_len2x"] > 0  # answer bytes; 2x the context
    assert rec["data"]["chance_exact_match"] == pytest.approx(1 / 6)
    assert rec["data"]["prompt_len"] == 512 - MAX_ANSWER_BYTES
