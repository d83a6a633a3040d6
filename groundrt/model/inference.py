"""PyTorch inference of a run: phrase masks at the original image size (the reference path)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from groundrt.examples import Example
from groundrt.model.grounding import phrase_mask_logits, select_queries
from groundrt.model.network import GroundingNet
from groundrt.preprocess import Letterbox
from groundrt.train.batch import collate


@dataclass
class PhrasePrediction:
    """One example's phrases at the image's original (H, W), in the example's phrase order."""

    masks: np.ndarray  # [P, H, W] bool (empty for a phrase not found)
    found: np.ndarray  # [P] bool (v1: always True)
    instances: list[list[np.ndarray]]  # per phrase, the masks of its selected object tokens


@torch.no_grad()
def predict_phrases(model: GroundingNet, examples: list[Example], batch_size: int = 16,
                    with_instances: bool = False
                    ) -> Iterator[tuple[Example, PhrasePrediction]]:
    """Every phrase of every example: v1 the union of the queries it selects; v2 its own mask,
    empty where its presence says it is not in the image."""
    model.eval()
    cfg = model.cfg
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate(chunk, loss_size=1).to(device)
        out = model(batch.image, batch.tokens, batch.token_padding, batch.spans)
        selected = select_queries(out.affinity, batch.plural, cfg.plural_threshold)
        if cfg.phrase_queries:
            found = (out.presence[-1].sigmoid() > cfg.presence_threshold)
            logits = out.phrase_logits().masked_fill(~found[..., None, None], float("-inf"))
        else:
            found = torch.ones_like(batch.plural)
            logits = phrase_mask_logits(selected, out.query_logits)
        logits, found, selected = logits.cpu(), found.cpu(), selected.cpu()
        query_logits = out.query_logits.cpu()
        for i, example in enumerate(chunk):
            box = Letterbox(cfg.input_shape, *example.original_size)
            p = len(example.spans)
            masks = box.to_original(logits[i, :p].numpy(), cfg.pixel_stride) > 0
            instances: list[list[np.ndarray]] = [[] for _ in range(p)]
            if with_instances:
                for k in range(p):
                    queries = torch.nonzero(selected[i, k]).flatten().numpy()
                    if found[i, k] and len(queries):
                        maps = box.to_original(query_logits[i, queries].numpy(),
                                               cfg.pixel_stride) > 0
                        instances[k] = list(maps & masks[k])
            yield example, PhrasePrediction(masks, found[i, :p].numpy(), instances)


def predict_masks(model: GroundingNet, examples: list[Example],
                  batch_size: int = 16) -> Iterator[tuple[Example, np.ndarray]]:
    """For each example, the masks [P, H, W] bool of the narrative's grounded phrases."""
    for example, prediction in predict_phrases(model, examples, batch_size):
        yield example, prediction.masks[:len(example.keys)]
