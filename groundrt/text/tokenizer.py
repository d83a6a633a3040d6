"""Caption tokenizer: sentencepiece ids for the text engine, and phrase char spans → token spans.

The text engine pools each phrase's embedding over the phrase's tokens, so a phrase's characters
must map to token positions exactly. Two rules make that exact:

* Pre-splitting. A caption is cut into the same basic words as the PNG data reader cuts it
  (`groundrt.data.narratives.basic_words`: runs of letters/digits, and every other non-space
  character on its own), and sentencepiece encodes each word apart, both when training and when
  encoding. No token can cross a word boundary, so "grass." is always "▁grass" + "▁." and a
  phrase that starts and ends on word boundaries (every `GroundedPhrase.char_span` does) gets
  exactly its own tokens.
* Offsets in the original caption. Sentencepiece reports each piece's [begin, end) in the bytes
  of the text it was given, before normalization (NFKC, case folding); they are turned into
  Python `str` indices of the caption. Offsets never include whitespace. A piece that stands for
  no character of its own (the "▁" that starts a word sentencepiece has no "▁word" piece for, or
  the first pieces of a character that normalization expands, like "ﬁ" → "f" + "i") gets an
  empty offset (b, b) at the start of the character it belongs to.

Only numpy and sentencepiece are needed: the runtime uses this module on Jetson and CPU boxes.
"""

from __future__ import annotations

import hashlib
import io
import operator
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from groundrt.errors import CaptionTooLongError, TokenizerError
from groundrt.text.checks import check_text
from groundrt.text.words import WORD_PATTERN

MODEL_FILENAME = "tokenizer.model"

# Fixed special ids: padding is 0 so that a zero-filled id batch is all padding.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3



@dataclass(eq=False)
class Encoding:
    """One tokenized caption.

    ids: [T] int64 token ids, ids[0] is BOS.
    offsets: [T, 2] int64 [start, end) of each token in `caption` (str indices, not bytes);
        BOS gets (0, 0), a token that stands for no character of its own an empty (b, b).
    """

    caption: str
    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def span_to_tokens(self, char_span: tuple[int, int]) -> tuple[int, int]:
        """[start, end) token positions of `caption[char_span[0]:char_span[1]]`; see Tokenizer."""
        return _span_to_tokens(self, char_span, "char span")


def _words(text: str) -> Iterator[re.Match[str]]:
    return WORD_PATTERN.finditer(text)


def _presplit(text: str) -> str:
    """The text as the tokenizer's model sees it: basic words joined by single spaces."""
    return " ".join(m.group() for m in _words(text))


def train_tokenizer(captions: Iterable[str], out_dir: str | Path, vocab_size: int = 1000,
                    seed: int = 0) -> Path:
    """Train a sentencepiece BPE model on `captions`; writes and returns out_dir/tokenizer.model.

    Deterministic: the same captions (in the same order) give a byte-identical file. The vocabulary
    size is an upper bound (`hard_vocab_limit=False`): a small corpus gets fewer pieces. It must
    still hold every character of the corpus plus the 4 special pieces, or TokenizerError says
    how many are needed. BPE, not unigram: on a templated corpus (the procedural captions)
    sentencepiece's unigram seeding only finds repeats spanning several words, which it drops,
    and ends with a vocabulary of single letters; BPE merges give one piece per frequent word.
    `seed` seeds sentencepiece's random generator (BPE training draws nothing from it today).
    """
    sentences = [s for s in (_presplit(c) for c in captions) if s]
    if not sentences:
        raise TokenizerError("no caption with any word to train the tokenizer on")
    if vocab_size < 5:
        raise TokenizerError(f"vocab_size must be at least 5 (4 special pieces), got {vocab_size}")
    model = io.BytesIO()  # model_writer: no file path ends up inside the model
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=1.0,
            normalization_rule_name="nmt_nfkc_cf",
            split_by_whitespace=True,
            split_by_unicode_script=True,
            split_by_number=True,
            split_digits=True,
            treat_whitespace_as_suffix=False,
            add_dummy_prefix=True,
            remove_extra_whitespaces=True,
            byte_fallback=False,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=1 << 16,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise TokenizerError(f"sentencepiece could not train the tokenizer: {exc}") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILENAME
    with tempfile.NamedTemporaryFile(dir=out, prefix=".tokenizer-", delete=False) as tmp:
        tmp.write(model.getvalue())
    try:
        os.replace(tmp.name, path)  # whole file or none: a reader never sees half a model
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    return path


class Tokenizer:
    """A trained `tokenizer.model`: captions to token ids, phrase char spans to token spans.

    `Tokenizer(path, max_tokens=None)`; `max_tokens` is the text engine's limit on T (BOS
    included), also settable per call of `encode`. With `sha256` (a package's manifest entry)
    the bytes read are checked against it before they are parsed: the file parsed is the file
    verified, even if it changed after the package was checked.
    """

    def __init__(self, path: str | Path, max_tokens: int | None = None,
                 sha256: str | None = None) -> None:
        self.path = Path(path)
        self.max_tokens = _check_limit(max_tokens)
        hint = "train one with groundrt.text.train_tokenizer or use a model package's tokenizer"
        if not self.path.is_file():
            raise TokenizerError(f"tokenizer model not found: {self.path} ({hint})")
        data = self.path.read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise TokenizerError(f"{self.path} does not match its SHA-256 in the package "
                                 "manifest (modified or corrupt): restore the file")
        self._sp = spm.SentencePieceProcessor()
        try:
            if not data:
                raise RuntimeError("the file is empty")
            self._sp.LoadFromSerializedProto(data)
        except RuntimeError as exc:
            raise TokenizerError(
                f"{self.path} is not a sentencepiece model ({exc}); {hint}") from exc
        if self._sp.bos_id() < 0 or self._sp.pad_id() < 0:
            raise TokenizerError(
                f"{self.path} has no BOS or no padding piece (bos_id={self._sp.bos_id()}, "
                f"pad_id={self._sp.pad_id()}); {hint}")
        # sentencepiece >= 0.2.3 reports offsets with return_type="offset_mapping"; older ones
        # only through immutable_proto. Decided once, here: a failing caption never changes it.
        self._offset_mapping = _has_offset_mapping(self._sp)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    @property
    def bos_id(self) -> int:
        return int(self._sp.bos_id())

    @property
    def eos_id(self) -> int:
        return int(self._sp.eos_id())

    @property
    def pad_id(self) -> int:
        return int(self._sp.pad_id())

    @property
    def unk_id(self) -> int:
        return int(self._sp.unk_id())

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """The sentencepiece piece of each id, for reading an encoding."""
        return [self._sp.id_to_piece(int(i)) for i in ids]

    def encode(self, caption: str, max_tokens: int | None = None) -> Encoding:
        """Tokenize `caption`: ids [T] with a leading BOS, offsets [T, 2] into `caption`.

        Raises TokenizerError when the caption is empty or has no token, CaptionTooLongError
        when T exceeds `max_tokens` (this call's, else the tokenizer's).
        """
        limit = _check_limit(max_tokens) if max_tokens is not None else self.max_tokens
        check_text(caption)
        if not caption.strip():
            raise TokenizerError(f"caption {caption!r} is empty: nothing to encode")
        words = list(_words(caption))
        ids, offsets = [self.bos_id], [(0, 0)]
        for word, (word_ids, byte_offsets) in zip(words, self._encode_words(
                [w.group() for w in words]), strict=True):
            char_at = _char_index_of_bytes(word.group())
            for token_id, (begin, end) in zip(word_ids, byte_offsets, strict=True):
                ids.append(int(token_id))
                offsets.append((word.start() + char_at[begin], word.start() + char_at[end]))
        if len(ids) == 1:
            raise TokenizerError(
                f"caption {caption!r} has no token: normalization removes all its characters")
        if limit is not None and len(ids) > limit:
            raise CaptionTooLongError(len(ids), limit, caption)
        return Encoding(caption, np.asarray(ids, dtype=np.int64),
                        np.asarray(offsets, dtype=np.int64).reshape(-1, 2))

    @staticmethod
    def span_to_tokens(encoding: Encoding, char_span: tuple[int, int]) -> tuple[int, int]:
        """[start, end) token positions covering the characters caption[char_span[0]:char_span[1]].

        The tokens are those overlapping the span's characters (whitespace has no token). A span
        on basic-word boundaries, as every phrase of the data reader is, gets exactly its words'
        tokens. A span that cuts a word inside gets every token it overlaps, so its tokens may
        cover a few more characters of that word, never of another. BOS is never included.
        Raises TokenizerError for an empty span, one outside the caption, or one with no token.
        """
        return _span_to_tokens(encoding, char_span, "char span")

    def encode_phrases(self, caption: str, char_spans: Sequence[tuple[int, int]] | np.ndarray,
                       max_tokens: int | None = None) -> tuple[Encoding, np.ndarray]:
        """Encode `caption` and map P phrase char spans: (Encoding, token spans [P, 2] int64).

        A bad span raises TokenizerError naming the phrase's index, span and text.
        """
        encoding = self.encode(caption, max_tokens)
        spans = np.zeros((len(char_spans), 2), dtype=np.int64)
        for i, span in enumerate(char_spans):
            spans[i] = _span_to_tokens(encoding, span, f"phrase {i}")
        return encoding, spans

    def _encode_words(self, words: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Per word: token ids and [begin, end) byte offsets into the word's UTF-8."""
        if not words:
            return []
        if self._offset_mapping:
            out = self._sp.encode(words, return_type="offset_mapping", return_bytes=True)
            return [(r["ids"], r["offsets"]) for r in out]
        protos = self._sp.encode(words, out_type="immutable_proto")
        return [([p.id for p in t.pieces], [(p.begin, p.end) for p in t.pieces]) for t in protos]


def _has_offset_mapping(sp: spm.SentencePieceProcessor) -> bool:
    """Whether this sentencepiece has return_type="offset_mapping" (0.2.3 and later)."""
    try:
        sp.encode(["a"], return_type="offset_mapping", return_bytes=True)
    except TypeError:  # an older sentencepiece: no return_type keyword
        return False
    return True


def _check_limit(max_tokens: int | None) -> int | None:
    if max_tokens is not None and max_tokens < 2:
        raise TokenizerError(f"max_tokens must be at least 2 (BOS and one token), got {max_tokens}")
    return max_tokens


def _char_index_of_bytes(word: str) -> list[int]:
    """[len(utf8) + 1]: the str index of the character each UTF-8 byte of `word` belongs to."""
    if word.isascii():
        return list(range(len(word) + 1))
    index = []
    for i, ch in enumerate(word):
        index += [i] * len(ch.encode("utf-8"))
    index.append(len(word))
    return index


def _span_to_tokens(encoding: Encoding, char_span: tuple[int, int] | np.ndarray,
                    name: str) -> tuple[int, int]:
    try:
        start, end = (operator.index(x) for x in char_span)
    except (TypeError, ValueError) as exc:
        raise TokenizerError(f"{name} {char_span!r} is not a pair of ints") from exc
    caption = encoding.caption
    if not 0 <= start <= end <= len(caption):
        raise TokenizerError(
            f"{name} ({start}, {end}) is outside the caption (0, {len(caption)})")
    if start == end:
        raise TokenizerError(f"{name} ({start}, {end}) is empty")
    begins, ends = encoding.offsets[1:, 0], encoding.offsets[1:, 1]  # [T - 1], BOS left out
    hit = np.where(ends > begins, (begins < end) & (ends > start),  # overlaps the span
                   (begins >= start) & (begins < end))  # empty token at a character inside
    positions = np.flatnonzero(hit)
    if positions.size == 0:
        raise TokenizerError(
            f"{name} ({start}, {end}) {caption[start:end]!r} covers no token (only whitespace or "
            "characters the normalization removes)")
    return int(positions[0]) + 1, int(positions[-1]) + 2
