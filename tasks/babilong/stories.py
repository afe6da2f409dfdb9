"""bAbI stories and their questions, qa1-qa5 (Weston et al. 2015), as BABILong uses them: one
question per story, asked after its last fact.

  qa1  single supporting fact     moves only; "Where is Mary?" -> her last place
  qa2  two supporting facts       moves, pick-ups, put-downs; "Where is the football?" -> the
                                  place of whoever holds it, or where it was put down
  qa3  three supporting facts     as qa2; "Where was the apple before the kitchen?" -> the place
                                  the apple was at just before it came to the kitchen (asked only
                                  of a place it has been at once, so the answer is unique)
  qa4  two-argument relations     two facts "The office is north of the bedroom." around a shared
                                  place; "What is north of the bedroom?" -> office, or "What is the
                                  bedroom south of?" -> office (either side, either direction)
  qa5  three-argument relations   hand-overs among Fred, Bill, Jeff and Mary, plus moves, pick-ups
                                  and put-downs; "Who gave the apple to Bill?", "Who received the
                                  apple?", "Who gave the apple?", "Who did Fred give the apple
                                  to?", "What did Fred give to Bill?"; a question built from one
                                  hand-over is answered by the latest hand-over that fits it

Events are drawn one at a time from those the world's rules allow (world.py), by kind with the
weights below, then uniformly; a story whose world admits no question of its task is drawn again.
Everything comes from the numpy generator passed in, so a story is a pure function of its state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from bimix_bench.tasks.babilong.world import (
    DIRECTIONS,
    FACT_FORMS,
    GIVERS,
    OBJECTS,
    PEOPLE,
    PLACES,
    QUESTION_FORMS,
    VERBS,
    Event,
    Relation,
    World,
    longest_form_bytes,
)

SUBTASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")
EVENT_WEIGHTS = {
    "qa1": {"move": 1.0},
    "qa2": {"move": 2.0, "grab": 1.0, "drop": 1.0},
    "qa3": {"move": 2.0, "grab": 1.0, "drop": 1.0},
    "qa5": {"move": 1.0, "grab": 1.0, "drop": 1.0, "give": 2.0},
}
CAST = {"qa1": PEOPLE, "qa2": PEOPLE, "qa3": PEOPLE, "qa5": GIVERS}
TRANSFER_QUESTIONS = ("giver_to", "receiver", "giver", "receiver_from", "object")
QUESTION_KINDS = {"qa1": ("where_person",), "qa2": ("where_object",), "qa3": ("where_before",),
                  "qa4": ("what_is_direction_of", "what_is_place_direction_of"), "qa5": TRANSFER_QUESTIONS}
RELATION_FACTS = 2  # qa4 stories: two relations around a shared place, as in bAbI
_ATTEMPTS = 1000


@dataclass(frozen=True)
class Story:
    facts: tuple[str, ...]  # the story's sentences in order, each ending with "."
    question: str
    answer: str  # one word: a place, a person or an object


# --- questions about a world --------------------------------------------------------------------
def where_person(world: World, person: str) -> tuple[str, str]:
    return QUESTION_FORMS["where_person"].format(person=person), world.location[person]


def where_object(world: World, obj: str) -> tuple[str, str]:
    return QUESTION_FORMS["where_object"].format(object=obj), world.place_of(obj)


def where_before(world: World, obj: str, place: str) -> tuple[str, str]:
    """The place before `place` in the object's history (`place` must occur there once)."""
    seen = world.history[obj]
    if seen.count(place) != 1 or seen[0] == place:
        raise ValueError(f"the {obj} was not at the {place} exactly once after another place: {seen}")
    question = QUESTION_FORMS["where_before"].format(object=obj, place=place)
    return question, seen[seen.index(place) - 1]


def about_transfer(world: World, kind: str, transfer: Event) -> tuple[str, str]:
    """A question of `kind` built from a hand-over, answered by the latest hand-over that fits."""
    fits = {
        "giver_to": (("target", "receiver"), "actor"),
        "receiver": (("target",), "receiver"),
        "giver": (("target",), "actor"),
        "receiver_from": (("actor", "target"), "receiver"),
        "object": (("actor", "receiver"), "target"),
    }
    given, asked = fits[kind]
    latest = [t for t in world.transfers if all(getattr(t, k) == getattr(transfer, k) for k in given)][-1]
    question = QUESTION_FORMS[kind].format(person=transfer.actor, object=transfer.target,
                                           receiver=transfer.receiver)
    return question, getattr(latest, asked)


def about_relation(relation: Relation, ask_place: bool) -> tuple[str, str]:
    """"What is north of the bedroom?" -> office (ask_place) or "What is the office north of?"
    -> bedroom, for the relation "The office is north of the bedroom." """
    if ask_place:
        question = QUESTION_FORMS["what_is_direction_of"].format(direction=relation.direction,
                                                                 reference=relation.reference)
        return question, relation.place
    question = QUESTION_FORMS["what_is_place_direction_of"].format(place=relation.place,
                                                                   direction=relation.direction)
    return question, relation.reference


# --- drawing stories ----------------------------------------------------------------------------
def _pick(rng: np.random.Generator, items: list | tuple):
    return items[int(rng.integers(len(items)))]


def simulate(rng: np.random.Generator, subtask: str, n_events: int) -> tuple[list[Event], World]:
    world, events, weights = World(), [], EVENT_WEIGHTS[subtask]
    for _ in range(n_events):
        options = {kind: world.possible(kind, CAST[subtask]) for kind in weights}
        kinds = [kind for kind in weights if options[kind]]  # a move is always possible
        p = np.array([weights[k] for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        event = dataclasses.replace(_pick(rng, options[kind]), verb=_pick(rng, VERBS[kind]))
        world.apply(event)
        events.append(event)
    return events, world


def _question(rng: np.random.Generator, subtask: str, world: World) -> tuple[str, str] | None:
    """A question of the task about the world, or None when the world admits none."""
    if subtask == "qa1":
        return where_person(world, _pick(rng, [p for p in PEOPLE if p in world.location]))
    if subtask == "qa2":
        known = [obj for obj in OBJECTS if world.place_of(obj) is not None]
        return where_object(world, _pick(rng, known)) if known else None
    if subtask == "qa3":
        askable = [(obj, place) for obj in OBJECTS for place in world.history[obj][1:]
                   if world.history[obj].count(place) == 1]
        return where_before(world, *_pick(rng, askable)) if askable else None
    if not world.transfers:
        return None
    return about_transfer(world, _pick(rng, TRANSFER_QUESTIONS), _pick(rng, world.transfers))


def relations_story(rng: np.random.Generator) -> Story:
    """qa4: places A and C next to a shared place B in two different directions, each fact
    written from either side, in either order; the question asks about one of them."""
    shared, first, second = (PLACES[i] for i in rng.choice(len(PLACES), size=3, replace=False))
    d1, d2 = (DIRECTIONS[i] for i in rng.choice(len(DIRECTIONS), size=2, replace=False))
    relations = [Relation(first, d1, shared), Relation(second, d2, shared)]
    written = [r.inverse() if rng.random() < 0.5 else r for r in relations]
    if rng.random() < 0.5:
        written.reverse()
    asked = _pick(rng, relations)
    question, answer = about_relation(asked.inverse() if rng.random() < 0.5 else asked,
                                      ask_place=bool(rng.random() < 0.5))
    return Story(tuple(r.sentence() for r in written), question, answer)


def make_story(subtask: str, rng: np.random.Generator, settings: dict[str, Any]) -> Story:
    """A story of the task. `settings`: min_facts, max_facts (the story's length is drawn
    uniformly between them); qa4 takes none."""
    if subtask == "qa4":
        return relations_story(rng)
    low, high = int(settings["min_facts"]), int(settings["max_facts"])
    if not 1 <= low <= high:
        raise ValueError(f"{subtask}: need 1 <= min_facts <= max_facts, got {low}, {high}")
    for _ in range(_ATTEMPTS):
        events, world = simulate(rng, subtask, int(rng.integers(low, high + 1)))
        asked = _question(rng, subtask, world)
        if asked is not None:
            return Story(tuple(e.sentence() for e in events), *asked)
    raise ValueError(f"{subtask}: no story of {low}-{high} facts admitted a question in {_ATTEMPTS} "
                     f"draws; raise min_facts")


def max_story_bytes(subtask: str, settings: dict[str, Any]) -> int:
    """An upper bound on a story's facts (each followed by a space) plus its question, in bytes."""
    n_facts = RELATION_FACTS if subtask == "qa4" else int(settings["max_facts"])
    kinds = ("relation",) if subtask == "qa4" else tuple(EVENT_WEIGHTS[subtask])
    fact = max(longest_form_bytes(FACT_FORMS[k]) for k in kinds) + 1
    return n_facts * fact + max(longest_form_bytes(QUESTION_FORMS[q]) for q in QUESTION_KINDS[subtask])
