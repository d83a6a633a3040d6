"""`groundrt eval`: scores a prediction file against a PNG split, per group and phenomenon."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from groundrt.data.dataset import EXCLUSION_REASONS, GroundedPhrase, PNGDataset
from groundrt.metric.average_recall import accuracy_at, average_recall, soft_iou
from groundrt.metric.instances import instance_ar, matched_segment_ious
from groundrt.metric.predictions import PredictionReader


@dataclass
class GroupScore:
    name: str
    phrases: int
    ar: float | None  # None when the group is empty
    acc50: float | None


@dataclass
class EvalReport:
    split: str
    narratives: int
    excluded: dict[str, int]  # reason -> narratives
    missing_predictions: int  # grounded phrases with no entry in the prediction file
    unused_predictions: int  # entries that name no grounded phrase of the split
    groups: list[GroupScore] = field(default_factory=list)
    # network v2 predictions (None where the file does not carry what they need):
    target_acc: float | None = None  # grounded phrases answered found
    no_target_acc: float | None = None  # absent phrases answered not found
    absent_phrases: int = 0
    instance_ar: float | None = None  # plurals' segments matched to their instances

    def group(self, name: str) -> GroupScore:
        return next(g for g in self.groups if g.name == name)

    def to_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{'group':<22}{'phrases':>9}{'AR':>9}{'acc@0.5':>9}"]
        for g in self.groups:
            ar = "-" if g.ar is None else f"{g.ar:.4f}"
            acc = "-" if g.acc50 is None else f"{g.acc50:.4f}"
            lines.append(f"{g.name:<22}{g.phrases:>9}{ar:>9}{acc:>9}")
        excluded = sum(self.excluded.values())
        detail = ", ".join(f"{EXCLUSION_REASONS[r]}: {n}" for r, n in self.excluded.items())
        lines.append(f"narratives: {self.narratives}, excluded: {excluded}"
                     + (f" ({detail})" if detail else ""))
        lines.append(f"phrases without prediction (IoU 0): {self.missing_predictions}; "
                     f"predictions naming no grounded phrase: {self.unused_predictions}")
        extras = [f"{name} {value:.4f}" for name, value in (
            ("target accuracy", self.target_acc),
            (f"no-target accuracy ({self.absent_phrases} absent phrases)", self.no_target_acc),
            ("instance AR (plurals)", self.instance_ar)) if value is not None]
        if extras:
            lines.append("; ".join(extras))
        return "\n".join(lines)


def phrase_groups(phrase: GroundedPhrase) -> list[str]:
    """The official groups a phrase counts in, then its phenomena."""
    groups = ["overall", "things" if phrase.is_thing else "stuff",
              "plurals" if phrase.is_plural else "singulars"]
    return groups + [f"phenomenon:{p}" for p in phrase.phenomena]


def phrase_ious(dataset: PNGDataset, predictions: PredictionReader,
                progress: bool = False) -> np.ndarray:
    """One IoU per grounded phrase of the dataset, in `dataset.phrases` order."""
    index = {id(p): i for i, p in enumerate(dataset.phrases)}
    ious = np.zeros(len(dataset.phrases), dtype=np.float64)
    by_image = dataset.phrases_by_image()
    for image_id, phrases in tqdm(by_image.items(), desc="eval", unit="img", disable=not progress):
        panoptic = dataset.read_panoptic(image_id)
        for phrase in phrases:
            pred = predictions.mask(phrase.key, panoptic.shape)
            if pred is not None:
                ious[index[id(phrase)]] = soft_iou(pred, dataset.gt_mask(panoptic, phrase))
    return ious


def instance_ious(dataset: PNGDataset, phrase: GroundedPhrase, instances: list[np.ndarray],
                  panoptic: np.ndarray | None = None) -> np.ndarray:
    """[N] IoU of each of a phrase's segments with the instance matched to it (0: none)."""
    panoptic = dataset.read_panoptic(phrase.image_id) if panoptic is None else panoptic
    return matched_segment_ious([panoptic == s for s in phrase.segment_ids], instances)


def score_masks(dataset: PNGDataset, results: Iterable[tuple[Any, np.ndarray]]) -> dict:
    """AR per group and acc@0.5 of in-memory masks, without a prediction file.

    `results` yields (item, masks): `item.image_id` and `item.keys` (the phrase keys) name the
    phrases of one narrative, masks [P, H, W] are their masks at the original size. Only the
    phrases in `results` count (a val subset scores as such).
    """
    by_key = {p.key: p for p in dataset.phrases}
    groups: dict[str, list[float]] = {}
    for item, masks in results:
        panoptic = dataset.read_panoptic(item.image_id)
        for key, mask in zip(item.keys, masks, strict=True):
            phrase = by_key[key]
            iou = soft_iou(mask, dataset.gt_mask(panoptic, phrase))
            for name in phrase_groups(phrase):
                groups.setdefault(name, []).append(iou)
    report = {name: average_recall(v) for name, v in groups.items()}
    report["acc@0.5"] = accuracy_at(groups.get("overall", []))
    return report


def evaluate(dataset: PNGDataset, predictions: PredictionReader,
             progress: bool = False) -> EvalReport:
    ious = phrase_ious(dataset, predictions, progress)
    members: dict[str, list[int]] = {g: [] for g in ("overall", "things", "stuff", "singulars",
                                                     "plurals")}
    for i, phrase in enumerate(dataset.phrases):
        for g in phrase_groups(phrase):
            members.setdefault(g, []).append(i)
    groups = [
        GroupScore(name, len(idx), average_recall(ious[idx]) if idx else None,
                   accuracy_at(ious[idx], 0.5) if idx else None)
        for name, idx in members.items()
    ]
    keys = {p.key for p in dataset.phrases}
    report = EvalReport(
        split=dataset.name, narratives=len(dataset.narratives),
        excluded=dataset.exclusion_counts(),
        missing_predictions=len(keys - predictions.keys()),
        unused_predictions=len(predictions.keys() - keys),
        groups=groups,
    )
    answers = [predictions.found(p.key) for p in dataset.phrases]
    if any(a is not None for a in answers):  # a phrase with no answer counts as not found
        report.target_acc = float(np.mean([a is True for a in answers]))
    if predictions.absent:
        report.absent_phrases = len(predictions.absent)
        report.no_target_acc = float(np.mean([not a["found"] for a in predictions.absent]))
    if predictions.has_instances():
        segment_ious = []
        for phrase in dataset.phrases:
            if phrase.is_plural:
                panoptic = dataset.read_panoptic(phrase.image_id)
                segment_ious.append(instance_ious(
                    dataset, phrase, predictions.instances(phrase.key, panoptic.shape), panoptic))
        report.instance_ar = instance_ar(segment_ious)
    return report
