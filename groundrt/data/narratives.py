"""Narratives of `png_coco_*.json`: utterances, and how they line up with the caption's words."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from groundrt.text.words import WORD_PATTERN


@dataclass(frozen=True)
class Word:
    text: str  # lower-cased, accents stripped
    start: int  # character offsets in the text it came from
    end: int


def basic_words(text: str) -> list[Word]:
    """Words of `text` as BERT's basic tokenizer splits them (lower case, punctuation apart)."""
    words = []
    for m in WORD_PATTERN.finditer(text):
        norm = unicodedata.normalize("NFD", m.group().lower())
        norm = "".join(ch for ch in norm if unicodedata.category(ch) != "Mn")
        words.append(Word(norm, m.start(), m.end()))
    return words


def utterance_words(utterance: str) -> list[str]:
    """Words of one utterance as the official preprocessing counts them.

    It splits a contraction's "n't" into "'" and "t" and tokenizes both sides of it, so
    "is" + "n't" counts as three words, as "isn't" does in the caption.
    """
    text = utterance.strip()
    index = text.lower().find("n't")
    if index < 0:
        return [w.text for w in basic_words(text)]
    return utterance_words(text[:index]) + ["'", "t"] + utterance_words(text[index + 3:])


@dataclass(frozen=True)
class Utterance:
    """One entry of a narrative's `segments`."""

    text: str
    segment_ids: tuple[int, ...] = ()
    plural: bool = False
    noun: bool = False
    phenomena: tuple[str, ...] = ()  # groundrt's extra field; the official format ignores it

    @property
    def grounded(self) -> bool:
        return self.noun and len(self.segment_ids) > 0

    @classmethod
    def from_json(cls, raw: dict) -> Utterance:
        return cls(
            text=str(raw["utterance"]),
            segment_ids=tuple(int(s) for s in raw.get("segment_ids", [])),
            plural=bool(raw.get("plural", False)),
            noun=bool(raw.get("noun", False)),
            phenomena=tuple(raw.get("phenomena", ())),
        )

    def to_json(self) -> dict:
        out = {"utterance": self.text, "segment_ids": [str(s) for s in self.segment_ids],
               "plural": self.plural, "noun": self.noun}
        if self.phenomena:
            out["phenomena"] = list(self.phenomena)
        return out


@dataclass(frozen=True)
class Narrative:
    """One localized narrative of the PNG format."""

    image_id: str
    annotator_id: int
    caption: str
    utterances: tuple[Utterance, ...] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, raw: dict) -> Narrative:
        return cls(
            image_id=str(raw["image_id"]),
            annotator_id=int(raw.get("annotator_id", 0)),
            caption=str(raw["caption"]),
            utterances=tuple(Utterance.from_json(s) for s in raw["segments"]),
        )

    def to_json(self) -> dict:
        return {"image_id": self.image_id, "annotator_id": self.annotator_id,
                "caption": self.caption, "segments": [u.to_json() for u in self.utterances]}

    def utterance_word_spans(self) -> list[tuple[int, int]] | None:
        """Each utterance's [start, end) range of caption words, or None when they do not join.

        The official rule: the utterances join into the caption when their words, counted as
        `utterance_words` counts them, are as many as the caption's. Word k of the utterances is
        then word k of the caption.
        """
        spans, position = [], 0
        for u in self.utterances:
            n = len(utterance_words(u.text))
            spans.append((position, position + n))
            position += n
        return spans if position == len(basic_words(self.caption.strip())) else None

    def char_span(self, word_span: tuple[int, int]) -> tuple[int, int]:
        """Characters of the caption covered by caption words [start, end)."""
        stripped = self.caption.strip()
        offset = self.caption.index(stripped) if stripped else 0
        words = basic_words(stripped)
        start, end = word_span
        if start >= end:  # an utterance with no words: an empty span where it stands
            at = words[start].start if start < len(words) else len(stripped)
            return offset + at, offset + at
        return offset + words[start].start, offset + words[end - 1].end
