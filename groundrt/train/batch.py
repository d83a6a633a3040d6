"""Training batches: examples stacked into tensors, segment masks at the loss size."""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np
import torch

from groundrt.examples import Example
from groundrt.preprocess import normalize


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
    present: torch.Tensor  # [B, P] bool: the phrase names something in the image
    teacher_image: torch.Tensor | None = None  # [B, 3, S_t, S_t] float32 (distillation)

    def to(self, device: str | torch.device) -> Batch:
        """The batch with every tensor on `device`."""
        def move(value):
            if isinstance(value, list):
                return [v.to(device, non_blocking=True) for v in value]
            return None if value is None else value.to(device, non_blocking=True)
        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})


def collate(examples: list[Example], loss_size: int) -> Batch:
    b = len(examples)
    t = max(len(e.tokens) for e in examples)
    p = max(len(e.spans) for e in examples)
    tokens = torch.zeros(b, t, dtype=torch.int64)
    padding = torch.ones(b, t, dtype=torch.bool)
    spans = torch.zeros(b, p, 2, dtype=torch.int64)
    plural = torch.zeros(b, p, dtype=torch.bool)
    valid = torch.zeros(b, p, dtype=torch.bool)
    present = torch.zeros(b, p, dtype=torch.bool)
    masks, members = [], []
    for i, e in enumerate(examples):
        tokens[i, :len(e.tokens)] = torch.from_numpy(e.tokens)
        padding[i, :len(e.tokens)] = False
        spans[i, :len(e.spans)] = torch.from_numpy(e.spans)
        plural[i, :len(e.plural)] = torch.from_numpy(e.plural)
        valid[i, :len(e.spans)] = True
        present[i, :len(e.spans)] = torch.from_numpy(e.present_mask)
        masks.append(torch.from_numpy(segment_masks(e.panoptic, e.segment_ids, loss_size)))
        members.append(torch.from_numpy(
            np.stack([np.isin(e.segment_ids, s) for s in e.phrase_segments])))
    images = torch.from_numpy(np.stack([normalize(e.image) for e in examples]))
    teacher = (torch.from_numpy(np.stack([normalize(e.teacher_image) for e in examples]))
               if examples[0].teacher_image is not None else None)
    return Batch(images, tokens, padding, spans, plural, valid, masks, members, present, teacher)


def segment_masks(panoptic: np.ndarray, segment_ids: np.ndarray, size: int) -> np.ndarray:
    """[S, S] ids -> [N, size, size] float32 coverage of each segment (area-averaged)."""
    out = np.empty((len(segment_ids), size, size), dtype=np.float32)
    for n, segment in enumerate(segment_ids):
        mask = (panoptic == segment).astype(np.float32)
        out[n] = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return out
