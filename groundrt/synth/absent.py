"""Phrases that name nothing in a scene: a colour-and-shape pair no thing has, a stuff class
the layout lacks, or (rarely) a word outside the vocabulary.

Most absent pairs are hard negatives: their colour and their shape are both in the scene, on
different things ("a blue star" beside a blue circle and a red star), or the colour is a
look-alike of a thing's colour of that shape; only a network that binds colour to shape answers
them "not found". (The first recipe drew any free pair: the v2 teacher left 91% of the absent
things "found".)

Drawn from their own random stream, `np.random.default_rng([seed, index, ABSENT_STREAM])`, so
adding them changed no pixel or caption of the scenes.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from groundrt.data.absent import AbsentPhrase
from groundrt.synth import captions
from groundrt.synth.scene import Scene
from groundrt.vocabulary import Vocabulary

ABSENT_STREAM = 1
COUNT = (2, 4)  # absent phrases per scene, inclusive
P_KIND = {"thing": 0.7, "stuff": 0.2, "unknown": 0.1}
P_HARD = 0.75  # of absent things: a hard negative, where the scene has one
P_PLURAL = 0.25  # of absent things: "two purple stars"
SYLLABLES = ("zo", "ka", "ru", "mi", "pe", "lo", "qua", "vex", "tri", "bo")


def _unknown_word(rng: np.random.Generator) -> str:
    return "".join(str(s) for s in rng.choice(SYLLABLES, int(rng.integers(2, 4))))


def hard_pairs(vocab: Vocabulary, present_pairs: set[tuple[str, str]],
               free_pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The free pairs whose colour and shape are both in the scene (on other things), or whose
    colour looks like that of a thing of the same shape."""
    colors = {c for c, _ in present_pairs}
    shapes = {s for _, s in present_pairs}
    lookalike = {(a, s) for c, s in present_pairs for a in vocab.lookalikes(c)}
    return [(c, s) for c, s in free_pairs
            if (c in colors and s in shapes) or (c, s) in lookalike]


def absent_phrases(rng: np.random.Generator, vocab: Vocabulary, scene: Scene,
                   image_id: str, wording: ModuleType = captions) -> list[AbsentPhrase]:
    """COUNT phrases (fewer when two draws name the same pair or class), each naming a different
    pair or class, that no segment of `scene` answers (worded by `wording`, the scene's
    renderer's phrase texts)."""
    present_pairs = {(t.spec.color, t.spec.shape) for t in scene.things}
    free_pairs = [(c, s) for c in vocab.colors for s in vocab.plural_nouns
                  if (c, s) not in present_pairs]
    hard = hard_pairs(vocab, present_pairs, free_pairs)
    present_stuff = {scene.layout.classes[k] for k in np.unique(scene.layout.labels)}
    free_stuff = [c.name for c in vocab.stuff if c.name not in present_stuff]
    kinds, p = list(P_KIND), np.array(list(P_KIND.values()))
    out: dict[object, AbsentPhrase] = {}  # by what they name: one phrase per pair or class
    for _ in range(int(rng.integers(COUNT[0], COUNT[1] + 1))):
        kind = str(rng.choice(kinds, p=p / p.sum()))
        if kind == "stuff" and not free_stuff:
            kind = "thing"
        plural = False
        if kind == "thing":
            pool = hard if hard and rng.random() < P_HARD else free_pairs
            color, shape = key = pool[int(rng.integers(len(pool)))]
            plural = bool(rng.random() < P_PLURAL)
            text = (wording.plural_text(rng, vocab, color, shape, int(rng.integers(2, 5)))
                    if plural else
                    wording.singular_text(rng, color, shape, str(rng.choice(vocab.sizes))))
        elif kind == "stuff":
            key = free_stuff[int(rng.integers(len(free_stuff)))]
            text = wording.stuff_text(rng, key)
        else:
            text = key = f"{rng.choice(('a', 'the'))} {_unknown_word(rng)}"
        out.setdefault(key, AbsentPhrase(image_id, text, kind, plural))
    return list(out.values())
