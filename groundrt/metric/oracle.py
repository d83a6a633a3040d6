"""Ground truth written as predictions: checks the metric end to end (it must score AR 1.0)."""

from __future__ import annotations

from pathlib import Path

from groundrt.data.dataset import PNGDataset
from groundrt.metric.predictions import PredictionWriter


def write_ground_truth_predictions(dataset: PNGDataset, out: str | Path,
                                   soft: bool = False) -> Path:
    """Every grounded phrase's ground-truth mask, as RLE (or as soft-map PNGs with `soft`)."""
    writer = PredictionWriter(out)
    for image_id, phrases in dataset.phrases_by_image().items():
        panoptic = dataset.read_panoptic(image_id)
        for phrase in phrases:
            mask = dataset.gt_mask(panoptic, phrase)
            if soft:
                writer.add_soft(phrase.key, mask.astype(float), phrase.text)
            else:
                writer.add_mask(phrase.key, mask, phrase.text)
    return writer.close()
