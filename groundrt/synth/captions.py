"""Localized-Narratives-style captions: noun phrases of a scene joined by random templates.

The caption is a list of utterances: grounded noun phrases, ungrounded connecting words, and now
and then an ungrounded noun ("this picture"). Templates are written in lower case, "[...]" marks
an ungrounded noun and "{is}" the verb agreeing with the first listed phrase; sentence starts
are capitalised as the utterances are emitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from groundrt.synth.sample import UtteranceSpec
from groundrt.vocabulary import Vocabulary

P_SIZE_WORD = 0.35  # singular phrases naming their size class
P_COUNT_WORD = 0.65  # plural phrases naming their count ("two") rather than "several"
P_UNGROUNDED_NOUN = 0.35  # "[this picture]" emitted as a noun with no segment
# The topmost stuff is "at the top" when its centroid is above TOP·H, the lowest "at the bottom"
# when below BOTTOM·H.
TOP, BOTTOM = 0.4, 0.6

THING_INTROS = (
    "in [this picture] we can see",
    "in [this image] I can see",
    "this is [an image] of",
    "here we can see",
    "in the front we can see",
    "we can see",
    "in [this picture] there {is}",
    "I can see",
    "[the image] shows",
    "in the middle of [the image] we can see",
    "in [this picture] I can see",
    "there {is}",
)
STUFF_INTROS = ("in [this picture] we can see", "in [this image] I can see", "here we can see",
                "this is [an image] of")
STUFF_TAILS = ("positional", "background", "behind", "also", "subject")
STUFF_TEXT = {"sky": ("the sky",), "grass": ("the grass", "grass"), "water": ("the water",),
              "sand": ("the sand", "sand"), "road": ("the road", "a road"),
              "wall": ("a wall", "the wall")}


@dataclass
class Phrase:
    """A grounded noun phrase (lower case). Stuff phrases also carry their class `name` and
    `height`, their centroid's y as a share of the image height."""

    text: str
    segment_ids: list[int]
    plural: bool = False
    phenomena: list[str] = field(default_factory=list)
    name: str = ""
    height: float = 0.5


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


SINGULAR_DETERMINERS = (("a", "the", "one"), (0.5, 0.4, 0.1))  # words, probabilities


def singular_text(rng: np.random.Generator, color: str, shape: str, size: str,
                  determiners: tuple = SINGULAR_DETERMINERS, p_size: float = P_SIZE_WORD) -> str:
    """"a small blue star", "the red circle", "one large green hexagon" (size word truthful);
    the held-out wording passes its own determiners and size-word share."""
    det = str(rng.choice(determiners[0], p=determiners[1]))
    words = ([size] if rng.random() < p_size else []) + [color, shape]
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return " ".join([det, *words])


def plural_text(rng: np.random.Generator, vocab: Vocabulary, color: str, shape: str,
                count: int, p_count: float = P_COUNT_WORD, p_the: float = 0.0) -> str:
    """"two red circles", "several pink rings" (count in 2..4); with `p_the` (the held-out
    wording) a count word sometimes takes "the": "the three red circles"."""
    numbers = [w for w, n in vocab.counts.items() if n == count]
    if numbers and rng.random() < p_count:
        # p_the 0 draws nothing more: the training captions' random stream is unchanged
        word = ("the " if p_the and rng.random() < p_the else "") + numbers[0]
    else:
        word = _pick(rng, vocab.plural_words)
    return f"{word} {color} {vocab.plural_nouns[shape]}"


def position_text(color: str, shape: str, position: str) -> str:
    """"the red circle on the left"."""
    return f"the {color} {shape} {position}"


def stuff_text(rng: np.random.Generator, name: str) -> str:
    return _pick(rng, STUFF_TEXT[name])


class CaptionBuilder:
    """Assembles utterances: connecting words, grounded phrases, capitalised sentence starts."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.out: list[UtteranceSpec] = []
        self.start = True

    def _cap(self, text: str) -> str:
        if self.start:
            self.start = False
            return text[:1].upper() + text[1:]
        return text

    def _words(self, text: str) -> None:
        text = self._cap(text.strip())
        last = self.out[-1] if self.out else None
        if last is not None and not last.noun:
            sep = "" if text[:1] in ".,;:!?" else " "
            last.utterance = last.utterance + sep + text
        else:
            self.out.append(UtteranceSpec(text))
        self.start = text.endswith(".")

    def say(self, template: str, plural: bool = False) -> None:
        """Connecting words; "[...]" parts may become ungrounded nouns."""
        template = template.replace("{is}", "are" if plural else "is")
        for part in re.split(r"(\[[^\]]*\])", template):
            if not part.strip():
                continue
            if part.startswith("[") and self.rng.random() < P_UNGROUNDED_NOUN:
                self.out.append(UtteranceSpec(self._cap(part[1:-1]), noun=True))
            else:
                self._words(part.strip("[]").strip())

    def phrase(self, p: Phrase) -> None:
        self.out.append(UtteranceSpec(self._cap(p.text), list(p.segment_ids), p.plural, True,
                                      list(p.phenomena)))

    def listing(self, phrases: list[Phrase], last: str = "and") -> None:
        """The phrases separated by commas, the last two by `last`."""
        for i, p in enumerate(phrases):
            if i:
                self._words("," if i < len(phrases) - 1 else last)
            self.phrase(p)

    def stop(self) -> None:
        self._words(".")


def _preposition(ground: Phrase) -> str:
    return "in" if ground.name == "sky" else "on"


def _things(b: CaptionBuilder, blocks: list[list[Phrase]], intro: str,
            ground: Phrase | None) -> None:
    """One or two sentences naming every thing phrase (blocks stay together)."""
    split = len(blocks)
    if sum(map(len, blocks)) >= 4 and len(blocks) >= 2 and b.rng.random() < 0.4:
        split = int(b.rng.integers(1, len(blocks)))
    first = [p for blk in blocks[:split] for p in blk]
    b.say(intro, first[0].plural or len(first) > 1)
    b.listing(first)
    if ground is not None:
        b.say(_preposition(ground))
        b.phrase(ground)
    if intro == "we can see" and b.rng.random() < 0.5:
        b.say("in [this picture]")
    b.stop()
    if split < len(blocks):
        b.say(_pick(b.rng, ("we can also see", "there {is} also", "beside them there {is}")),
              blocks[split][0].plural or len(blocks) - split > 1)
        b.listing([p for blk in blocks[split:] for p in blk])
        b.stop()


def _stuff_tail(b: CaptionBuilder, stuff: list[Phrase], style: str) -> None:
    """Sentences naming every phrase of `stuff` (sorted top to bottom)."""
    if not stuff:
        return
    if style in ("background", "behind", "also"):
        intro = {"background": _pick(b.rng, ("in the background we can see",
                                             "in the background there {is}")),
                 "behind": "behind them there {is}", "also": "we can also see"}[style]
        b.say(intro, stuff[0].plural)
        b.listing(stuff)
        b.stop()
        return
    for i, s in enumerate(stuff):
        where = ("top" if i == 0 and s.height < TOP else
                 "bottom" if i == len(stuff) - 1 and s.height > BOTTOM else "middle")
        if style == "subject":
            b.phrase(s)
            b.say({"top": "is at the top", "bottom": "is at the bottom",
                   "middle": _pick(b.rng, ("is in the background", "is also visible"))}[where])
        else:
            b.say(_pick(b.rng, {"top": ("at the top there is", "at the top we can see",
                                        "at the top of [the image] there is"),
                                "bottom": ("at the bottom we can see", "at the bottom there is"),
                                "middle": ("in the middle there is", "we can also see")}[where]))
            b.phrase(s)
        b.stop()


def compose(rng: np.random.Generator, blocks: list[list[Phrase]], stuff: list[Phrase],
            ground: Phrase | None) -> list[UtteranceSpec]:
    """Caption utterances naming every phrase once: thing phrases in `blocks` (a position group
    is one block, kept in order), `stuff` sorted top to bottom, `ground` (one of `stuff`, or
    None) the stuff the things stand on."""
    b = CaptionBuilder(rng)
    order = [blocks[i] for i in rng.permutation(len(blocks))]
    template = rng.random()
    if ground is not None and rng.random() < 0.6:
        rest = [s for s in stuff if s is not ground]
    else:
        ground, rest = None, list(stuff)
    if template < 0.15 and rest:  # stuff first, then the things on the ground
        b.say(_pick(rng, STUFF_INTROS), rest[0].plural)
        b.listing(rest)
        b.stop()
        if ground is not None:
            b.say("on")
            b.phrase(ground)
            b.say("there {is}", order[0][0].plural or sum(map(len, order)) > 1)
            b.listing([p for blk in order for p in blk])
            b.stop()
        else:
            _things(b, order, _pick(rng, ("in the front we can see", "we can also see",
                                          "there {is} also")), None)
    elif template < 0.25 and any(s.height > BOTTOM for s in rest):  # bottom stuff first
        bottom = [s for s in rest if s.height > BOTTOM][-1]
        b.say(_pick(rng, ("at the bottom we can see", "at the bottom of [the image] there is")))
        b.phrase(bottom)
        b.stop()
        _things(b, order, _pick(rng, THING_INTROS[:6]), ground)
        _stuff_tail(b, [s for s in rest if s is not bottom], _pick(rng, STUFF_TAILS[:4]))
    else:
        intro = _pick(rng, THING_INTROS)
        _things(b, order, intro, ground)
        _stuff_tail(b, rest, _pick(rng, STUFF_TAILS))
    return b.out
