"""What things a scene holds: mentioned groups (singular, plural, position-named) and distractors.

Rules that keep every phrase unambiguous: each (colour, shape) pair belongs to at most one
mentioned group, and a distractor never has the (colour, shape) of a mentioned group, so "the red
circle" is the only red circle and "two red circles" are all the red circles of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from groundrt.vocabulary import Vocabulary

MAX_THINGS = 12  # drawn things, distractors included
MAX_PHRASES = 9  # mentioned thing phrases
P_POSITION = 0.22  # scenes with a group told apart by position words
P_THREE_POSITIONS = 0.25  # of those, groups of three (left / middle / right)
P_PLURAL = 0.3  # other groups that are plural
P_LOOKALIKE = 0.45  # scenes that add a same-shape thing in a look-alike colour
P_SMALL = 0.45  # things of size class "small"
GROUP_COUNTS = (1, 2, 3, 4, 5)
GROUP_COUNT_P = (0.25, 0.3, 0.25, 0.12, 0.08)
DISTRACTOR_P = (0.3, 0.3, 0.25, 0.15)  # P(0..3 distractors)


@dataclass(frozen=True)
class ThingSpec:
    color: str
    shape: str
    size: str  # "small" or "large"
    group: int  # index into ThingPlan.groups; -1 for a distractor (drawn, never mentioned)


@dataclass
class Group:
    """Things of one colour and shape mentioned together: one phrase ("singular", "plural") or
    one phrase per member ("position", members told apart along `axis`: "x" or "y")."""

    color: str
    shape: str
    kind: str
    count: int
    axis: str | None = None


@dataclass
class ThingPlan:
    groups: list[Group]
    things: list[ThingSpec] = field(default_factory=list)

    def mentioned_pairs(self) -> set[tuple[str, str]]:
        return {(g.color, g.shape) for g in self.groups}


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def plan_things(rng: np.random.Generator, vocab: Vocabulary) -> ThingPlan:
    """Groups to mention and distractors to draw; at most MAX_THINGS things, MAX_PHRASES phrases."""
    colors = list(vocab.colors)
    shapes = [c.name for c in vocab.things]
    used: set[tuple[str, str]] = set()

    def new_pair(color: str | None = None, shape: str | None = None) -> tuple[str, str] | None:
        for _ in range(40):
            pair = (color or _pick(rng, colors), shape or _pick(rng, shapes))
            if pair not in used:
                used.add(pair)
                return pair
        return None

    groups: list[Group] = []
    if rng.random() < P_POSITION:
        first = new_pair()
        assert first is not None  # nothing is used yet
        n = 3 if rng.random() < P_THREE_POSITIONS else 2
        groups.append(Group(*first, "position", n, "x" if rng.random() < 0.6 else "y"))
    for _ in range(int(rng.choice(GROUP_COUNTS, p=GROUP_COUNT_P))):
        pair = new_pair()
        if pair is None:
            continue
        if rng.random() < P_PLURAL:
            groups.append(Group(*pair, "plural", int(rng.choice((2, 3, 4), p=(0.5, 0.3, 0.2)))))
        else:
            groups.append(Group(*pair, "singular", 1))

    extra: list[tuple[str, str]] = []  # distractors (colour, shape)
    if rng.random() < P_LOOKALIKE:
        with_lookalikes = [g for g in groups if vocab.lookalikes(g.color)]
        if with_lookalikes:
            g = with_lookalikes[int(rng.integers(len(with_lookalikes)))]
            pair = new_pair(_pick(rng, sorted(vocab.lookalikes(g.color))), g.shape)
            if pair is not None:
                if rng.random() < 0.5:
                    groups.append(Group(*pair, "singular", 1))
                else:
                    extra.append(pair)

    mentioned = {(g.color, g.shape) for g in groups}
    n_distractors = int(rng.choice(len(DISTRACTOR_P), p=DISTRACTOR_P)) - len(extra)
    for _ in range(max(n_distractors, 0)):
        g = groups[int(rng.integers(len(groups)))]
        for _ in range(20):
            if rng.random() < 0.5:  # same colour, other shape
                pair = (g.color, _pick(rng, shapes))
            elif vocab.lookalikes(g.color) and rng.random() < 0.5:
                pair = (_pick(rng, sorted(vocab.lookalikes(g.color))), g.shape)
            else:  # same shape, other colour
                pair = (_pick(rng, colors), g.shape)
            if pair not in mentioned:
                extra.append(pair)
                break

    _fit_budget(groups, extra)
    things: list[ThingSpec] = []
    for gi, g in enumerate(groups):
        for _ in range(g.count):
            things.append(ThingSpec(g.color, g.shape, _size(rng), gi))
    things += [ThingSpec(c, s, _size(rng), -1) for c, s in extra]
    return ThingPlan(groups, things)


def _size(rng: np.random.Generator) -> str:
    return "small" if rng.random() < P_SMALL else "large"


def _fit_budget(groups: list[Group], extra: list[tuple[str, str]]) -> None:
    """Drop distractors, then shrink plurals, then drop groups until the budgets hold."""
    def things() -> int:
        return sum(g.count for g in groups) + len(extra)

    def phrases() -> int:
        return sum(g.count if g.kind == "position" else 1 for g in groups)

    while things() > MAX_THINGS or phrases() > MAX_PHRASES:
        plurals = [g for g in groups if g.kind == "plural" and g.count > 2]
        if extra and things() > MAX_THINGS:
            extra.pop()
        elif plurals and things() > MAX_THINGS:
            max(plurals, key=lambda g: g.count).count -= 1
        else:
            groups.pop()
