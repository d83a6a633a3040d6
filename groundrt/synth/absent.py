"""Phrases that name nothing in a scene: a colour-and-shape pair no thing has, a stuff class
the layout lacks, or (rarely) a word outside the vocabulary.

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
COUNT = (1, 3)  # absent phrases per scene, inclusive
P_KIND = {"thing": 0.6, "stuff": 0.3, "unknown": 0.1}
P_PLURAL = 0.25  # of absent things: "two purple stars"
SYLLABLES = ("zo", "ka", "ru", "mi", "pe", "lo", "qua", "vex", "tri", "bo")


def _unknown_word(rng: np.random.Generator) -> str:
    return "".join(str(s) for s in rng.choice(SYLLABLES, int(rng.integers(2, 4))))


def absent_phrases(rng: np.random.Generator, vocab: Vocabulary, scene: Scene,
                   image_id: str, wording: ModuleType = captions) -> list[AbsentPhrase]:
    """1 to 3 phrases, each naming a different pair or class, that no segment of `scene` answers
    (worded by `wording`, the scene's renderer's phrase texts)."""
    present_pairs = {(t.spec.color, t.spec.shape) for t in scene.things}
    free_pairs = [(c, s) for c in vocab.colors for s in vocab.plural_nouns
                  if (c, s) not in present_pairs]
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
            color, shape = key = free_pairs[int(rng.integers(len(free_pairs)))]
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
