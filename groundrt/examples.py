"""Narratives ready for a network: letterboxed image, panoptic ids, tokens and phrase spans.

Torch-free, so that the ONNX Runtime paths (package accuracy, prediction) use the same examples
as training.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from groundrt.data import PNGDataset
from groundrt.data.absent import read_absent
from groundrt.model.config import ModelConfig
from groundrt.preprocess import Letterbox
from groundrt.text.tokenizer import Tokenizer


@dataclass
class Example:
    """One narrative of a split, ready for the network."""

    image_id: int
    original_size: tuple[int, int]  # (H, W) of the image before letterboxing
    image: np.ndarray  # [h, w, 3] uint8 BGR, letterboxed to the input shape (S x S by default)
    panoptic: np.ndarray  # [h, w] int32 segment ids, letterboxed (nearest), 0 = padding
    segment_ids: np.ndarray  # [N] int32: every segment of the image (the queries' targets)
    tokens: np.ndarray  # [T] int64
    spans: np.ndarray  # [P, 2] int64 token spans of the grounded phrases
    plural: np.ndarray  # [P] bool, as annotated
    phrase_segments: list[np.ndarray]  # P arrays of segment ids
    keys: list[tuple[str, int, int]]  # prediction keys of the narrative's grounded phrases
    teacher_image: np.ndarray | None = None  # letterboxed at the teacher's size (distillation)
    # False for phrases that name nothing in the image (their segments are empty); the
    # narrative's grounded phrases come first, in order, then any added ones (see `compose`)
    present: np.ndarray | None = None  # [P] bool; None: all present
    text: str = ""  # what was tokenized: the caption, or the text `compose` made of it

    @property
    def present_mask(self) -> np.ndarray:
        return np.ones(len(self.spans), bool) if self.present is None else self.present


LOAD_THREADS = min(8, os.cpu_count() or 1)  # PNG decoding and resizing release the GIL


@dataclass
class _Pixels:
    """One image's letterboxed pixels (what the loading threads produce)."""

    original_size: tuple[int, int]
    image: np.ndarray
    panoptic: np.ndarray
    teacher_image: np.ndarray | None


def _load_pixels(dataset: PNGDataset, image_id: int, shape: tuple[int, int],
                 teacher_size: int | None) -> _Pixels:
    image = dataset.read_image(image_id)
    box = Letterbox(shape, *image.shape[:2])
    return _Pixels(
        original_size=image.shape[:2],
        image=box.apply(image),
        panoptic=box.apply(dataset.read_panoptic(image_id), interpolation=cv2.INTER_NEAREST,
                           pad=0),
        teacher_image=(Letterbox((teacher_size, teacher_size), *image.shape[:2]).apply(image)
                       if teacher_size else None))


@dataclass(frozen=True)
class TextPhrase:
    """A phrase to place in an example's text."""

    text: str
    plural: bool
    segments: np.ndarray  # [n] int32; empty: absent from the image
    grounded: int | None = None  # index among the narrative's grounded phrases, if one


# How absent phrases (groundrt.data.absent) enter examples:
#   "none":  the narrative as it is;
#   "mixed": training: a share P_PLAIN of the narratives stay as they are, a share P_LIST become
#            phrase lists (present and absent phrases shuffled, joined as the Grounder joins
#            explicit phrases), the others gain a sentence that names the absent phrases among
#            one or two re-mentioned present ones, put at a random sentence boundary of the
#            caption; so neither where a phrase stands nor how the text ends tells whether it is
#            present. (A first version always appended that sentence: the teacher learned that
#            the caption's last phrase may be absent, and answered "not found" for the stuff
#            phrases captions end with.)
#   "list":  every narrative a phrase list (the probe that scores no-target accuracy).
ABSENT_MODES = ("none", "mixed", "list")
P_PLAIN, P_LIST = 0.3, 0.3
EXPLICIT_SEPARATOR = ", "  # as groundrt.runtime.grounder joins explicit phrases
SENTENCE_TEMPLATES = ("We can also see {}.", "In the picture there is also {}.",
                      "I can see {} too.")
SENTENCE_END = re.compile(r"[.!?] ")


def _sentence(phrases: list[TextPhrase], template: str) -> tuple[str, list[tuple[int, int]]]:
    """"We can also see a, b and c." and the phrases' char spans in it."""
    text, spans = template[:template.index("{}")], []
    for k, p in enumerate(phrases):
        if k:
            text += " and " if k == len(phrases) - 1 else ", "
        spans.append((len(text), len(text) + len(p.text)))
        text += p.text
    return text + template[template.index("{}") + 2:], spans


def compose(caption: str, phrases: list[TextPhrase], grounded_spans: list[tuple[int, int]],
            absent: list[TextPhrase], mode: str, rng: np.random.Generator
            ) -> tuple[str, list[TextPhrase], list[tuple[int, int]]]:
    """The text of one example and its phrases with their char spans (grounded ones first)."""
    if mode == "none" or (mode == "mixed" and not absent):
        return caption, phrases, grounded_spans
    draw = rng.random()
    if mode == "mixed" and draw < P_PLAIN:
        return caption, phrases, grounded_spans
    if mode == "list" or draw < P_PLAIN + P_LIST:
        order = [phrases[i] for i in rng.permutation(len(phrases))] + absent
        order = [order[i] for i in rng.permutation(len(order))]
        starts = np.cumsum([0] + [len(p.text) + len(EXPLICIT_SEPARATOR) for p in order[:-1]])
        where = {id(p): (int(s), int(s) + len(p.text)) for p, s in zip(order, starts,
                                                                         strict=True)}
        text = EXPLICIT_SEPARATOR.join(p.text for p in order)
        return text, phrases + absent, [where[id(p)] for p in phrases + absent]
    again = [phrases[i] for i in rng.choice(len(phrases), min(len(phrases),
                                                             int(rng.integers(1, 3))),
                                            replace=False)]
    named = absent + again
    named = [named[i] for i in rng.permutation(len(named))]
    sentence, spans = _sentence(named, SENTENCE_TEMPLATES[int(rng.integers(
        len(SENTENCE_TEMPLATES)))])
    boundaries = [0, *(m.end() for m in SENTENCE_END.finditer(caption)), len(caption)]
    at = boundaries[int(rng.integers(len(boundaries)))]
    inserted, offset = ((" " + sentence, at + 1) if at == len(caption)
                        else (sentence + " ", at))
    text = caption[:at] + inserted + caption[at:]
    moved = [(a + len(inserted), b + len(inserted)) if a >= at else (a, b)
             for a, b in grounded_spans]
    return text, phrases + named, moved + [(a + offset, b + offset) for a, b in spans]


def build_examples(dataset: PNGDataset, tokenizer: Tokenizer, cfg: ModelConfig,
                   progress: bool = True, teacher_size: int | None = None,
                   input_shape: tuple[int, int] | None = None, absent: str = "none",
                   seed: int = 0) -> list[Example]:
    """Every narrative with grounded phrases, letterboxed to `input_shape` (default: the
    network's square); `teacher_size` also letterboxes each image for a distillation teacher
    (decoded once, resized twice). `absent` adds the split's absent phrases (ABSENT_MODES;
    the draws come from `seed` and the narrative). Images load on LOAD_THREADS threads;
    tokenizing stays on this one."""
    if absent not in ABSENT_MODES:
        raise ValueError(f"absent must be one of {ABSENT_MODES}, not {absent!r}")
    absent_by_image = read_absent(dataset.layout) if absent != "none" else {}
    shape = input_shape or cfg.input_shape
    by_narrative = dataset.phrases_by_narrative()
    examples = []
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        pixels = pool.map(lambda phrases: _load_pixels(dataset, phrases[0].image_id,
                                                       shape, teacher_size),
                          by_narrative.values())
        for (index, phrases), loaded in tqdm(zip(by_narrative.items(), pixels, strict=True),
                                             total=len(by_narrative), desc=f"load {dataset.name}",
                                             unit="img", disable=not progress):
            image_id = phrases[0].image_id
            narrative = dataset.narratives[index]
            grounded = [TextPhrase(narrative.caption[slice(*p.char_span)], p.plural_flag,
                                   np.array(p.segment_ids, dtype=np.int32), k)
                        for k, p in enumerate(phrases)]
            missing = [TextPhrase(a.utterance, a.plural, np.zeros(0, np.int32))
                       for a in absent_by_image.get(str(image_id), [])]
            rng = np.random.default_rng([seed, image_id, narrative.annotator_id])
            text, placed, char_spans = compose(narrative.caption, grounded,
                                               [p.char_span for p in phrases], missing, absent,
                                               rng)
            if len(tokenizer.encode(text, 1 << 20).ids) > cfg.max_tokens:  # added text too long
                text, placed, char_spans = narrative.caption, grounded, [p.char_span
                                                                        for p in phrases]
            encoding, spans = tokenizer.encode_phrases(text, char_spans)
            examples.append(Example(
                image_id=image_id,
                original_size=loaded.original_size,
                image=loaded.image,
                panoptic=loaded.panoptic,
                segment_ids=np.array(sorted(dataset.panoptic.images[image_id].segments),
                                     dtype=np.int32),
                tokens=encoding.ids.astype(np.int64),
                spans=np.asarray(spans, dtype=np.int64),
                plural=np.array([p.plural for p in placed], dtype=bool),
                phrase_segments=[p.segments for p in placed],
                keys=[p.key for p in phrases],
                teacher_image=loaded.teacher_image,
                present=np.array([len(p.segments) > 0 for p in placed], dtype=bool),
                text=text,
            ))
    return examples
