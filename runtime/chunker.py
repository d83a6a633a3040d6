"""Noun phrases of a caption: what to ground when the caller names no phrases.

`noun_phrases` is a built-in chunker for captions in the language of the shipped vocabulary
(groundrt/vocabulary.json); it needs nothing beyond the standard library. `spacy_noun_phrases`
uses spaCy's `doc.noun_chunks` instead, for open-vocabulary captions (extra `groundrt[nlp]`).

A built-in phrase is a run of words with no punctuation inside, in this order:

    [predeterminer] [determiners] [numbers / plural words] [adjectives] nouns [position]

* determiners: "a", "an", "the", "this", "that", "these", "those", "another", ...;
* numbers: digits ("3") and number words ("one", the vocabulary's counts "two".."four", ...);
  plural words: the vocabulary's ("some", "several", "a few") and a few more ("many", "both");
* adjectives: the vocabulary's colours and sizes, position words used as adjectives
  ("the left circle"), "other";
* nouns: the vocabulary's things and stuff, singular or plural. Adjacent nouns make one
  compound phrase whose head is the last noun ("the sand road": head "road").

Conventions, chosen to match the annotation of the scene generator (groundrt.synth), which the
metric compares against:

* A position of the vocabulary right after the noun is part of the phrase: the generator's
  grounded utterance is "the red circle on the left", not "the red circle". A position after
  anything else is not ("the sky is at the top" gives "the sky"), nor is a ground phrase
  ("a star on the grass" gives "a star" and "the grass").
* Words outside the lists above end a phrase: "the bright red circle" gives "red circle".
* Nouns the generator leaves ungrounded ("this picture", "the image") are never phrases.
* Plural: the head noun is a plural form, or the phrase has a number above one or a plural
  word ("several", "few", "many", "both"). "some" alone does not make a phrase plural
  ("some sand" is singular); "some circles" is plural by its noun.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from groundrt.errors import GroundrtError
from groundrt.text.words import WORD_PATTERN
from groundrt.vocabulary import Vocabulary, load_vocabulary

NLP_INSTALL = "pip install 'groundrt[nlp]' && python -m spacy download en_core_web_sm"

# Nouns the generator marks as ungrounded ("[this picture]" in its templates), and their kin.
UNGROUNDED_NOUNS = frozenset({
    "picture", "pictures", "image", "images", "scene", "scenes", "photo", "photos",
    "photograph", "photographs", "view", "frame", "background", "foreground", "front",
})
PREDETERMINERS = frozenset({"all", "both", "half"})
DETERMINERS = frozenset({
    "a", "an", "the", "this", "that", "these", "those", "another", "any", "each", "every",
    "either", "neither", "its", "their", "our", "my", "your",
})
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
EXTRA_PLURAL_WORDS = frozenset({"many", "both", "multiple", "various", "numerous"})
EXTRA_ADJECTIVES = frozenset({"other"})

# Word ranks: a phrase's words before its nouns never go down in rank, left to right.
_PREDET, _DET, _QUANT, _ADJ, _NOUN = range(5)


class ChunkerUnavailableError(GroundrtError, ImportError):
    """spaCy or its English model is not installed."""


class NoNounPhraseError(GroundrtError, ValueError):
    """A caption is blank or names nothing the chunker can ground."""


@dataclass(frozen=True)
class NounPhrase:
    """A noun phrase of a caption: `caption[start:end] == text`."""

    text: str
    start: int  # char span in the caption
    end: int
    plural: bool
    head: str  # lemma of the head noun, as in the vocabulary ("circle", "sky"); spaCy's lemma
    # for spacy_noun_phrases


@dataclass(frozen=True)
class _Word:
    norm: str  # lower case, accents stripped (as the PNG basic words)
    start: int
    end: int


@dataclass(frozen=True)
class _Lexicon:
    nouns: dict[str, tuple[str, bool]]  # word form -> (lemma, plural form)
    ranks: dict[str, int]  # modifier word -> rank
    numbers: dict[str, int]
    plural_words: frozenset[str]  # words that make a phrase plural
    positions: tuple[tuple[str, ...], ...]  # longest first


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def _words(caption: str) -> list[_Word]:
    return [_Word(_norm(m.group()), m.start(), m.end()) for m in WORD_PATTERN.finditer(caption)]


def _plural_of(noun: str) -> str:
    """Regular English plural, for stuff nouns the vocabulary gives no plural of."""
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _build_lexicon(vocab: Vocabulary) -> _Lexicon:
    """The chunker's word lists for `vocab`."""
    nouns: dict[str, tuple[str, bool]] = {}
    for c in vocab.categories:
        if c.name in UNGROUNDED_NOUNS:
            continue
        plural = vocab.plural_nouns.get(c.name) or _plural_of(c.name)
        nouns.setdefault(_norm(plural), (c.name, True))
        nouns[_norm(c.name)] = (c.name, False)
    numbers = {**NUMBER_WORDS, **{_norm(w): n for w, n in vocab.counts.items()}}
    vocab_plural = {_norm(w) for phrase in vocab.plural_words for w in phrase.split()}
    ranks: dict[str, int] = {}
    for words, rank in (
        (PREDETERMINERS, _PREDET), (DETERMINERS, _DET),
        (set(numbers) | vocab_plural | EXTRA_PLURAL_WORDS, _QUANT),
        ({*vocab.colors, *vocab.sizes, *EXTRA_ADJECTIVES,
          *(p.split()[-1] for p in vocab.positions)}, _ADJ),
    ):
        for w in words:
            ranks.setdefault(_norm(w), rank)  # "a" of "a few" stays a determiner
    forcing = (vocab_plural | EXTRA_PLURAL_WORDS) - DETERMINERS - {"some"}
    positions = sorted((tuple(_norm(w) for w in p.split()) for p in vocab.positions),
                       key=len, reverse=True)
    return _Lexicon(nouns, ranks, numbers, frozenset(forcing), tuple(positions))


@lru_cache(maxsize=1)
def _default_lexicon() -> _Lexicon:
    return _build_lexicon(load_vocabulary())


def _joined(caption: str, a: _Word, b: _Word) -> bool:
    """Whether only whitespace separates word `a` from the next word `b`."""
    return not caption[a.end:b.start].strip()


def _position_end(caption: str, words: list[_Word], last: int, lex: _Lexicon) -> int:
    """Index of the last word of a position right after words[last], or `last` if none."""
    for pos in lex.positions:
        stop = last + len(pos)
        if stop < len(words) and all(
                words[last + 1 + k].norm == w and _joined(caption, words[last + k],
                                                          words[last + 1 + k])
                for k, w in enumerate(pos)):
            return stop
    return last


def _is_plural_modifier(norm: str, lex: _Lexicon) -> bool:
    if norm in lex.plural_words:
        return True
    if norm.isdecimal():
        return int(norm) > 1
    return lex.numbers.get(norm, 0) > 1


def _rank(norm: str, lex: _Lexicon) -> int | None:
    if norm.isdecimal():
        return _QUANT
    return lex.ranks.get(norm)


def noun_phrases(caption: str, vocabulary: Vocabulary | None = None) -> list[NounPhrase]:
    """Noun phrases of `caption` ending in a vocabulary noun, in caption order, no overlaps."""
    lex = _default_lexicon() if vocabulary is None else _build_lexicon(vocabulary)
    words = _words(caption)
    out: list[NounPhrase] = []
    floor, i = 0, 0  # floor: first word a new phrase may start at
    while i < len(words):
        if words[i].norm not in lex.nouns:
            i += 1
            continue
        last = i  # nouns in a row make one compound
        while (last + 1 < len(words) and words[last + 1].norm in lex.nouns
               and _joined(caption, words[last], words[last + 1])):
            last += 1
        first, rank = i, _NOUN
        while first > floor and _joined(caption, words[first - 1], words[first]):
            r = _rank(words[first - 1].norm, lex)
            if r is None or r > rank:
                break
            first, rank = first - 1, r
        head, plural = lex.nouns[words[last].norm]
        plural = plural or any(_is_plural_modifier(w.norm, lex) for w in words[first:i])
        end = _position_end(caption, words, last, lex)
        start, stop = words[first].start, words[end].end
        out.append(NounPhrase(caption[start:stop], start, stop, plural, head))
        floor = i = end + 1
    return out


def require_noun_phrases(
        caption: str,
        chunker: Callable[[str], list[NounPhrase]] = noun_phrases) -> list[NounPhrase]:
    """`chunker(caption)`, or NoNounPhraseError when the caption is blank or has no phrase."""
    if not caption or not caption.strip():
        raise NoNounPhraseError(
            f"caption {caption!r} is empty: there is nothing to ground; write a caption that "
            "names something in the image, or pass phrases=[...] explicitly")
    phrases = chunker(caption)
    if not phrases:
        preview = caption if len(caption) <= 60 else caption[:57] + "..."
        vocab = load_vocabulary()
        known = ", ".join(c.name for c in vocab.categories)
        raise NoNounPhraseError(
            f"no noun phrase found in caption {preview!r}: the built-in chunker only knows the "
            f"vocabulary's nouns ({known}); pass phrases=[...] explicitly, or use the spaCy "
            f"chunker ({NLP_INSTALL})")
    return phrases


@lru_cache(maxsize=4)
def _spacy_model(model: str) -> Any:
    try:
        import spacy
    except ImportError as exc:
        raise ChunkerUnavailableError(
            f"the spaCy chunker needs spaCy and its English model, which are not installed: "
            f"run `pip install 'groundrt[nlp]'` and `python -m spacy download {model}`, or use "
            "the built-in chunker (noun_phrases)") from exc
    try:
        return spacy.load(model)
    except OSError as exc:
        raise ChunkerUnavailableError(
            f"spaCy is installed but its model {model!r} is not: run "
            f"`python -m spacy download {model}` (spaCy itself comes with "
            "`pip install 'groundrt[nlp]'`)") from exc


def spacy_noun_phrases(caption: str, model: str = "en_core_web_sm") -> list[NounPhrase]:
    """Noun phrases from spaCy's `doc.noun_chunks` (any vocabulary), with the built-in
    chunker's conventions: positions after the noun attached, pronouns and ungrounded nouns
    ("this picture") dropped."""
    nlp = _spacy_model(model)
    lex = _default_lexicon()
    words = _words(caption)
    out: list[NounPhrase] = []
    for chunk in nlp(caption).noun_chunks:
        root = chunk.root
        lemma = _norm(root.lemma_ or root.text)
        if root.pos_ == "PRON" or lemma in UNGROUNDED_NOUNS:
            continue
        start, end = chunk.start_char, chunk.end_char
        if out and start < out[-1].end:  # inside the position of the previous phrase
            continue
        last = max((k for k, w in enumerate(words) if w.end <= end), default=None)
        if last is not None and words[last].end == end:
            end = words[_position_end(caption, words, last, lex)].end
        plural = (root.tag_ in ("NNS", "NNPS") or "Plur" in root.morph.get("Number")
                  or any(_is_plural_modifier(_norm(t.text), lex)
                         for t in chunk if t.i != root.i))
        out.append(NounPhrase(caption[start:end], start, end, bool(plural), lemma))
    return out
