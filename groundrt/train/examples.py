"""Training examples: letterboxed images, panoptic ids and tokenized phrases, held in memory."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from tqdm import tqdm

from groundrt.data import PNGDataset
from groundrt.model.config import ModelConfig
from groundrt.preprocess import Letterbox, normalize
from groundrt.text.tokenizer import Tokenizer


@dataclass
class Example:
    """One narrative of a split, ready for the network."""

    image_id: int
    original_size: tuple[int, int]  # (H, W) of the image before letterboxing
    image: np.ndarray  # [S, S, 3] uint8 BGR, letterboxed
    panoptic: np.ndarray  # [S, S] int32 segment ids, letterboxed (nearest), 0 = padding
    segment_ids: np.ndarray  # [N] int32: every segment of the image (the queries' targets)
    tokens: np.ndarray  # [T] int64
    spans: np.ndarray  # [P, 2] int64 token spans of the grounded phrases
    plural: np.ndarray  # [P] bool, as annotated
    phrase_segments: list[np.ndarray]  # P arrays of segment ids
    keys: list[tuple[str, int, int]]  # prediction keys of the phrases


def build_examples(dataset: PNGDataset, tokenizer: Tokenizer, cfg: ModelConfig,
                   progress: bool = True) -> list[Example]:
    by_narrative: dict[int, list] = {}
    for phrase in dataset.phrases:
        by_narrative.setdefault(phrase.narrative_index, []).append(phrase)
    examples = []
    for index, phrases in tqdm(by_narrative.items(), desc=f"load {dataset.name}", unit="img",
                               disable=not progress):
        narrative = dataset.narratives[index]
        image_id = phrases[0].image_id
        image = dataset.read_image(image_id)
        box = Letterbox(cfg.input_size, *image.shape[:2])
        ids = dataset.read_panoptic(image_id)
        encoding, spans = tokenizer.encode_phrases(narrative.caption,
                                                   [p.char_span for p in phrases])
        examples.append(Example(
            image_id=image_id,
            original_size=image.shape[:2],
            image=box.apply(image),
            panoptic=box.apply(ids, interpolation=cv2.INTER_NEAREST, pad=0),
            segment_ids=np.array(sorted(dataset.panoptic.images[image_id].segments),
                                 dtype=np.int32),
            tokens=encoding.ids.astype(np.int64),
            spans=np.asarray(spans, dtype=np.int64),
            plural=np.array([p.plural_flag for p in phrases], dtype=bool),
            phrase_segments=[np.array(p.segment_ids, dtype=np.int32) for p in phrases],
            keys=[p.key for p in phrases],
        ))
    return examples


@dataclass
class Batch:
    image: torch.Tensor  # [B, 3, S, S] float32
    tokens: torch.Tensor  # [B, T] int64
    token_padding: torch.Tensor  # [B, T] bool
    spans: torch.Tensor  # [B, P, 2] int64 (padding phrases: [0, 0])
    plural: torch.Tensor  # [B, P] bool
    phrase_valid: torch.Tensor  # [B, P] bool
    segment_masks: list[torch.Tensor]  # B tensors [N_b, s, s] float in [0, 1] at loss size
    phrase_members: list[torch.Tensor]  # B tensors [P_b, N_b] bool: segment n is in phrase p


def collate(examples: list[Example], loss_size: int) -> Batch:
    b = len(examples)
    t = max(len(e.tokens) for e in examples)
    p = max(len(e.spans) for e in examples)
    tokens = torch.zeros(b, t, dtype=torch.int64)
    padding = torch.ones(b, t, dtype=torch.bool)
    spans = torch.zeros(b, p, 2, dtype=torch.int64)
    plural = torch.zeros(b, p, dtype=torch.bool)
    valid = torch.zeros(b, p, dtype=torch.bool)
    masks, members = [], []
    for i, e in enumerate(examples):
        tokens[i, :len(e.tokens)] = torch.from_numpy(e.tokens)
        padding[i, :len(e.tokens)] = False
        spans[i, :len(e.spans)] = torch.from_numpy(e.spans)
        plural[i, :len(e.plural)] = torch.from_numpy(e.plural)
        valid[i, :len(e.spans)] = True
        masks.append(torch.from_numpy(segment_masks(e.panoptic, e.segment_ids, loss_size)))
        members.append(torch.from_numpy(
            np.stack([np.isin(e.segment_ids, s) for s in e.phrase_segments])))
    images = torch.from_numpy(np.stack([normalize(e.image) for e in examples]))
    return Batch(images, tokens, padding, spans, plural, valid, masks, members)


def segment_masks(panoptic: np.ndarray, segment_ids: np.ndarray, size: int) -> np.ndarray:
    """[S, S] ids -> [N, size, size] float32 coverage of each segment (area-averaged)."""
    out = np.empty((len(segment_ids), size, size), dtype=np.float32)
    for n, segment in enumerate(segment_ids):
        mask = (panoptic == segment).astype(np.float32)
        out[n] = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return out
