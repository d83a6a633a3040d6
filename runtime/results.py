"""What `Grounder.ground` returns: per phrase a mask, its statistics and its instances."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from groundrt.runtime.overlay import draw_overlay


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a [H, W] bool mask, `counts` as str (JSON-ready)."""
    as_bytes = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    # COCO runs go down the columns: OpenCV's transpose gives that column-major layout about
    # twice as fast as np.asfortranarray (whose bool transpose is most of the encoding time)
    column_major = cv2.transpose(np.ascontiguousarray(as_bytes)).T[:, :, None]
    rle = mask_utils.encode(column_major)[0]
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


@dataclass
class PhraseResult:
    text: str
    span: tuple[int, int] | None  # char span in the caption (None for explicit phrases)
    plural: bool
    mask: np.ndarray  # [H, W] bool at the image's size
    score: float  # mean probability over the mask (0 when empty)
    area: int  # pixels
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive); zeros when empty
    centroid: tuple[float, float]  # x, y
    queries: list[int]  # the mask queries (object tokens) the phrase selected (v1: its instances)
    found: bool = True  # network v2: the phrase is in the image (else its mask is empty)
    presence: float | None = None  # network v2: the presence probability (None: v1 package)
    _instances: Callable[[], list[np.ndarray]] = field(repr=False, default=list)

    @property
    def instances(self) -> list[np.ndarray]:
        """[H, W] bool masks, one per instance, decoded lazily: in a v2 package a plural's the
        connected parts of its mask (`postprocess.mask_components`), a singular's its whole
        mask; in a v1 package one per selected query; none when not found or empty."""
        return self._instances()

    def to_json(self, rle: bool = True) -> dict:
        out = {"text": self.text, "span": list(self.span) if self.span else None,
               "plural": self.plural, "score": round(self.score, 6), "area": self.area,
               "box": list(self.box), "centroid": [round(c, 3) for c in self.centroid],
               "queries": self.queries, "found": self.found}
        if self.presence is not None:
            out["presence"] = round(self.presence, 6)
        if rle:
            out["mask"] = encode_rle(self.mask)
        return out


@dataclass
class GroundingResult:
    image_size: tuple[int, int]  # (H, W)
    caption: str | None
    phrases: list[PhraseResult]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self, rle: bool = True) -> dict:
        return {"image_size": list(self.image_size), "caption": self.caption,
                "phrases": [p.to_json(rle) for p in self.phrases],
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}

    def to_coco_rle(self) -> list[dict]:
        """One COCO RLE per phrase, in phrase order."""
        return [encode_rle(p.mask) for p in self.phrases]

    def overlay(self, image: np.ndarray, alpha: float = 0.5, labels: bool = True,
                fps: float | None = None, latency_ms: float | None = None) -> np.ndarray:
        """A copy of `image` (BGR uint8, the grounded image's size) with each found phrase's
        mask blended at `alpha` in its colour, an outline per instance of a plural, a label
        "phrase 0.91" per phrase (when `labels`) and, when `fps` or `latency_ms` is given, a
        strip showing them (`groundrt.runtime.overlay`); ValueError for an image of another
        size."""
        return draw_overlay(self, image, alpha, labels, fps, latency_ms)
