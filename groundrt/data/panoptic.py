"""COCO panoptic ground truth: the id encoding of the PNGs and the annotation JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from groundrt.errors import DataFormatError


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [H, W] int32 segment ids (id = R + 256 G + 256^2 B)."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """[H, W] segment ids -> [H, W, 3] uint8 RGB, the inverse of `rgb_to_ids`."""
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError("panoptic segment ids must lie in [0, 256^3)")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_panoptic_png(path: Path) -> np.ndarray:
    """A panoptic PNG as [H, W] int32 segment ids."""
    if not path.is_file():
        raise DataFormatError(f"panoptic PNG missing: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataFormatError(f"panoptic PNG unreadable (corrupt or not a PNG): {path}")
    return rgb_to_ids(bgr[..., ::-1])


def write_panoptic_png(path: Path, ids: np.ndarray) -> None:
    if not cv2.imwrite(str(path), ids_to_rgb(ids)[..., ::-1]):
        raise DataFormatError(f"could not write {path}")


@dataclass(frozen=True)
class PanopticImage:
    image_id: int
    height: int
    width: int
    image_file: str  # e.g. '000000000139.jpg'
    png_file: str  # e.g. '000000000139.png'
    segments: dict[int, dict]  # segment id -> segments_info entry


class PanopticIndex:
    """`panoptic_{split}.json` indexed by image id and category id."""

    def __init__(self, raw: dict, source: str = "panoptic JSON") -> None:
        try:
            self.isthing = {int(c["id"]): bool(c["isthing"]) for c in raw["categories"]}
            images = {int(i["id"]): i for i in raw["images"]}
            self.images: dict[int, PanopticImage] = {}
            for ann in raw["annotations"]:
                image_id = int(ann["image_id"])
                info = images.get(image_id)
                if info is None:
                    raise DataFormatError(f"{source}: annotation of image {image_id} has no "
                                          "entry in 'images'")
                self.images[image_id] = PanopticImage(
                    image_id, int(info["height"]), int(info["width"]),
                    info.get("file_name", f"{image_id:012d}.jpg"),
                    ann.get("file_name", f"{image_id:012d}.png"),
                    {int(s["id"]): s for s in ann["segments_info"]},
                )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DataFormatError):
                raise
            raise DataFormatError(f"{source} is not COCO panoptic: {exc!r}") from exc

    @classmethod
    def load(cls, path: Path) -> PanopticIndex:
        return cls(load_json(path), str(path))

    def is_thing(self, image_id: int, segment_id: int) -> bool:
        category = int(self.images[image_id].segments[segment_id]["category_id"])
        if category not in self.isthing:
            raise DataFormatError(f"category {category} of segment {segment_id} (image "
                                  f"{image_id}) is not in the panoptic JSON's categories")
        return self.isthing[category]


def load_json(path: Path):
    if not path.is_file():
        raise DataFormatError(f"file missing: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path} is not valid JSON: {exc}") from exc
