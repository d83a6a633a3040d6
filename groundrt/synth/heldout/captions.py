"""The held-out scenes' wording: other sentence frames, word orders and connectives than the
training captions (`groundrt.synth.captions`), with the same phrase semantics and vocabulary.

Phrases still follow the annotation convention: colour + shape things ("a small red circle",
"the two blue squares", "some pink rings"), one phrase per member of a position group ("the red
circle on the left"), stuff classes ("some grass"). The sentences around them differ: things as
the subject ("Two red circles and a star are resting on the grass."), the ground first ("On top
of the sand there is ..."), stuff before, between or after the things, listings joined by "as
well as", "plus", "along with". A frame never puts a position word right after a phrase (the
convention would read it as part of the phrase).

Frames: "{T}" the thing listing, "{G}" the ground phrase, "{S}" a stuff listing, "{is}" and
"[s]" the verb agreeing with the frame's subject (the things, else the first slot), "[...]" an
ungrounded noun now and then.
"""

from __future__ import annotations

import re

import numpy as np

from groundrt.synth import captions
from groundrt.synth.captions import BOTTOM, TOP, CaptionBuilder, Phrase
from groundrt.synth.sample import UtteranceSpec
from groundrt.vocabulary import Vocabulary

P_SIZE_WORD = 0.5
P_COUNT_WORD = 0.55
P_THE_COUNT = 0.3  # "the two red circles"
P_GROUND = 0.7  # scenes naming the ground in the things' sentence, when there is one
P_SPLIT = 0.35  # things told in two sentences (4+ phrases)
LAST_CONNECTIVES = ("and", "as well as", "plus", "along with", "and also")

# Things, with the ground they are on ({G}); "sky" grounds take the "in" frames.
GROUND_FRAMES = (
    "{T} {is} resting on {G}",
    "{T} {is} lying on {G}",
    "on top of {G} there {is} {T}",
    "{T} {is} placed on {G}",
    "[this photo] features {T} on top of {G}",
    "you can spot {T} sitting on {G}",
)
SKY_FRAMES = ("{T} {is} floating in {G}", "up in {G} you can spot {T}")
THING_FRAMES = (
    "{T} {is} visible in [this photo]",
    "[the photo] features {T}",
    "you can spot {T} here",
    "featured in [this shot] {is} {T}",
    "{T} {is} shown here",
    "[this snapshot] contains {T}",
    "what you see here {is} {T}",
)
MORE_THING_FRAMES = ("nearby {is} {T}", "{T} {is} also present", "close by you can spot {T}")
STUFF_FRAMES = (
    "{S} {is} visible behind them",
    "behind everything {is} {S}",
    "the backdrop consists of {S}",
    "{S} can be seen further back",
    "around them you can spot {S}",
)
STUFF_FIRST_FRAMES = ("[this photo] is mostly {S}", "{S} fill[s] most of [the frame]",
                      "you can spot {S} first")
STUFF_WHERE_FRAMES = {
    "top": ("{S} covers the upper part", "high above {is} {S}"),
    "bottom": ("{S} covers the lower part", "down below {is} {S}"),
    "middle": ("{S} can be seen as well", "also present {is} {S}"),
}
SINGULAR_DETERMINERS = (("a", "the", "one"), (0.55, 0.3, 0.15))
STUFF_TEXT = {"sky": ("the sky",), "grass": ("the grass", "some grass", "grass"),
              "water": ("the water", "some water"), "sand": ("the sand", "some sand", "sand"),
              "road": ("the road", "a road"), "wall": ("the wall", "a wall")}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def singular_text(rng: np.random.Generator, color: str, shape: str, size: str) -> str:
    """"a large red circle", "one blue star" (size word truthful)."""
    return captions.singular_text(rng, color, shape, size, SINGULAR_DETERMINERS, P_SIZE_WORD)


def plural_text(rng: np.random.Generator, vocab: Vocabulary, color: str, shape: str,
                count: int) -> str:
    """"the three red circles", "two red circles", "a few pink rings" (count in 2..4)."""
    return captions.plural_text(rng, vocab, color, shape, count, P_COUNT_WORD, P_THE_COUNT)


def position_text(color: str, shape: str, position: str) -> str:
    """"the red circle on the left" (the phrase the convention fixes)."""
    return f"the {color} {shape} {position}"


def stuff_text(rng: np.random.Generator, name: str) -> str:
    return _pick(rng, STUFF_TEXT[name])


def _plural(phrases: list[Phrase]) -> bool:
    return len(phrases) > 1 or phrases[0].plural


def _sentence(b: CaptionBuilder, frame: str, slots: dict[str, list[Phrase]]) -> None:
    """One sentence of `frame`; its verb agrees with the things when it names them, else with
    its first slot."""
    first = re.search(r"\{([TGS])\}", frame)
    assert first is not None, frame
    plural = _plural(slots["T" if "{T}" in frame else first.group(1)])
    frame = frame.replace("[s]", "" if plural else "s")
    last = _pick(b.rng, LAST_CONNECTIVES)
    for part in re.split(r"(\{[TGS]\})", frame):
        if part in ("{T}", "{G}", "{S}"):
            b.listing(slots[part[1]], last)
        elif part.strip():
            b.say(part, plural)
    b.stop()


def _things(b: CaptionBuilder, blocks: list[list[Phrase]], ground: Phrase | None) -> None:
    """The thing phrases (blocks stay together) in one or two sentences, the first naming the
    ground when there is one."""
    split = len(blocks)
    if sum(map(len, blocks)) >= 4 and len(blocks) >= 2 and b.rng.random() < P_SPLIT:
        split = int(b.rng.integers(1, len(blocks)))
    first = [p for blk in blocks[:split] for p in blk]
    if ground is None:
        _sentence(b, _pick(b.rng, THING_FRAMES), {"T": first})
    else:
        frames = SKY_FRAMES if ground.name == "sky" else GROUND_FRAMES
        _sentence(b, _pick(b.rng, frames), {"T": first, "G": [ground]})
    if split < len(blocks):
        _sentence(b, _pick(b.rng, MORE_THING_FRAMES),
                  {"T": [p for blk in blocks[split:] for p in blk]})


def _stuff(b: CaptionBuilder, stuff: list[Phrase], by_place: bool) -> None:
    """Sentences naming `stuff` (top to bottom): one listing, or one sentence each saying where."""
    if not stuff:
        return
    if not by_place:
        _sentence(b, _pick(b.rng, STUFF_FRAMES), {"S": stuff})
        return
    for i, s in enumerate(stuff):
        where = ("top" if i == 0 and s.height < TOP else
                 "bottom" if i == len(stuff) - 1 and s.height > BOTTOM else "middle")
        _sentence(b, _pick(b.rng, STUFF_WHERE_FRAMES[where]), {"S": [s]})


def compose(rng: np.random.Generator, blocks: list[list[Phrase]], stuff: list[Phrase],
            ground: Phrase | None) -> list[UtteranceSpec]:
    """Caption utterances naming every phrase once (the arguments of
    `groundrt.synth.captions.compose`)."""
    b = CaptionBuilder(rng)
    order = [blocks[i] for i in rng.permutation(len(blocks))]
    if ground is None or rng.random() >= P_GROUND:
        ground = None
    rest = [s for s in stuff if s is not ground]
    plan = rng.random()
    if plan < 0.25 and rest:  # stuff first, then the things
        _sentence(b, _pick(rng, STUFF_FIRST_FRAMES), {"S": rest})
        _things(b, order, ground)
    elif plan < 0.45 and len(rest) >= 2:  # the top stuff, the things, then the rest
        _stuff(b, rest[:1], True)
        _things(b, order, ground)
        _stuff(b, rest[1:], bool(rng.random() < 0.5))
    else:
        _things(b, order, ground)
        _stuff(b, rest, bool(rng.random() < 0.5))
    return b.out
