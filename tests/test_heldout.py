"""The held-out renderer (groundrt.synth.heldout): a valid split in the official format, the
same scenes as the training renderer drawn and worded otherwise, deterministic, and scored
through the public API by benchmarks/generalization.py."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_chunker import _agreement
from test_synth_scene import _check_caption, _check_phrases, _check_segments

from groundrt.data import PNGDataset
from groundrt.runtime.cli import main
from groundrt.synth import captions as training_captions
from groundrt.synth.dataset import narrative_of
from groundrt.synth.heldout import ASPECTS, HELDOUT, LONG_SIDE
from groundrt.synth.heldout import captions as heldout_captions
from groundrt.synth.scene import ASPECTS as TRAINING_ASPECTS
from groundrt.synth.scene import TRAINING, render_sample, render_scene
from groundrt.vocabulary import load_vocabulary

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "runtime" / "samples" / "png"
VOCAB = load_vocabulary()
SIZE = (200, 150)
N = 120
# Phrases are made of the vocabulary's words and these determiners (both renderers).
DETERMINERS = {"a", "an", "the", "one"}


@pytest.fixture(scope="module")
def pairs():
    """(training, held-out) renderings of the same N scenes at one size."""
    return [(render_scene(21, i, SIZE, TRAINING), render_scene(21, i, SIZE, HELDOUT))
            for i in range(N)]


def _vocabulary_words() -> set[str]:
    words = {*VOCAB.colors, *VOCAB.sizes, *VOCAB.counts, *VOCAB.plural_nouns,
             *VOCAB.plural_nouns.values(), *(c.name for c in VOCAB.stuff)}
    for phrase in (*VOCAB.plural_words, *VOCAB.positions):
        words.update(phrase.split())
    return words | DETERMINERS


def _skeletons(sample) -> list[str]:
    """The caption's sentences with every grounded phrase replaced by "X", lower case."""
    text = " ".join("X" if u.noun and u.segment_ids else u.utterance for u in sample.utterances)
    text = re.sub(r"\s+([.,])", r"\1", text.lower())
    return [s.strip() for s in text.split(".") if s.strip()]


def test_heldout_split_is_valid_and_its_ground_truth_scores_one(tmp_path):
    data = tmp_path / "heldout"
    assert main(["data", "synth", "--renderer", "heldout", "--out", str(data), "--split", "val",
                 "--count", "8", "--seed", "9", "--workers", "1", "--quiet"]) == 0
    ds = PNGDataset(data, "val")
    assert len(ds.narratives) == 8 and not ds.excluded and len(ds.phrases) > 30
    assert json.loads((data / "synth_val2017.json").read_text())["renderer"] == "heldout"
    assert (data / "absent_val2017.json").is_file()
    assert main(["data", "gt-pred", "--data", str(data), "--split", "val", "--out",
                 str(tmp_path / "gt.json")]) == 0
    assert main(["eval", "--pred", str(tmp_path / "gt.json"), "--data", str(data), "--split",
                 "val", "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    for group in report["groups"]:
        if group["phrases"]:
            assert group["ar"] == pytest.approx(1.0, abs=1e-5), group["name"]
    for image_id in ds.panoptic.images:
        h, w = ds.image_size(image_id)
        assert LONG_SIDE[0] <= max(h, w) <= LONG_SIDE[1]
        ratio = min((aw / ah for aw, ah in ASPECTS), key=lambda r: abs(r - w / h))
        assert abs(w / h - ratio) < 0.02, (w, h)
    with pytest.raises(ValueError, match="unknown renderer"):
        from groundrt.synth.dataset import synthesize
        synthesize(tmp_path / "x", "val", 1, 0, renderer="nope")
    assert not (tmp_path / "x").exists()


def test_heldout_sizes_are_not_the_training_sizes():
    assert not set(ASPECTS) & set(TRAINING_ASPECTS)
    ratios = {round(aw / ah, 3) for aw, ah in TRAINING_ASPECTS}
    assert not {round(aw / ah, 3) for aw, ah in ASPECTS} & ratios


def test_heldout_is_deterministic_per_seed():
    a, b = render_sample(5, 3, renderer=HELDOUT), render_sample(5, 3, renderer=HELDOUT)
    assert np.array_equal(a.image_bgr, b.image_bgr)
    assert np.array_equal(a.panoptic_ids, b.panoptic_ids)
    assert a.caption == b.caption and a.utterances == b.utterances
    assert a.segments_info == b.segments_info and a.jpeg_quality == b.jpeg_quality
    c, d = render_sample(6, 3, SIZE, HELDOUT), render_sample(5, 3, SIZE, HELDOUT)
    assert not np.array_equal(c.image_bgr, d.image_bgr)


def test_heldout_scenes_are_valid_and_truthful(pairs):
    for _, (sample, scene) in pairs:
        _check_segments(sample, jpeg_quality=(35, 90))
        _check_caption(sample)
        _check_phrases(sample, scene)
        for u in sample.utterances:  # counts named anywhere in the phrase are right
            counts = [VOCAB.counts[w] for w in u.utterance.lower().split() if w in VOCAB.counts]
            assert not counts or counts == [len(u.segment_ids)], u


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 10**6),
       w=st.integers(32, 260), h=st.integers(32, 260))
def test_any_seed_and_size_gives_a_valid_heldout_sample(seed: int, index: int, w: int,
                                                        h: int) -> None:
    sample, scene = render_scene(seed, index, (w, h), HELDOUT)
    assert sample.panoptic_ids.shape == (h, w)
    _check_segments(sample, jpeg_quality=(35, 90))
    _check_caption(sample)
    _check_phrases(sample, scene)


def test_same_layout_other_pixels(pairs):
    """The renderers share the scene (layout, things, placement, panoptic ids) and differ in
    every image; the held-out things have anti-aliased edges (pixels between a thing's colour
    and its surroundings), so a thing's boundary pixels differ from its interior more."""
    diffs = []
    for (train, _), (held, _) in pairs:
        assert np.array_equal(train.panoptic_ids, held.panoptic_ids)
        assert train.segments_info == held.segments_info
        assert train.image_bgr.tobytes() != held.image_bgr.tobytes()
        diffs.append(np.abs(train.image_bgr.astype(int) - held.image_bgr).mean())
    assert min(diffs) > 3 and np.mean(diffs) > 10, (min(diffs), np.mean(diffs))
    # the statistic: mean colour of the stuff per class, over all scenes, differs
    means = {}
    for k, renderer in enumerate(("training", "heldout")):
        for pair in pairs:
            sample = pair[k][0]
            for s in sample.segments_info:
                if s.id >= 1000:
                    m = sample.panoptic_ids == s.id
                    means.setdefault((renderer, s.category_id), []).append(
                        sample.image_bgr[m].mean(axis=0))
    gaps = [np.abs(np.mean(means[("training", c)], 0) - np.mean(means[("heldout", c)], 0)).max()
            for r, c in means if r == "training" and ("heldout", c) in means]
    assert len(gaps) >= 5 and np.mean(gaps) > 5, gaps


def test_heldout_captions_use_frames_the_training_templates_do_not(pairs):
    training = {s for (sample, _), _ in pairs for s in _skeletons(sample)}
    heldout = {s for _, (sample, _) in pairs for s in _skeletons(sample)}
    assert len(heldout) >= 30
    assert not training & heldout, sorted(training & heldout)[:5]
    intros = [re.sub(r"[\[\]]", "", t).replace("{is}", "is").lower() for t in (
        *training_captions.THING_INTROS, *training_captions.STUFF_INTROS)]
    for skeleton in heldout:
        assert not any(skeleton.startswith(intro) for intro in intros), skeleton
    # the things are not always first, nor the stuff always last
    openers = {_skeletons(sample)[0].split()[0] for _, (sample, _) in pairs}
    assert "x" in openers and len(openers) >= 5


def test_heldout_phrases_use_the_vocabulary(pairs):
    allowed = _vocabulary_words()
    texts = set()
    for k in (0, 1):
        for pair in pairs:
            for u in pair[k][0].utterances:
                if u.noun and u.segment_ids:
                    words = set(u.utterance.lower().split())
                    assert words <= allowed, (u.utterance, words - allowed)
                    texts.add(u.utterance.lower())
    # the held-out phrase forms are not all the training's
    held = {u.utterance.lower() for _, (sample, _) in pairs for u in sample.utterances
            if u.noun and u.segment_ids}
    assert any(t.startswith("the two ") or t.startswith("the three ") for t in held)
    stuff = {c.name for c in VOCAB.stuff}
    assert any(t.startswith("some ") and t.split()[1] in stuff for t in held)
    assert set(heldout_captions.STUFF_TEXT) == set(training_captions.STUFF_TEXT)


def test_the_runtime_chunker_reads_the_heldout_phrases(pairs):
    data = []
    for _, (sample, _) in pairs:
        narrative = narrative_of(0, sample)
        spans = narrative.utterance_word_spans()
        assert spans is not None
        data.append((narrative.caption, {narrative.char_span(spans[k]): u.plural
                                         for k, u in enumerate(narrative.utterances)
                                         if u.grounded}))
    recall, precision, plural, n = _agreement(data)
    assert n > 500
    assert (recall, precision, plural) >= (0.99, 0.99, 0.99)


def test_generalization_benchmark_runs_through_the_public_api(tmp_path, monkeypatch):
    """benchmarks/generalization.py on 3 held-out scenes beside 3 committed samples, with the
    shipped package (a real ONNX Runtime session)."""
    spec = importlib.util.spec_from_file_location(
        "generalization", ROOT / "benchmarks" / "generalization.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "generalization", bench)  # its dataclasses look it up
    spec.loader.exec_module(bench)
    from groundrt.synth.dataset import synthesize

    synthesize(tmp_path / "heldout", "val", 3, 9, workers=1, progress=False, renderer="heldout")
    assert bench.main(["--heldout", str(tmp_path / "heldout"), "--val", str(SAMPLES),
                       "--limit", "3", "--report", str(tmp_path / "r"), "--quiet"]) == 0
    report = json.loads((tmp_path / "r" / "generalization.json").read_text())
    results = report["results"]
    assert set(results) == {"val (training renderer)", "held-out"}
    for split in results.values():
        assert set(split) == {"caption", "phrases"}
        for mode in split.values():
            assert mode["images"] == 3
            assert 0.0 < mode["ar"]["overall"] <= 1.0
            assert sum(mode["matches"].values()) == mode["phrases"]["overall"]
    assert (tmp_path / "r" / "generalization.md").read_text().count("| overall |") == 1
