"""One procedural scene: stuff layout, things, camera effects, panoptic ids and its caption.

`render_sample(seed, index)` is pure: every random draw comes from
`np.random.default_rng([seed, index])`, so any worker renders the same bits for the same pair.

What a scene holds (layout, things, placement, which phrase names what) is drawn here for every
renderer; a `Renderer` makes its pixels (image size, stuff, things, camera) and its words
(phrase texts and the caption's sentences). `TRAINING` is the training data's;
`groundrt.synth.heldout` has another, kept apart to measure generalization.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from groundrt.synth import captions, degrade
from groundrt.synth.captions import Phrase
from groundrt.synth.layouts import StuffLayout, make_layout
from groundrt.synth.placement import PlacedThing, Placement, place_things
from groundrt.synth.plan import ThingPlan, plan_things
from groundrt.synth.sample import SegmentInfo, SynthSample, join_utterances
from groundrt.synth.shapes import paint
from groundrt.synth.textures import TEXTURES, TextureFn, stuff_texture
from groundrt.vocabulary import Vocabulary, load_vocabulary

ASPECTS = ((1, 1), (4, 3), (3, 4), (16, 9), (3, 2), (2, 3))  # W:H of random sizes
LONG_SIDE = (240, 640)  # random sizes: long side uniform in this range (inclusive)
MIN_SIZE = 32
STUFF_ID_BASE = 1000  # stuff segment id = STUFF_ID_BASE + category id; things are 1, 2, ...
MIN_STUFF_SHARE = 0.01  # stuff covering at least this share of the image is mentioned
SMALL_PX = 24  # "small": a visible bbox whose longest side is below this
OCCLUDED = 0.2  # "occluded": at least this share of a thing's own area hidden
COLOR_JITTER = 15  # per channel, per thing
GROUND_SHARE = 0.6  # "... on the grass" when this share of the mentioned things is on the grass


@dataclass
class Scene:
    """What a sample was made of, for tests and debugging: thing i has segment id i + 1."""

    layout: StuffLayout
    plan: ThingPlan
    placement: Placement
    mentioned: set[int]  # indices of things some phrase names

    @property
    def things(self) -> list[PlacedThing]:
        return self.placement.things


def draw_size(rng: np.random.Generator, aspects: tuple[tuple[int, int], ...] = ASPECTS,
              long_side: tuple[int, int] = LONG_SIDE) -> tuple[int, int]:
    """A random (W, H): long side uniform in `long_side`, aspect ratio (W:H) one of `aspects`."""
    long = int(rng.integers(long_side[0], long_side[1] + 1))
    aw, ah = aspects[int(rng.integers(len(aspects)))]
    return (long, round(long * ah / aw)) if aw >= ah else (round(long * aw / ah), long)


def paint_stuff(rng: np.random.Generator, layout: StuffLayout,
                textures: dict[str, TextureFn] = TEXTURES) -> np.ndarray:
    """[H, W, 3] float32 RGB: each stuff class's texture of `textures` over its pixels (drawn
    over the class's bounding box, in the layout's class order)."""
    h, w = layout.labels.shape
    img = np.empty((h, w, 3), np.float32)
    for k, name in enumerate(layout.classes):
        m = layout.labels == k
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if not len(rows):
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        tex = stuff_texture(name, rng, int(y1 - y0), int(x1 - x0), (int(x0), int(y0)),
                            layout.road, textures)
        np.copyto(img[y0:y1, x0:x1], tex, where=m[y0:y1, x0:x1, None])
    return img


def _paint_things(rng: np.random.Generator, vocab: Vocabulary, img: np.ndarray,
                  things: list[PlacedThing]) -> None:
    for t in things:
        rgb = np.asarray(vocab.colors[t.spec.color], np.float32)
        rgb = np.clip(rgb + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255)
        tm = t.shape_mask
        col = paint(tm, t.cx, t.cy, t.radius, rgb, t.style, rng)
        h, w = tm.mask.shape
        np.copyto(img[tm.y0:tm.y0 + h, tm.x0:tm.x0 + w], col, where=tm.mask[..., None])


def _bbox(mask: np.ndarray, x0: int = 0, y0: int = 0) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]) + x0, int(rows[0]) + y0, int(cols[-1] - cols[0]) + 1,
            int(rows[-1] - rows[0]) + 1)


def _segments(vocab: Vocabulary, layout: StuffLayout, placement: Placement
              ) -> tuple[np.ndarray, list[SegmentInfo], dict[str, tuple[int, float]]]:
    """Panoptic ids [H, W] int32, segments of visible pixels, and per stuff class present its
    (segment id, centroid y / H)."""
    h, w = layout.labels.shape
    lut = np.array([STUFF_ID_BASE + vocab.category(n).id for n in layout.classes], np.int32)
    ids = lut[layout.labels]
    owner = placement.owner
    on = owner >= 0
    ids[on] = owner[on].astype(np.int32) + 1
    segments: list[SegmentInfo] = []
    for i, t in enumerate(placement.things):
        tm = t.shape_mask
        mh, mw = tm.mask.shape
        m = owner[tm.y0:tm.y0 + mh, tm.x0:tm.x0 + mw] == i
        area = int(np.count_nonzero(m))
        assert area == t.visible_area, (i, area, t.visible_area)
        segments.append(SegmentInfo(i + 1, vocab.category(t.spec.shape).id,
                                    _bbox(m, tm.x0, tm.y0), area))
    stuff: dict[str, tuple[int, float]] = {}
    rows = np.arange(h, dtype=np.float64)
    for k, name in enumerate(layout.classes):
        m = ids == lut[k]
        per_row = np.count_nonzero(m, axis=1)
        area = int(per_row.sum())
        if area:
            segments.append(SegmentInfo(int(lut[k]), vocab.category(name).id, _bbox(m), area))
            stuff[name] = (int(lut[k]), float(per_row @ rows) / area / h)
    return ids, segments, stuff


def _phenomena(vocab: Vocabulary, scene: Scene, members: list[int], position: bool,
               segments: dict[int, SegmentInfo]) -> list[str]:
    things = scene.things
    color, shape = things[members[0]].spec.color, things[members[0]].spec.shape
    look = vocab.lookalikes(color)
    out = ["position"] if position else []
    if any(t.spec.shape == shape and t.spec.color in look for t in things):
        out.append("lookalike")
    if any(max(segments[m + 1].bbox[2:]) < SMALL_PX for m in members):
        out.append("small")
    if any(things[m].hidden_fraction >= OCCLUDED for m in members):
        out.append("occluded")
    if any(i not in scene.mentioned and (t.spec.color == color or t.spec.shape == shape)
           for i, t in enumerate(things)):
        out.append("distractor")
    return out


def _paint_training(rng: np.random.Generator, vocab: Vocabulary, layout: StuffLayout,
                    placement: Placement) -> tuple[np.ndarray, int]:
    img = paint_stuff(rng, layout)
    _paint_things(rng, vocab, img, placement.things)
    return degrade.camera(degrade.light(img, rng), rng), degrade.jpeg_quality(rng)


@dataclass(frozen=True)
class Renderer:
    """How a scene becomes pixels and words.

    draw_size(rng) -> (W, H) of a scene without a given size; paint(rng, vocab, layout,
    placement) -> (BGR uint8 image, JPEG quality), things stacked in placement order (a pixel's
    ground truth is `placement.owner`, whatever the paint does at edges); wording: a module with
    the phrase texts `singular_text`, `plural_text`, `position_text`, `stuff_text` and the
    caption's `compose` (the signatures of `groundrt.synth.captions`).
    """

    name: str
    draw_size: Callable[[np.random.Generator], tuple[int, int]]
    paint: Callable[[np.random.Generator, Vocabulary, StuffLayout, Placement],
                    tuple[np.ndarray, int]]
    wording: ModuleType


TRAINING = Renderer("training", draw_size, _paint_training, captions)


def _thing_blocks(rng: np.random.Generator, vocab: Vocabulary, scene: Scene,
                  segments: dict[int, SegmentInfo], wording: ModuleType) -> list[list[Phrase]]:
    """Phrases of the mentioned groups; a position group is one block of one phrase a member."""
    blocks = []
    for gi, g in enumerate(scene.plan.groups):
        members = scene.placement.groups[gi]
        if not members:
            continue
        if gi in scene.placement.position_groups:
            blocks.append([
                Phrase(wording.position_text(g.color, g.shape, scene.things[m].position or ""),
                       [m + 1], False, _phenomena(vocab, scene, [m], True, segments))
                for m in members])
            continue
        if len(members) == 1:
            text = wording.singular_text(rng, g.color, g.shape, scene.things[members[0]].spec.size)
        else:
            text = wording.plural_text(rng, vocab, g.color, g.shape, len(members))
        blocks.append([Phrase(text, [m + 1 for m in members], len(members) > 1,
                              _phenomena(vocab, scene, members, False, segments))])
    return blocks


def _ground(scene: Scene, stuff: list[Phrase]) -> Phrase | None:
    """The mentioned stuff under the centres of most (≥ GROUND_SHARE) mentioned things."""
    labels = scene.layout.labels
    under = Counter(scene.layout.classes[labels[int(t.cy), int(t.cx)]]
                    for i, t in enumerate(scene.things) if i in scene.mentioned)
    by_name = {s.name: s for s in stuff}
    name, n = under.most_common(1)[0] if under else ("", 0)
    if name in by_name and n >= GROUND_SHARE * len(scene.mentioned):
        return by_name[name]
    return None


def render_scene(seed: int, index: int, size: tuple[int, int] | None = None,
                 renderer: Renderer = TRAINING) -> tuple[SynthSample, Scene]:
    """`render_sample`, plus the scene it was made of."""
    rng = np.random.default_rng([seed, index])
    vocab = load_vocabulary()
    if size is None:
        w, h = renderer.draw_size(rng)
    else:
        w, h = int(size[0]), int(size[1])
        if w < MIN_SIZE or h < MIN_SIZE:
            raise ValueError(f"size must be at least {MIN_SIZE}x{MIN_SIZE} (W, H), got {w}x{h}")
    layout = make_layout(rng, w, h)
    plan = plan_things(rng, vocab)
    placement = place_things(rng, plan, w, h)
    mentioned = {m for members in placement.groups for m in members}
    scene = Scene(layout, plan, placement, mentioned)

    image_bgr, quality = renderer.paint(rng, vocab, layout, placement)

    ids, segments, stuff_present = _segments(vocab, layout, placement)
    by_id = {s.id: s for s in segments}
    wording = renderer.wording
    blocks = _thing_blocks(rng, vocab, scene, by_id, wording)
    stuff = sorted((Phrase(wording.stuff_text(rng, name), [sid], name=name, height=y)
                    for name, (sid, y) in stuff_present.items()
                    if by_id[sid].area >= MIN_STUFF_SHARE * w * h), key=lambda p: p.height)
    utterances = wording.compose(rng, blocks, stuff, _ground(scene, stuff))
    sample = SynthSample(image_bgr, quality, ids, segments, join_utterances(utterances),
                         utterances)
    return sample, scene


def render_sample(seed: int, index: int, size: tuple[int, int] | None = None,
                  renderer: Renderer = TRAINING) -> SynthSample:
    """Scene `index` of the dataset drawn from `seed`, at `size` (W, H) or a random size.

    Deterministic: the same (seed, index, size, renderer) gives bit-identical arrays and
    captions. With a given size, two renderers draw the same layout, things and placement.
    """
    return render_scene(seed, index, size, renderer)[0]
