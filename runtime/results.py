"""What `Grounder.ground` returns: per phrase a mask, its statistics and its instances."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools import mask as mask_utils

# distinct BGR colours for overlays (tab10)
PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]


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
    queries: list[int]  # the mask queries (object tokens) the phrase selected: its instances
    found: bool = True  # network v2: the phrase is in the image (else its mask is empty)
    presence: float | None = None  # network v2: the presence probability (None: v1 package)
    _instances: Callable[[], list[np.ndarray]] = field(repr=False, default=list)

    @property
    def instances(self) -> list[np.ndarray]:
        """One [H, W] bool mask per selected query (several for a plural), decoded lazily; in
        a v2 package the part of the query's mask inside the phrase's; none when not found."""
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

    def overlay(self, image: np.ndarray, alpha: float = 0.5, labels: bool = True) -> np.ndarray:
        """A copy of `image` (BGR, the grounded image's size) with coloured masks and labels."""
        if image.shape[:2] != self.image_size:
            raise ValueError(f"overlay needs an image of size {self.image_size}, got "
                             f"{image.shape[:2]}")
        out = image.copy()
        for i, phrase in enumerate(self.phrases):
            if not phrase.area:
                continue
            # blend inside the phrase's box only, in OpenCV's uint8 arithmetic with the colour
            # as a scalar (a filled colour image cost 5x the blend itself)
            x0, y0, x1, y1 = phrase.box
            region = out[y0:y1, x0:x1]
            colour = tuple(alpha * c for c in PALETTE[i % len(PALETTE)]) + (0.0,)
            tinted = cv2.add(cv2.convertScaleAbs(region, alpha=1 - alpha), colour)
            cv2.copyTo(tinted, phrase.mask[y0:y1, x0:x1].view(np.uint8), region)
        if labels:
            for i, phrase in enumerate(self.phrases):
                if phrase.area:
                    x0, y0 = phrase.box[:2]
                    cv2.putText(out, phrase.text, (x0 + 2, max(12, y0 + 12)),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.4, PALETTE[i % len(PALETTE)], 1,
                                cv2.LINE_AA)
        return out
