"""PyTorch inference of a run: phrase masks at the original image size (the reference path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from groundrt.data import PNGDataset
from groundrt.examples import Example, build_examples
from groundrt.metric.predictions import write_mask_predictions
from groundrt.model.checkpoint import TOKENIZER_FILE, load_model
from groundrt.model.grounding import phrase_mask_logits, select_queries
from groundrt.model.network import GroundingNet
from groundrt.preprocess import Letterbox
from groundrt.text.tokenizer import Tokenizer
from groundrt.train.batch import collate


@torch.no_grad()
def predict_masks(model: GroundingNet, examples: list[Example],
                  batch_size: int = 16) -> Iterator[tuple[Example, np.ndarray]]:
    """For each example, its phrase masks [P, H, W] bool at the image's original (H, W)."""
    model.eval()
    cfg = model.cfg
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate(chunk, loss_size=1).to(device)
        out = model(batch.image, batch.tokens, batch.token_padding, batch.spans)
        selected = select_queries(out.affinity, batch.plural, cfg.plural_threshold)
        logits = phrase_mask_logits(selected, out.query_logits).cpu()  # [B, P, h, w]
        for i, example in enumerate(chunk):
            box = Letterbox(cfg.input_shape, *example.original_size)
            p = len(example.spans)
            maps = box.to_original(logits[i, :p].numpy(), cfg.pixel_stride)
            yield example, maps > 0



def predict_split(run: str | Path, data: str | Path, split: str, out: str | Path,
                  batch_size: int = 16, progress: bool = True) -> Path:
    """`groundrt predict --model RUN`: a run's masks for every grounded phrase of a split."""
    run = Path(run)
    model = load_model(run)
    dataset = PNGDataset(data, split)
    examples = build_examples(dataset, Tokenizer(run / TOKENIZER_FILE), model.cfg, progress)
    return write_mask_predictions(dataset, predict_masks(model, examples, batch_size), out,
                                  len(examples), progress)
