"""The held-out renderer: the same scenes (layouts, things, placement and which phrase names
what, from `groundrt.synth.scene`), drawn and worded otherwise, to measure how a model trained
on the training renderer's scenes generalizes. Never train on it.

It differs in how pixels are made (`things`: supersampled anti-aliasing, lit shading, patterns,
soft shadows; `textures`: other noise and patterns; `camera`: other tone, blur, noise and JPEG
range), in image sizes and aspect ratios (SIZES), and in its captions' sentence frames, word
orders and connectives (`captions`). `groundrt data synth --renderer heldout` writes it in the
official format.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from groundrt.synth.heldout import camera, captions, things
from groundrt.synth.heldout.textures import TEXTURES
from groundrt.synth.layouts import StuffLayout
from groundrt.synth.placement import Placement
from groundrt.synth.scene import Renderer, draw_size, paint_stuff
from groundrt.vocabulary import Vocabulary

ASPECTS = ((5, 4), (4, 5), (2, 1), (9, 16), (7, 5), (5, 7))  # none of the training's
LONG_SIDE = (200, 720)


def paint(rng: np.random.Generator, vocab: Vocabulary, layout: StuffLayout,
          placement: Placement) -> tuple[np.ndarray, int]:
    img = paint_stuff(rng, layout, TEXTURES)
    things.paint_things(rng, vocab, img, placement.things)
    image_bgr = camera.sensor(camera.optics(camera.tone(img, rng), rng), rng)
    return image_bgr, camera.jpeg_quality(rng)


HELDOUT = Renderer("heldout", partial(draw_size, aspects=ASPECTS, long_side=LONG_SIDE), paint,
                   captions)
