"""The bAbI world (Weston et al. 2015) that babilong's stories happen in: people move between
places, pick up, put down and hand over objects; places lie north, south, east or west of one
another. Vocabulary and sentence forms are bAbI's.

A `World` applies events in story order and knows where everyone is, where every object is
and has been, and every hand-over. It enforces the world's rules for generated stories: an
object is picked up only where it lies (or where nobody has seen it yet) by someone whose place
is known ("... picked up the milk there."), and only its holder puts it down or hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PEOPLE = ("Mary", "John", "Daniel", "Sandra")  # qa1-qa3
GIVERS = ("Fred", "Bill", "Jeff", "Mary")  # qa5
PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
VERBS = {
    "move": ("moved to", "went to", "journeyed to", "travelled to", "went back to"),
    "grab": ("picked up", "got", "grabbed", "took"),
    "drop": ("dropped", "discarded", "put down", "left"),
    "give": ("gave", "handed", "passed"),
}
DIRECTIONS = ("north", "south", "east", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}

# Every sentence the generator writes is one of these forms; a slot named after an event kind
# holds one of that kind's verbs.
FACT_FORMS = {
    "move": "{person} {move} the {place}.",
    "grab": "{person} {grab} the {object} there.",
    "drop": "{person} {drop} the {object}.",
    "give": "{person} {give} the {object} to {receiver}.",
    "relation": "The {place} is {direction} of the {reference}.",
}
QUESTION_FORMS = {
    "where_person": "Where is {person}?",
    "where_object": "Where is the {object}?",
    "where_before": "Where was the {object} before the {place}?",
    "what_is_direction_of": "What is {direction} of the {reference}?",
    "what_is_place_direction_of": "What is the {place} {direction} of?",
    "giver_to": "Who gave the {object} to {receiver}?",
    "receiver": "Who received the {object}?",
    "giver": "Who gave the {object}?",
    "receiver_from": "Who did {person} give the {object} to?",
    "object": "What did {person} give to {receiver}?",
}
_SLOT_WORDS = {"person": PEOPLE + GIVERS, "receiver": GIVERS, "place": PLACES, "reference": PLACES,
               "object": OBJECTS, "direction": DIRECTIONS, **VERBS}


def longest_form_bytes(form: str) -> int:
    """Bytes of the longest sentence a form can make (every slot filled with its longest word)."""
    return len(form.format(**{slot: max(words, key=len) for slot, words in _SLOT_WORDS.items()}))


@dataclass(frozen=True)
class Event:
    kind: str  # "move", "grab", "drop" or "give"
    actor: str
    target: str  # the place (move) or the object (grab, drop, give)
    receiver: str = ""  # give only
    verb: str = ""  # the verb as written; the kind's first verb when empty

    def sentence(self) -> str:
        verb = self.verb or VERBS[self.kind][0]
        return FACT_FORMS[self.kind].format(person=self.actor, place=self.target, object=self.target,
                                            receiver=self.receiver, **{self.kind: verb})


@dataclass(frozen=True)
class Relation:
    """"The {place} is {direction} of the {reference}." """

    place: str
    direction: str
    reference: str

    def sentence(self) -> str:
        return FACT_FORMS["relation"].format(place=self.place, direction=self.direction,
                                             reference=self.reference)

    def inverse(self) -> "Relation":
        """The same fact seen from the other place: A north of B is B south of A."""
        return Relation(self.reference, OPPOSITE[self.direction], self.place)


@dataclass
class World:
    location: dict[str, str] = field(default_factory=dict)  # person -> place, once they moved
    holder: dict[str, str] = field(default_factory=dict)  # object -> the person holding it
    dropped_at: dict[str, str | None] = field(default_factory=dict)  # object -> where put down
    history: dict[str, list[str]] = field(default_factory=dict)  # object -> places, no repeats in a row
    transfers: list[Event] = field(default_factory=list)  # the hand-overs, in story order

    def place_of(self, obj: str) -> str | None:
        """Where the object is: its holder's place, or where it was put down; None if unknown."""
        if obj in self.holder:
            return self.location.get(self.holder[obj])
        return self.dropped_at.get(obj)

    def apply(self, event: Event) -> None:
        if event.kind == "move":
            self.location[event.actor] = event.target
        elif event.kind == "grab":
            self.holder[event.target] = event.actor
        elif event.kind == "drop":
            del self.holder[event.target]
            self.dropped_at[event.target] = self.location.get(event.actor)
        else:
            self.holder[event.target] = event.receiver
            self.transfers.append(event)
        for obj in OBJECTS:
            place, seen = self.place_of(obj), self.history.setdefault(obj, [])
            if place is not None and (not seen or seen[-1] != place):
                seen.append(place)

    def possible(self, kind: str, people: tuple[str, ...]) -> list[Event]:
        """Every event of `kind` the rules allow now among `people` (verbs left empty)."""
        if kind == "move":
            return [Event("move", p, place) for p in people for place in PLACES
                    if self.location.get(p) != place]
        if kind == "grab":
            return [Event("grab", p, obj) for p in people if p in self.location for obj in OBJECTS
                    if obj not in self.holder and self.place_of(obj) in (None, self.location[p])]
        held = [(p, obj) for obj in OBJECTS for p in people if self.holder.get(obj) == p]
        if kind == "drop":
            return [Event("drop", p, obj) for p, obj in held]
        return [Event("give", p, obj, other) for p, obj in held for other in people if other != p]
