"""What the scene generator produces for one image, before it is written to disk."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Phenomena a grounded phrase can carry; the metric reports AR per phenomenon.
PHENOMENA = ("position", "lookalike", "small", "occluded", "distractor")


@dataclass
class SegmentInfo:
    """One panoptic segment (COCO panoptic `segments_info` entry)."""

    id: int  # panoptic id, R + 256 G + 256^2 B in the PNG
    category_id: int
    bbox: tuple[int, int, int, int]  # x, y, w, h of the visible pixels
    area: int  # visible pixels
    iscrowd: int = 0

    def to_json(self) -> dict:
        return {"id": self.id, "category_id": self.category_id, "iscrowd": self.iscrowd,
                "bbox": list(self.bbox), "area": self.area}


@dataclass
class UtteranceSpec:
    """One utterance of the caption, in PNG's `segments` form."""

    utterance: str
    segment_ids: list[int] = field(default_factory=list)
    plural: bool = False
    noun: bool = False
    phenomena: list[str] = field(default_factory=list)  # subset of PHENOMENA


@dataclass
class SynthSample:
    image_bgr: np.ndarray  # [H, W, 3] uint8, BGR, before JPEG encoding
    jpeg_quality: int  # 60..95
    panoptic_ids: np.ndarray  # [H, W] int32 segment id per pixel, 0 = void
    segments_info: list[SegmentInfo]
    caption: str
    utterances: list[UtteranceSpec]


def join_utterances(utterances: list[UtteranceSpec]) -> str:
    """The caption the utterances make up: one space between them, none before punctuation."""
    caption = ""
    for u in utterances:
        text = u.utterance.strip()
        if caption and text[:1] not in ".,;:!?":
            caption += " "
        caption += text
    return caption
