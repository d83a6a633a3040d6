"""The vocabulary of the procedural scenes (shared/vocabulary.json, shipped in the package)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

# Colours that a model must tell apart by small hue/brightness differences (issue 2).
LOOKALIKE_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"red", "orange", "pink"}),
    frozenset({"blue", "purple"}),
    frozenset({"white", "yellow"}),
    frozenset({"brown", "black"}),
)


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool


@dataclass(frozen=True)
class Vocabulary:
    things: tuple[Category, ...]
    stuff: tuple[Category, ...]
    colors: dict[str, tuple[int, int, int]]  # name -> RGB
    sizes: tuple[str, ...]
    counts: dict[str, int]
    plural_words: tuple[str, ...]
    positions: tuple[str, ...]
    plural_nouns: dict[str, str]

    @property
    def categories(self) -> tuple[Category, ...]:
        return self.things + self.stuff

    def category(self, name: str) -> Category:
        for c in self.categories:
            if c.name == name:
                return c
        raise KeyError(f"unknown category {name!r}")

    def lookalikes(self, color: str) -> frozenset[str]:
        """Colours easily confused with `color` (not including itself)."""
        for group in LOOKALIKE_GROUPS:
            if color in group:
                return group - {color}
        return frozenset()

    def coco_categories(self) -> list[dict]:
        """Categories in COCO panoptic form (`panoptic_*.json`)."""
        return [
            {"id": c.id, "name": c.name, "supercategory": "thing" if c.isthing else "stuff",
             "isthing": int(c.isthing)}
            for c in self.categories
        ]


def parse_vocabulary(raw: dict) -> Vocabulary:
    return Vocabulary(
        things=tuple(Category(t["id"], t["name"], True) for t in raw["things"]),
        stuff=tuple(Category(s["id"], s["name"], False) for s in raw["stuff"]),
        colors={k: tuple(v) for k, v in raw["colors"].items()},
        sizes=tuple(raw["sizes"]),
        counts=dict(raw["counts"]),
        plural_words=tuple(raw["plural_words"]),
        positions=tuple(raw["positions"]),
        plural_nouns=dict(raw["plural_nouns"]),
    )


@lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    """The shipped vocabulary (identical to shared/vocabulary.json; a test checks it)."""
    text = resources.files("groundrt").joinpath("vocabulary.json").read_text(encoding="utf-8")
    return parse_vocabulary(json.loads(text))
