"""Shared by the error analyses: a run's query masks and the val targets at the loss size."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from groundrt.examples import Example
from groundrt.model.network import GroundingNet
from groundrt.train.batch import collate, segment_masks

BATCH = 16


@dataclass
class GroundedExample:
    example: Example
    query_masks: torch.Tensor  # [Q, h, w] bool: query logits > 0 at input / pixel stride
    affinity: torch.Tensor  # [P, Q]
    phrase_embed: torch.Tensor  # [P, D]
    segments: torch.Tensor  # [N, h, w] bool, the example's segments at the same size

    def target(self, segment_ids) -> torch.Tensor:
        """[h, w] bool union of the given panoptic segments."""
        index = {int(s): n for n, s in enumerate(self.example.segment_ids)}
        return torch.stack([self.segments[index[int(s)]] for s in segment_ids]).any(0)


def iou(mask: torch.Tensor, target: torch.Tensor) -> float:
    union = (mask | target).sum().item()
    return (mask & target).sum().item() / union if union else 0.0


def grounded_examples(model: GroundingNet, examples: list[Example]) -> Iterator[GroundedExample]:
    """Runs `model` (eval mode, no grad) over `examples` in batches."""
    side = model.cfg.input_size // model.cfg.pixel_stride
    with torch.no_grad():
        for start in range(0, len(examples), BATCH):
            chunk = examples[start:start + BATCH]
            batch = collate(chunk, side)
            out = model(batch.image, batch.tokens, batch.token_padding, batch.spans)
            masks = out.query_logits > 0
            for j, example in enumerate(chunk):
                p = len(example.keys)
                segments = torch.from_numpy(segment_masks(example.panoptic, example.segment_ids,
                                                          side)) > 0.5
                yield GroundedExample(example, masks[j], out.affinity[j, :p],
                                      out.phrase_embed[j, :p], segments)
