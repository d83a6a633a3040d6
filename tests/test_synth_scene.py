"""The procedural scene generator: determinism, panoptic ids, captions, phrases, phenomena."""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import groundrt.synth
from groundrt.synth.captions import STUFF_TEXT
from groundrt.synth.placement import MAX_HIDDEN, position_order_ok
from groundrt.synth.sample import PHENOMENA, SynthSample, join_utterances
from groundrt.synth.scene import ASPECTS, Scene, render_sample, render_scene
from groundrt.synth.shapes import SHAPES
from groundrt.synth.textures import TEXTURES
from groundrt.vocabulary import load_vocabulary

VOCAB = load_vocabulary()
THING_IDS = {c.id for c in VOCAB.things}
STUFF_IDS = {c.id for c in VOCAB.stuff}
SHAPE_OF_WORD = {**{c.name: c.name for c in VOCAB.things},
                 **{v: k for k, v in VOCAB.plural_nouns.items()}}
N_SAMPLES = 200
SIZE = (320, 240)


@pytest.fixture(scope="module")
def scenes() -> list[tuple[SynthSample, Scene]]:
    return [render_scene(11, i, SIZE) for i in range(N_SAMPLES)]


def _thing_phrases(sample: SynthSample, scene: Scene):
    """Grounded utterances whose segments are things (thing i has segment id i + 1)."""
    cats = {s.id: s.category_id for s in sample.segments_info}
    return [u for u in sample.utterances
            if u.noun and u.segment_ids and cats[u.segment_ids[0]] in THING_IDS]


def _parse(text: str) -> tuple[str, str]:
    words = text.split()
    colors = [w for w in words if w in VOCAB.colors]
    shapes = [SHAPE_OF_WORD[w] for w in words if w in SHAPE_OF_WORD]
    assert len(colors) == 1 and len(shapes) == 1, text
    return colors[0], shapes[0]


def _check_segments(sample: SynthSample, jpeg_quality: tuple[int, int] = (60, 95)) -> None:
    ids = sample.panoptic_ids
    h, w = ids.shape
    assert ids.dtype == np.int32 and sample.image_bgr.shape == (h, w, 3)
    assert sample.image_bgr.dtype == np.uint8
    assert jpeg_quality[0] <= sample.jpeg_quality <= jpeg_quality[1]
    assert (ids > 0).all() and (ids < 256 ** 3).all()
    seg_ids = [s.id for s in sample.segments_info]
    assert len(seg_ids) == len(set(seg_ids))
    present, counts = np.unique(ids, return_counts=True)
    assert sorted(seg_ids) == present.tolist()
    area = dict(zip(present.tolist(), counts.tolist(), strict=True))
    stuff_cats = []
    for s in sample.segments_info:
        ys, xs = np.nonzero(ids == s.id)
        assert s.area == area[s.id] == len(ys)
        assert s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert s.category_id in THING_IDS | STUFF_IDS
        if s.category_id in STUFF_IDS:
            stuff_cats.append(s.category_id)
    assert len(stuff_cats) == len(set(stuff_cats))  # one segment per stuff class
    assert 1 <= len(stuff_cats) <= 4


def _check_caption(sample: SynthSample) -> None:
    assert sample.caption == join_utterances(sample.utterances)
    assert sample.caption[0].isupper() and sample.caption.endswith(".")
    for sentence in sample.caption.split(". ")[1:]:
        assert sentence[0].isupper(), sample.caption
    segs = {s.id: s for s in sample.segments_info}
    for u in sample.utterances:
        assert u.utterance == u.utterance.strip() and u.utterance
        assert set(u.phenomena) <= set(PHENOMENA)
        if not u.noun:
            assert not u.segment_ids and not u.plural and not u.phenomena
            continue
        assert all(i in segs for i in u.segment_ids)
        assert len(set(u.segment_ids)) == len(u.segment_ids)
        if u.plural:
            assert 2 <= len(u.segment_ids) <= 4, u
        elif u.segment_ids:
            assert len(u.segment_ids) == 1, u
    grounded = [i for u in sample.utterances if u.noun for i in u.segment_ids]
    assert len(grounded) == len(set(grounded))  # every segment is named at most once
    # every stuff segment with ≥ 1% of the image is mentioned
    h, w = sample.panoptic_ids.shape
    for s in sample.segments_info:
        if s.category_id in STUFF_IDS and s.area >= 0.01 * h * w:
            assert s.id in grounded, (s, sample.caption)


def _check_phrases(sample: SynthSample, scene: Scene) -> None:
    """Every thing phrase is truthful and unambiguous, and its phenomena are right."""
    things = scene.things
    h, w = sample.panoptic_ids.shape
    segs = {s.id: s for s in sample.segments_info}
    phrases = _thing_phrases(sample, scene)
    assert 1 <= len(phrases) <= 9, sample.caption
    assert len(things) <= 12 and len(things) - len(scene.mentioned) <= 3
    by_pair: dict[tuple[str, str], list] = {}
    for u in phrases:
        color, shape = _parse(u.utterance)
        members = [things[i - 1] for i in u.segment_ids]
        assert all((t.spec.color, t.spec.shape) == (color, shape) for t in members), u
        by_pair.setdefault((color, shape), []).append(u)
        for t in members:  # mentioned things stay visible enough
            assert t.visible_area >= 20 and t.hidden_fraction <= MAX_HIDDEN + 1e-9
        words = u.utterance.split()
        if words[0] in VOCAB.counts:
            assert VOCAB.counts[words[0]] == len(u.segment_ids), u
        if words[1] in VOCAB.sizes:
            assert all(t.spec.size == words[1] for t in members), u
        small = any(max(segs[i].bbox[2:]) < 24 for i in u.segment_ids)
        assert ("small" in u.phenomena) == small, u
        occluded = any(t.hidden_fraction >= 0.2 for t in members)
        assert ("occluded" in u.phenomena) == occluded, u
        look = VOCAB.lookalikes(color)
        assert ("lookalike" in u.phenomena) == any(
            t.spec.shape == shape and t.spec.color in look for t in things), u
        assert ("distractor" in u.phenomena) == any(
            i not in scene.mentioned and (t.spec.color == color or t.spec.shape == shape)
            for i, t in enumerate(things)), u
        named = any(u.utterance.endswith(p) for p in VOCAB.positions)
        assert ("position" in u.phenomena) == named, u
    for (color, shape), group in by_pair.items():
        all_ids = sorted(i + 1 for i, t in enumerate(things)
                         if (t.spec.color, t.spec.shape) == (color, shape))
        assert sorted(i for u in group for i in u.segment_ids) == all_ids, group
        if len(group) == 1:  # one phrase names every thing of its colour and shape
            assert group[0].plural == (len(all_ids) > 1)
            assert "position" not in group[0].phenomena
            continue
        # several phrases for one colour+shape: each one thing, told apart by position
        assert all("position" in u.phenomena and not u.plural for u in group), group
        words = [next(p for p in VOCAB.positions if u.utterance.endswith(p)) for u in group]
        assert len(set(words)) == len(words) in (2, 3)
        axis = "x" if {"on the left", "on the right"} & set(words) else "y"
        order = (["on the left", "in the middle", "on the right"] if axis == "x"
                 else ["at the top", "in the middle", "at the bottom"])
        cents = {}
        for u, word in zip(group, words, strict=True):
            ys, xs = np.nonzero(sample.panoptic_ids == u.segment_ids[0])
            cents[word] = (xs.mean(), ys.mean())
        named = [cents[p] for p in order if p in cents]
        assert position_order_ok(named, axis, w, h), (group, named)


def test_every_synth_module_imports() -> None:
    for mod in pkgutil.iter_modules(groundrt.synth.__path__):
        importlib.import_module(f"groundrt.synth.{mod.name}")


def test_shapes_and_textures_cover_the_vocabulary() -> None:
    assert set(SHAPES) == {c.name for c in VOCAB.things}
    assert set(TEXTURES) == {c.name for c in VOCAB.stuff}
    assert set(STUFF_TEXT) == set(TEXTURES)


def test_same_seed_and_index_give_identical_samples() -> None:
    a, b = render_sample(5, 17), render_sample(5, 17)
    assert np.array_equal(a.image_bgr, b.image_bgr)
    assert np.array_equal(a.panoptic_ids, b.panoptic_ids)
    assert a.caption == b.caption and a.utterances == b.utterances
    assert a.segments_info == b.segments_info and a.jpeg_quality == b.jpeg_quality
    c = render_sample(5, 18)
    assert c.caption != a.caption or c.image_bgr.shape != a.image_bgr.shape or not np.array_equal(
        c.image_bgr, a.image_bgr)
    d = render_sample(6, 17, (200, 160))
    e = render_sample(5, 17, (200, 160))
    assert not np.array_equal(d.image_bgr, e.image_bgr)


def test_size_argument_is_width_height() -> None:
    s = render_sample(1, 2, (200, 120))
    assert s.image_bgr.shape == (120, 200, 3) and s.panoptic_ids.shape == (120, 200)
    with pytest.raises(ValueError, match="at least"):
        render_sample(1, 2, (16, 300))


def test_random_sizes_have_listed_aspects_and_long_side_240_to_640() -> None:
    ratios = [aw / ah for aw, ah in ASPECTS]
    seen = set()
    for i in range(40):
        h, w = render_sample(3, i).panoptic_ids.shape
        assert 240 <= max(w, h) <= 640
        ratio = min(ratios, key=lambda r: abs(r - w / h))
        assert abs(w / h - ratio) < 0.01, (w, h)
        seen.add(ratio)
    assert len(seen) >= 4


def test_samples_are_consistent(scenes) -> None:
    for sample, scene in scenes:
        assert sample.panoptic_ids.shape == (SIZE[1], SIZE[0])
        _check_segments(sample)
        _check_caption(sample)
        _check_phrases(sample, scene)


def test_dataset_covers_the_vocabulary(scenes) -> None:
    cats = {s.category_id for sample, _ in scenes for s in sample.segments_info}
    assert cats == THING_IDS | STUFF_IDS
    colors = {t.spec.color for _, scene in scenes for t in scene.things}
    assert colors == set(VOCAB.colors)
    words = " ".join(sample.caption for sample, _ in scenes)
    for word in [*VOCAB.colors, *VOCAB.plural_nouns, *VOCAB.plural_nouns.values(),
                 *VOCAB.positions, *VOCAB.sizes, *VOCAB.counts]:
        assert word in words, word
    openings = {" ".join(sample.caption.split()[:3]) for sample, _ in scenes}
    assert len(openings) >= 10


def test_phrase_mix_and_phenomena(scenes) -> None:
    phrases = [u for sample, scene in scenes for u in _thing_phrases(sample, scene)]
    seen = Counter(p for u in phrases for p in u.phenomena)
    assert 0.10 <= seen["position"] / len(phrases) <= 0.25
    for name in ("lookalike", "small", "occluded", "distractor"):
        assert seen[name] >= 0.03 * len(phrases), (name, seen)
    plurals = [u for u in phrases if u.plural]
    assert 0.1 <= len(plurals) / len(phrases) <= 0.5
    assert {len(u.segment_ids) for u in plurals} == {2, 3, 4}
    # ungrounded nouns ("this picture") appear now and then
    assert any(u.noun and not u.segment_ids for sample, _ in scenes for u in sample.utterances)
    # real occlusion happens, and never beyond the limit
    hidden = [t.hidden_fraction for _, scene in scenes for t in scene.things]
    assert max(hidden) <= MAX_HIDDEN + 1e-9
    assert sum(x >= 0.2 for x in hidden) >= 0.03 * len(hidden)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 10**6),
       w=st.integers(32, 260), h=st.integers(32, 260))
def test_any_seed_and_size_gives_a_valid_sample(seed: int, index: int, w: int, h: int) -> None:
    sample, scene = render_scene(seed, index, (w, h))
    assert sample.panoptic_ids.shape == (h, w)
    _check_segments(sample)
    _check_caption(sample)
    _check_phrases(sample, scene)
