"""Narratives ready for a network: letterboxed image, panoptic ids, tokens and phrase spans.

Torch-free, so that the ONNX Runtime paths (package accuracy, prediction) use the same examples
as training.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from groundrt.data import PNGDataset
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
    keys: list[tuple[str, int, int]]  # prediction keys of the phrases
    teacher_image: np.ndarray | None = None  # letterboxed at the teacher's size (distillation)


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


def build_examples(dataset: PNGDataset, tokenizer: Tokenizer, cfg: ModelConfig,
                   progress: bool = True, teacher_size: int | None = None,
                   input_shape: tuple[int, int] | None = None) -> list[Example]:
    """Every narrative with grounded phrases, letterboxed to `input_shape` (default: the
    network's square); `teacher_size` also letterboxes each image for a distillation teacher
    (decoded once, resized twice). Images load on LOAD_THREADS threads; tokenizing stays on
    this one."""
    shape = input_shape or cfg.input_shape
    by_narrative: dict[int, list] = {}
    for phrase in dataset.phrases:
        by_narrative.setdefault(phrase.narrative_index, []).append(phrase)
    examples = []
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        pixels = pool.map(lambda phrases: _load_pixels(dataset, phrases[0].image_id,
                                                       shape, teacher_size),
                          by_narrative.values())
        for (index, phrases), loaded in tqdm(zip(by_narrative.items(), pixels, strict=True),
                                             total=len(by_narrative), desc=f"load {dataset.name}",
                                             unit="img", disable=not progress):
            image_id = phrases[0].image_id
            encoding, spans = tokenizer.encode_phrases(dataset.narratives[index].caption,
                                                       [p.char_span for p in phrases])
            examples.append(Example(
                image_id=image_id,
                original_size=loaded.original_size,
                image=loaded.image,
                panoptic=loaded.panoptic,
                segment_ids=np.array(sorted(dataset.panoptic.images[image_id].segments),
                                     dtype=np.int32),
                tokens=encoding.ids.astype(np.int64),
                spans=np.asarray(spans, dtype=np.int64),
                plural=np.array([p.plural_flag for p in phrases], dtype=bool),
                phrase_segments=[np.array(p.segment_ids, dtype=np.int32) for p in phrases],
                keys=[p.key for p in phrases],
                teacher_image=loaded.teacher_image,
            ))
    return examples
