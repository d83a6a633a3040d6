"""Tokenizer: deterministic training, exact phrase char span → token span mapping, clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import write_release
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groundrt.data import PNGDataset
from groundrt.data.narratives import basic_words
from groundrt.errors import GroundrtError
from groundrt.text import (
    MODEL_FILENAME,
    CaptionTooLongError,
    Encoding,
    Tokenizer,
    TokenizerError,
    train_tokenizer,
)
from groundrt.text.tokenizer import _has_offset_mapping

# Captions like the procedural ones, plus the words the span table below uses.
CAPTIONS = [
    "In this picture we can see two red circles and a small blue star on the grass. "
    "At the top there is the sky.",
    "Here we can see three green squares on the left, a large yellow ring at the bottom.",
    "In this picture we can see four black crosses in the middle, on the road.",
    "There isn't any water, only the sand. We can see a purple hexagon on the right.",
    "In this image we can see some white diamonds (on the wall) and a few pink triangles.",
    "We can see 2 orange stars and 13 brown rings on the water; at the top, the sky!",
    "In this picture we can see a blue-green star on the grass. At the top there is the sky.",
] * 3


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(CAPTIONS, tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tokenizer(model_path: Path) -> Tokenizer:
    return Tokenizer(model_path)


def non_space(text: str) -> str:
    return "".join(text.split())


def covered_positions(encoding: Encoding, token_span: tuple[int, int]) -> set[int]:
    start, end = token_span
    return {k for b, e in encoding.offsets[start:end].tolist() for k in range(b, e)}


def check_exact(encoding: Encoding, char_span: tuple[int, int], token_span: tuple[int, int]):
    """Tokens [a, b) cover exactly the span's non-space characters and no token outside does."""
    caption, (s, e), (a, b) = encoding.caption, char_span, token_span
    assert 1 <= a < b <= len(encoding)
    inside = encoding.offsets[a:b]
    assert (inside[:, 0] >= s).all() and (inside[:, 1] <= e).all()
    assert covered_positions(encoding, token_span) == {
        k for k in range(s, e) if not caption[k].isspace()}
    for b_out, e_out in encoding.offsets[1:a].tolist() + encoding.offsets[b:].tolist():
        if b_out == e_out:
            assert not s <= b_out < e
        else:
            assert e_out <= s or b_out >= e


# --- import and training ------------------------------------------------------------------------


def test_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; "
            "import groundrt.text, groundrt.text.tokenizer; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_training_is_deterministic(tmp_path: Path, model_path: Path):
    first = train_tokenizer(CAPTIONS, tmp_path / "a", seed=0)
    second = train_tokenizer(iter(CAPTIONS), tmp_path / "b", seed=0)
    assert first == tmp_path / "a" / MODEL_FILENAME
    assert first.read_bytes() == second.read_bytes() == model_path.read_bytes()
    other = train_tokenizer(CAPTIONS[:2], tmp_path / "c")
    assert other.read_bytes() != first.read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [MODEL_FILENAME]


def test_vocabulary_adapts_to_a_small_corpus(tokenizer: Tokenizer):
    assert 40 < tokenizer.vocab_size < 1000  # hard_vocab_limit=False: fewer pieces, no error
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert tokenizer.pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_training_errors(tmp_path: Path):
    with pytest.raises(TokenizerError, match="no caption"):
        train_tokenizer(["", "   "], tmp_path)
    with pytest.raises(TokenizerError, match="smaller than required_chars"):
        train_tokenizer(CAPTIONS, tmp_path, vocab_size=10)


# --- encoding -----------------------------------------------------------------------------------


def test_known_words_are_one_piece_each(tokenizer: Tokenizer):
    caption = "In this picture we can see two red circles on the grass."
    encoding = tokenizer.encode(caption)
    assert tokenizer.pieces(encoding.ids) == [
        "<s>", "▁in", "▁this", "▁picture", "▁we", "▁can", "▁see", "▁two", "▁red", "▁circles",
        "▁on", "▁the", "▁grass", "▁."]
    assert encoding.ids.dtype == np.int64 and encoding.ids.shape == (14,)
    assert encoding.offsets.dtype == np.int64 and encoding.offsets.shape == (14, 2)
    assert encoding.offsets[0].tolist() == [0, 0] and encoding.ids[0] == tokenizer.bos_id
    assert [caption[b:e] for b, e in encoding.offsets[1:].tolist()] == caption[:-1].split() + ["."]


def test_offsets_are_str_indices_of_the_original_caption(tokenizer: Tokenizer):
    caption = "  Über  CAFÉ, naïve ﬁne 2024!  "
    encoding = tokenizer.encode(caption)
    begins, ends = encoding.offsets[:, 0], encoding.offsets[:, 1]
    assert (ends >= begins).all() and (np.diff(begins) >= 0).all() and (begins[1:] >= 2).all()
    words = ["Über", "CAFÉ", ",", "naïve", "ﬁne", "2024", "!"]
    texts = [caption[b:e] for b, e in encoding.offsets[1:].tolist()]
    assert "".join(texts) == "".join(words)  # every non-space character exactly once
    assert tokenizer.encode("Two RED circles").ids.tolist() == tokenizer.encode(
        "two red circles").ids.tolist()  # nmt_nfkc_cf lower-cases


def test_caption_length_limit(tokenizer: Tokenizer, model_path: Path):
    caption = "In this picture we can see two red circles on the grass."
    n = len(tokenizer.encode(caption))
    assert n == 14
    assert len(tokenizer.encode(caption, max_tokens=n)) == n
    with pytest.raises(CaptionTooLongError, match=r"14 tokens.*limit of 13 tokens") as info:
        tokenizer.encode(caption, max_tokens=13)
    assert (info.value.num_tokens, info.value.max_tokens) == (14, 13)
    limited = Tokenizer(model_path, max_tokens=8)
    with pytest.raises(TokenizerError, match=r"14 tokens.*limit of 8"):
        limited.encode(caption)
    with pytest.raises(TokenizerError, match=r"14 tokens.*limit of 8"):
        limited.encode_phrases(caption, [(0, 2)])
    assert len(limited.encode(caption, max_tokens=20)) == 14  # the call's limit wins
    with pytest.raises(TokenizerError, match="at least 2"):
        tokenizer.encode(caption, max_tokens=1)


@pytest.mark.parametrize("caption", ["", "   ", "\t\n"])
def test_empty_caption(tokenizer: Tokenizer, caption: str):
    with pytest.raises(TokenizerError, match="empty"):
        tokenizer.encode(caption)


def test_caption_with_no_token(tokenizer: Tokenizer):
    with pytest.raises(TokenizerError, match="no token"):
        tokenizer.encode("\u200b \u200b")


# --- model file errors --------------------------------------------------------------------------


def test_missing_model_file(tmp_path: Path):
    with pytest.raises(TokenizerError, match="not found") as info:
        Tokenizer(tmp_path / "nope.model")
    assert str(tmp_path / "nope.model") in str(info.value)
    assert isinstance(info.value, GroundrtError) and isinstance(info.value, ValueError)
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer(tmp_path)  # a folder


@pytest.mark.parametrize("content", [b"", b"this is not a model\n", bytes(range(256)) * 3])
def test_not_a_sentencepiece_model(tmp_path: Path, content: bytes):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(content)
    with pytest.raises(TokenizerError, match="not a sentencepiece model") as info:
        Tokenizer(path)
    assert str(path) in str(info.value)


# --- phrase spans -------------------------------------------------------------------------------

# (caption, phrase, occurrence of the phrase in the caption, expected token span or None)
SPAN_TABLE = [
    ("In this picture we can see two red circles on the grass.", "two red circles", 0, (7, 10)),
    ("In this picture we can see two red circles on the grass.", "the grass", 0, (11, 13)),
    ("In this picture we can see two red circles on the grass.", "In this picture", 0, (1, 4)),
    ("In this picture we can see two red circles on the grass.", "grass.", 0, (12, 14)),
    ("At the top there is the sky.", "the sky", 0, (6, 8)),
    ("At the top there is the sky.", "the", 1, (6, 7)),
    ("At the top there is the sky.", "the", 0, (2, 3)),
    ("   Two  RED   circles   on the grass .  ", "Two  RED   circles", 0, (1, 4)),
    ("   Two  RED   circles   on the grass .  ", "grass .", 0, (6, 8)),
    ("We can see 2 orange stars and 13 brown rings.", "13 brown rings", 0, None),
    ("We can see 2 orange stars and 13 brown rings.", "2 orange stars", 0, None),
    ("There isn't any water, only the sand.", "any water", 0, (5, 7)),
    ("There isn't any water, only the sand.", "the sand", 0, (9, 11)),
    ("a café on the naïve grass", "café", 0, None),
    ("a café on the naïve grass", "naïve grass", 0, None),
    ("Some white diamonds (on the wall), and a few pink triangles!", "the wall", 0, None),
    ("Some white diamonds (on the wall), and a few pink triangles!", "pink triangles", 0, None),
    ("a blue-green star", "blue-green star", 0, None),
    ("a blue-green star", "green star", 0, None),
    ("Ÿ ﬁne ÉTOILE!", "ﬁne ÉTOILE", 0, None),
    ("the grass the grass the grass", "the grass", 2, (5, 7)),
]


def nth_span(caption: str, phrase: str, occurrence: int) -> tuple[int, int]:
    """Char span of the phrase's n-th occurrence as whole words ("the" is not in "there")."""
    found = re.finditer(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", caption)
    return [m.span() for m in found][occurrence]


@pytest.mark.parametrize(("caption", "phrase", "occurrence", "expected"), SPAN_TABLE)
def test_span_table(tokenizer: Tokenizer, caption, phrase, occurrence, expected):
    char_span = nth_span(caption, phrase, occurrence)
    encoding = tokenizer.encode(caption)
    token_span = tokenizer.span_to_tokens(encoding, char_span)
    check_exact(encoding, char_span, token_span)
    a, b = token_span
    covered = caption[encoding.offsets[a, 0]:encoding.offsets[b - 1, 1]]
    assert non_space(covered) == non_space(phrase)
    if expected is not None:
        assert token_span == expected
    assert encoding.span_to_tokens(char_span) == token_span
    s, e = char_span  # widened over the whitespace around it: spaces add no token
    while s > 0 and caption[s - 1].isspace():
        s -= 1
    while e < len(caption) and caption[e].isspace():
        e += 1
    assert tokenizer.span_to_tokens(encoding, (s, e)) == token_span


def test_encode_phrases(tokenizer: Tokenizer):
    caption = "In this picture we can see two red circles on the grass."
    spans = [nth_span(caption, p, 0) for p in ("this picture", "two red circles", "the grass")]
    encoding, token_spans = tokenizer.encode_phrases(caption, spans)
    assert token_spans.dtype == np.int64 and token_spans.shape == (3, 2)
    assert token_spans.tolist() == [[2, 4], [7, 10], [11, 13]]
    assert encoding.ids.tolist() == tokenizer.encode(caption).ids.tolist()
    encoding, none = tokenizer.encode_phrases(caption, np.zeros((0, 2), np.int64))
    assert none.shape == (0, 2)
    _, from_array = tokenizer.encode_phrases(caption, np.asarray(spans, dtype=np.int32))
    assert from_array.tolist() == token_spans.tolist()


@pytest.mark.parametrize(("span", "message"), [
    ((5, 5), r"phrase 1 \(5, 5\) is empty"),
    ((-1, 3), r"phrase 1 \(-1, 3\) is outside the caption \(0, 29\)"),
    ((20, 30), r"phrase 1 \(20, 30\) is outside the caption"),
    ((9, 6), r"phrase 1 \(9, 6\) is outside the caption"),
    ((9, 11), r"phrase 1 \(9, 11\) '  ' covers no token"),
    ((0.5, 3), r"phrase 1 \(0.5, 3\) is not a pair of ints"),
])
def test_bad_phrase_spans(tokenizer: Tokenizer, span, message):
    caption = "the grass  and the sky above."
    with pytest.raises(TokenizerError, match=message):
        tokenizer.encode_phrases(caption, [(0, 9), span])


def test_span_cutting_a_word_takes_the_whole_piece(tokenizer: Tokenizer):
    caption = "the grass."
    encoding = tokenizer.encode(caption)
    assert tokenizer.pieces(encoding.ids) == ["<s>", "▁the", "▁grass", "▁."]
    assert tokenizer.span_to_tokens(encoding, (5, 7)) == (2, 3)  # "ra" → "▁grass"
    assert tokenizer.span_to_tokens(encoding, (8, 10)) == (2, 4)  # "s." → "▁grass", "▁."
    assert tokenizer.span_to_tokens(encoding, (0, 1)) == (1, 2)  # never BOS


def test_data_reader_round_trip(tmp_path: Path, tokenizer: Tokenizer):
    dataset = PNGDataset(write_release(tmp_path / "r"), "val")
    by_narrative: dict[int, list] = {}
    for phrase in dataset.phrases:
        by_narrative.setdefault(phrase.narrative_index, []).append(phrase)
    assert sorted((i, len(p)) for i, p in by_narrative.items()) == [(0, 3), (4, 1)]
    found = {}
    for index, phrases in by_narrative.items():
        caption = dataset.narratives[index].caption
        encoding, token_spans = tokenizer.encode_phrases(caption, [p.char_span for p in phrases])
        for phrase, token_span in zip(phrases, token_spans.tolist(), strict=True):
            check_exact(encoding, phrase.char_span, tuple(token_span))
            a, b = token_span
            covered = caption[encoding.offsets[a, 0]:encoding.offsets[b - 1, 1]]
            assert non_space(covered) == non_space(phrase.text)
            found[index, phrase.text] = tuple(token_span)
    # "In this picture we can see two red circles on the grass. Above, the sky."
    assert found[0, "two red circles"] == (7, 10) and found[0, "the grass"] == (11, 13)
    # "There isn't any water, only the grass." (isn ' t: three words, as the reader counts)
    assert found[4, "the grass"] == (9, 11)


@pytest.mark.parametrize(("bad", "error", "message"), [
    ("a red \ud800 circle", TokenizerError, "lone surrogate"),
    ("caf\udcc3\udca9", TokenizerError, "lone surrogate"),  # b"caf\xc3\xa9" as surrogateescape
    ("\udfff", TokenizerError, "lone surrogate"),
    ("a " * 6000, TokenizerError, "characters long"),
    (b"a red circle", TypeError, "must be a str"),
    (None, TypeError, "must be a str"),
])
def test_a_bad_caption_never_changes_how_the_next_one_is_encoded(model_path: Path, bad, error,
                                                                 message):
    tokenizer = Tokenizer(model_path)
    caption = "Two red circles on the grass, under the sky."
    before = tokenizer.encode(caption)
    with pytest.raises(error, match=message):
        tokenizer.encode(bad)
    after = tokenizer.encode(caption)
    assert after.ids.tolist() == before.ids.tolist()
    assert after.offsets.tolist() == before.offsets.tolist()


def test_control_characters_and_any_script_encode(model_path: Path):
    tokenizer = Tokenizer(model_path)
    for caption in ("a red\x00 circle", "a\x07 red\x1b[0m circle", "\u200b\u200ba star",
                    "\u0627\u0644\u0633\u0645\u0627\u0621 the sky", "猫 on the grass \U0001f431"):
        encoding = tokenizer.encode(caption)
        assert encoding.ids[0] == tokenizer.bos_id and len(encoding) > 1
        assert (encoding.offsets[:, 0] <= encoding.offsets[:, 1]).all()
        assert encoding.offsets.max() <= len(caption)


def test_older_sentencepiece_api(model_path: Path):
    """sentencepiece < 0.2.3 has immutable_proto and no offset_mapping: same result."""
    tokenizer = Tokenizer(model_path)
    real = tokenizer._sp

    class OldProcessor:
        def __getattr__(self, name):
            return getattr(real, name)

        def encode(self, words, out_type=None, **kwargs):
            if kwargs:
                raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
            assert out_type == "immutable_proto"
            out = real.encode(words, return_type="offset_mapping", return_bytes=True)
            return [SimpleNamespace(pieces=[SimpleNamespace(id=i, begin=b, end=e) for i, (b, e)
                                            in zip(r["ids"], r["offsets"], strict=True)])
                    for r in out]

    caption = "  Über  CAFÉ, two red circles on the grass."
    expected = Tokenizer(model_path).encode(caption)
    tokenizer._sp = OldProcessor()
    tokenizer._offset_mapping = _has_offset_mapping(tokenizer._sp)  # what __init__ decides
    assert not tokenizer._offset_mapping
    got = tokenizer.encode(caption)
    assert got.ids.tolist() == expected.ids.tolist()
    assert got.offsets.tolist() == expected.offsets.tolist()


# --- random captions ----------------------------------------------------------------------------

WORDS = ["the", "The", "grass", "GRASS", "red", "circles", "sky", "two", "13", "2024", "3rd",
         "café", "naïve", "Über", "ﬁne", "straße", "Ǆemal", "猫", "🐱", "x\u0308y", "isn", "t",
         "blue", "green", "star", "on", "at", "top", "a", "zebra", "quokka"]
PUNCTUATION = list(".,;:!?()'\"-/…_&%#")
SPACES = ["", " ", " ", " ", "  ", "\t", "\n", "\u00a0", " \u3000 "]


@st.composite
def captions(draw) -> str:
    parts = draw(st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(PUNCTUATION)),
                          min_size=1, max_size=25))
    caption = draw(st.sampled_from(SPACES))
    for part in parts:
        caption += part + draw(st.sampled_from(SPACES))
    return caption


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_word_aligned_phrases_are_exact(tokenizer: Tokenizer, data):
    caption = data.draw(captions())
    words = basic_words(caption)
    spans = []
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(words) - 1))
        j = data.draw(st.integers(i + 1, len(words)))
        spans.append((words[i].start, words[j - 1].end))
    encoding, token_spans = tokenizer.encode_phrases(caption, spans)
    for span, token_span in zip(spans, token_spans.tolist(), strict=True):
        check_exact(encoding, span, tuple(token_span))
    every_word = (words[0].start, words[-1].end)
    assert tokenizer.span_to_tokens(encoding, every_word) == (1, len(encoding))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_spans_cover_their_characters(tokenizer: Tokenizer, data):
    caption = data.draw(captions())
    start = data.draw(st.integers(0, len(caption) - 1))
    end = data.draw(st.integers(start + 1, len(caption)))
    encoding = tokenizer.encode(caption)
    wanted = {k for k in range(start, end) if not caption[k].isspace()}
    if not wanted:
        with pytest.raises(TokenizerError, match="covers no token"):
            tokenizer.span_to_tokens(encoding, (start, end))
        return
    token_span = tokenizer.span_to_tokens(encoding, (start, end))
    covered = covered_positions(encoding, token_span)
    assert wanted <= covered
    # beyond the span only characters of the words the span cuts through
    touched = [w for w in basic_words(caption) if w.start < end and w.end > start]
    assert covered <= {k for w in touched for k in range(w.start, w.end)}
