"""Shared by the error analyses: a run's query masks and the val targets at the loss size."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import torch

from groundrt.data import PNGDataset
from groundrt.examples import Example, build_examples
from groundrt.model.checkpoint import load_model
from groundrt.model.network import GroundingNet
from groundrt.text.tokenizer import Tokenizer
from groundrt.train.batch import collate, segment_masks

BATCH = 16


@dataclass
class ValRun:
    name: str  # the run folder as given
    model: GroundingNet  # in eval mode
    by_key: dict  # the dataset's phrases by key
    examples: list[Example]
    dataset: PNGDataset


def load_val_run(description: str) -> ValRun:
    """Parses --model, --data, --threads and loads the run and its val examples."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="training run folder")
    parser.add_argument("--data", required=True, help="dataset folder with a val split")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    dataset = PNGDataset(args.data, "val")
    tokenizer = Tokenizer(f"{args.model}/tokenizer.model", model.cfg.max_tokens)
    examples = build_examples(dataset, tokenizer, model.cfg, progress=False)
    return ValRun(args.model, model, {p.key: p for p in dataset.phrases}, examples, dataset)


@dataclass
class GroundedExample:
    example: Example
    query_masks: torch.Tensor  # [Q, h, w] bool: query logits > 0 at input / pixel stride
    affinity: torch.Tensor  # [P, Q]
    phrase_embed: torch.Tensor  # [P, D]
    segments: torch.Tensor  # [N, h, w] bool, the example's segments at the same size

    @cached_property
    def _segment_index(self) -> dict[int, int]:
        return {int(s): n for n, s in enumerate(self.example.segment_ids)}

    def target(self, segment_ids) -> torch.Tensor:
        """[h, w] bool union of the given panoptic segments."""
        return torch.stack([self.segments[self._segment_index[int(s)]]
                            for s in segment_ids]).any(0)

    def best_query(self, target: torch.Tensor) -> int:
        """The query whose mask has the best IoU with `target`."""
        return max(range(len(self.query_masks)), key=lambda q: iou(self.query_masks[q], target))

    def oracle_iou(self, target: torch.Tensor) -> float:
        """The best IoU any query mask reaches with `target` (the image path's ceiling)."""
        return iou(self.query_masks[self.best_query(target)], target)


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
