"""Network v2 pieces: phrase tokens, the phrase decoder's masking, absent phrases, the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from groundrt.data.absent import AbsentPhrase, read_absent, write_absent
from groundrt.data.layout import SplitLayout
from groundrt.errors import DataFormatError
from groundrt.examples import EXPLICIT_SEPARATOR, TextPhrase, compose
from groundrt.metric.average_recall import average_recall
from groundrt.metric.instances import instance_ar, matched_segment_ious
from groundrt.metric.presence import choose_threshold, presence_accuracy, presence_curve
from groundrt.synth.absent import ABSENT_STREAM, COUNT, absent_phrases, hard_pairs
from groundrt.synth.scene import render_scene
from groundrt.vocabulary import load_vocabulary

torch = pytest.importorskip("torch", reason="the model needs the [export] extra (torch)")

from groundrt.model.config import PRESETS  # noqa: E402
from groundrt.model.network import GroundingNet  # noqa: E402
from groundrt.model.phrase_decoder import (  # noqa: E402
    PhraseAttention,
    object_centroids,
    phrase_tokens,
)


def test_phrase_tokens_gathers_each_phrases_own_tokens():
    feats = torch.arange(2 * 6 * 1, dtype=torch.float32).view(2, 6, 1)  # token t of image b
    spans = torch.tensor([[[1, 4], [4, 5]], [[2, 4], [0, 0]]])
    own, valid = phrase_tokens(feats, spans)
    assert own.shape == (2, 2, 3, 1)
    assert valid.tolist() == [[[True, True, True], [True, False, False]],
                              [[True, True, False], [False, False, False]]]
    assert own[0, 0, :, 0].tolist() == [1, 2, 3] and own[0, 1, 0, 0] == 4
    assert own[1, 0, :2, 0].tolist() == [8, 9]


def test_a_phrase_attends_to_its_own_tokens_only():
    torch.manual_seed(0)
    attention = PhraseAttention(8, 2)
    x, shared = torch.randn(1, 2, 8), torch.randn(1, 5, 8)
    own = torch.randn(1, 2, 3, 8)
    valid = torch.tensor([[[True, True, False], [True, True, True]]])
    before = attention(x, own, valid, shared)
    changed = own.clone()
    changed[0, 0] += 5.0  # phrase 0's tokens: phrase 0 changes, phrase 1 does not
    after = attention(x, changed, valid, shared)
    assert not torch.allclose(before[0, 0], after[0, 0])
    torch.testing.assert_close(after[0, 1], before[0, 1])
    padded = own.clone()
    padded[0, 0, 2] += 5.0  # phrase 0's third slot is padding: no effect anywhere
    torch.testing.assert_close(attention(x, padded, valid, shared), before)


def test_object_centroids_of_a_mask():
    logits = torch.full((1, 1, 5, 5), -30.0)
    logits[0, 0, 0, 4] = 30.0  # top-right cell
    np.testing.assert_allclose(object_centroids(logits)[0, 0].numpy(), [1.0, -1.0], atol=1e-5)


def test_padding_phrases_change_no_other_phrase():
    """A batch's padding phrases (empty spans) leave the real phrases' kernels and presence
    unchanged; every decoder layer reports both."""
    torch.manual_seed(0)
    cfg = PRESETS["tiny-v2"]
    net = GroundingNet(cfg).eval()
    image = torch.randn(1, 3, cfg.input_size, cfg.input_size)
    tokens = torch.randint(4, cfg.vocab_size, (1, 10))
    padding = torch.zeros(1, 10, dtype=torch.bool)
    spans = torch.tensor([[[1, 3], [4, 7]]])
    padded = torch.cat([spans, torch.zeros(1, 2, 2, dtype=torch.int64)], 1)
    with torch.no_grad():
        a, b = net(image, tokens, padding, spans), net(image, tokens, padding, padded)
    assert len(a.phrase_kernels) == len(a.presence) == cfg.phrase_layers
    assert a.phrase_logits().shape == (1, 2, cfg.input_size // 4, cfg.input_size // 4)
    torch.testing.assert_close(b.phrase_kernels[-1][:, :2], a.phrase_kernels[-1])
    torch.testing.assert_close(b.presence[-1][:, :2], a.presence[-1])


def test_absent_phrases_name_nothing_in_the_scene():
    vocab = load_vocabulary()
    for index in range(12):
        _, scene = render_scene(11, index)
        rng = np.random.default_rng([11, index, ABSENT_STREAM])
        phrases = absent_phrases(rng, vocab, scene, str(index))
        again = absent_phrases(np.random.default_rng([11, index, ABSENT_STREAM]), vocab, scene,
                               str(index))
        assert phrases == again and 1 <= len(phrases) <= COUNT[1]
        pairs = {(t.spec.color, t.spec.shape) for t in scene.things}
        plurals = {v: k for k, v in vocab.plural_nouns.items()}
        stuff = {scene.layout.classes[k] for k in np.unique(scene.layout.labels)}
        for p in phrases:
            words = p.utterance.split()
            if p.kind == "thing":
                shape = plurals.get(words[-1], words[-1])
                assert (words[-2], shape) not in pairs and p.plural == (words[-1] in plurals)
            elif p.kind == "stuff":
                assert words[-1] not in stuff
            else:
                assert words[-1] not in {c.name for c in vocab.categories}


def test_hard_negatives_swap_the_colours_and_shapes_of_the_scene():
    vocab = load_vocabulary()
    present = {("red", "star"), ("blue", "circle")}
    free = [(c, s) for c in vocab.colors for s in vocab.plural_nouns if (c, s) not in present]
    hard = set(hard_pairs(vocab, present, free))
    assert {("red", "circle"), ("blue", "star")} <= hard
    assert not hard & present and ("green", "square") not in hard
    for color in vocab.lookalikes("red"):  # a look-alike colour of a thing's shape
        assert (color, "star") in hard
    # most absent things of generated scenes are hard negatives
    counts = [0, 0]
    for index in range(30):
        _, scene = render_scene(11, index)
        pairs = {(t.spec.color, t.spec.shape) for t in scene.things}
        plurals = {v: k for k, v in vocab.plural_nouns.items()}
        hard = set(hard_pairs(vocab, pairs, [(c, s) for c in vocab.colors
                                             for s in vocab.plural_nouns if (c, s) not in pairs]))
        for p in absent_phrases(np.random.default_rng([11, index, ABSENT_STREAM]), vocab, scene,
                                str(index)):
            if p.kind == "thing":
                words = p.utterance.split()
                counts[(words[-2], plurals.get(words[-1], words[-1])) in hard] += 1
    assert counts[1] > 1.5 * counts[0]  # (a scene with few hard pairs repeats one: fewer)


def test_compose_places_every_phrase_where_its_span_says():
    rng = np.random.default_rng(0)
    caption = "A red circle on the grass. Above it the sky."
    grounded = [TextPhrase("A red circle", False, np.array([1]), 0),
                TextPhrase("the grass", False, np.array([2]), 1),
                TextPhrase("the sky", False, np.array([3]), 2)]
    spans = [(0, 12), (16, 25), (36, 43)]
    absent = [TextPhrase("a blue star", False, np.zeros(0, np.int32))]
    seen = set()
    for mode in ("none", "mixed", "list") * 20:
        text, phrases, char_spans = compose(caption, grounded, spans, absent, mode, rng)
        assert phrases[:3] == grounded  # the narrative's phrases first, in order
        for phrase, (start, end) in zip(phrases, char_spans, strict=True):
            assert text[start:end] == phrase.text
        if mode == "none":
            assert text == caption and len(phrases) == 3
        elif text == caption:
            seen.add("plain")
        elif EXPLICIT_SEPARATOR.join(sorted(p.text for p in phrases)) == \
                EXPLICIT_SEPARATOR.join(sorted(text.split(EXPLICIT_SEPARATOR))):
            seen.add("list")
        else:  # a sentence naming the absent phrase, at one of the caption's boundaries
            assert absent[0] in phrases
            seen.add("end" if text.startswith(caption) else "inside")
    assert seen == {"plain", "list", "end", "inside"}


def test_absent_side_file_round_trip_and_errors(tmp_path):
    phrases = [AbsentPhrase("2000000", "a purple star", "thing"),
               AbsentPhrase("2000000", "two pink rings", "thing", True),
               AbsentPhrase("2000001", "the sand", "stuff")]
    write_absent(tmp_path, "val", phrases)
    layout = SplitLayout.flat(tmp_path, "val")
    assert read_absent(layout) == {"2000000": phrases[:2], "2000001": phrases[2:]}
    (tmp_path / "absent_val2017.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataFormatError, match="absent_val2017.json"):
        read_absent(layout)
    assert read_absent(SplitLayout.flat(tmp_path, "train")) == {}


def test_presence_accuracy_counts_both_groups():
    found = [True, False, True, True, False]
    present = [True, True, False, False, False]
    acc = presence_accuracy(found, present)
    assert acc == {"no_target_acc": 1 / 3, "target_acc": 0.5, "absent": 3, "present": 2}
    with pytest.raises(ValueError, match="2 answers for 1"):
        presence_accuracy([True, False], [True])


def test_presence_curve_trades_target_for_no_target_accuracy():
    scores = [0.9, 0.6, 0.7, 0.4, 0.1]
    present = [True, True, False, False, False]
    low, mid, high = presence_curve(scores, present, thresholds=(0.05, 0.5, 0.8))
    assert (low["target_acc"], low["no_target_acc"]) == (1.0, 0.0)
    assert (mid["target_acc"], mid["no_target_acc"]) == (1.0, 2 / 3)
    assert (high["threshold"], high["target_acc"], high["no_target_acc"]) == (0.8, 0.5, 1.0)


def test_the_threshold_chosen_keeps_target_accuracy_and_finds_the_most_absent_phrases():
    # present phrases score 0.7-0.95, absent ones 0.55-0.75: 0.76 separates them
    scores = [0.95, 0.9, 0.85, 0.8, 0.77, 0.75, 0.7, 0.6, 0.55]
    present = [True] * 5 + [False] * 4
    curve = presence_curve(scores, present, thresholds=(0.5, 0.6, 0.7, 0.76, 0.8, 0.9))
    assert choose_threshold(curve, 1.0)["threshold"] == 0.76
    assert choose_threshold(curve, 0.8) == {"threshold": 0.76, "target_acc": 1.0,
                                            "no_target_acc": 1.0, "absent": 4, "present": 5}
    assert choose_threshold(curve, 0.4)["threshold"] == 0.76  # the lowest of the best
    assert choose_threshold(presence_curve([0.9], [True]), 0.98) is None  # nothing absent


def test_instance_ar_matches_segments_one_to_one():
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True
    b = np.zeros((4, 4), bool)
    b[2:, 2:] = True
    half_b = b.copy()
    half_b[3] = False
    # two segments, one instance covering half of b: a unmatched (0), b IoU 0.5
    np.testing.assert_allclose(matched_segment_ious([a, b], [half_b]), [0.0, 0.5])
    np.testing.assert_allclose(matched_segment_ious([a, b], [b, a]), [1.0, 1.0])
    assert matched_segment_ious([a, b], []).tolist() == [0.0, 0.0]
    pooled = [matched_segment_ious([a, b], [half_b]), matched_segment_ious([a], [a])]
    assert instance_ar(pooled) == pytest.approx(average_recall(np.array([0.0, 0.5, 1.0])))
    assert instance_ar([]) is None


def test_the_split_decoder_and_the_runtime_gather_compute_the_trained_decoder():
    """Inference splits the phrase decoder (text projections cached per caption, image
    projections once per frame, numpy gathering each phrase's own tokens): the same kernels,
    presence and phrase embeddings as the training-time forward pass."""
    from groundrt.model.network import image_graph, phrase_graph, text_graph
    from groundrt.runtime.grounder import phrase_inputs

    torch.manual_seed(1)
    cfg = PRESETS["tiny-v2"]
    net = GroundingNet(cfg).eval()
    split = net.split_phrase_decoder()
    image = torch.randn(1, 3, cfg.input_size, cfg.input_size)
    tokens = torch.randint(4, cfg.vocab_size, (1, 14))
    spans = torch.tensor([[[1, 4], [4, 5], [6, 12]]])
    with torch.no_grad():
        want = net(image, tokens, torch.zeros(1, 14, dtype=torch.bool), spans)
        image_out = image_graph(net, split, image)
        text_out = text_graph(net, split, tokens)
        text_half = phrase_inputs(text_out["token_embed"][0].numpy(),
                                  text_out["token_kv"][0].numpy(), spans[0].numpy(),
                                  cfg.phrase_heads)
        got = phrase_graph(split, *(torch.from_numpy(a[None]) for a in text_half),
                           image_out["image_keys"], image_out["image_values"])
    torch.testing.assert_close(got["kernels"], want.phrase_kernels[-1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["presence"], want.presence[-1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["phrase_embed"], want.phrase_embed, atol=1e-5, rtol=1e-4)
