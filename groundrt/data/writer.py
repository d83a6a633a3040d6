"""Writes a PNG split in the flat layout: JPEG images, panoptic PNGs and the two JSON files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from groundrt.data.layout import SplitLayout
from groundrt.data.narratives import Narrative
from groundrt.data.panoptic import write_panoptic_png
from groundrt.errors import DataFormatError


def write_image_files(layout: SplitLayout, image_id: int, image_bgr: np.ndarray,
                      jpeg_quality: int, panoptic_ids: np.ndarray) -> None:
    """The JPEG and the panoptic PNG of one image (safe to call from worker processes)."""
    if image_bgr.shape[:2] != panoptic_ids.shape:
        raise ValueError("image and panoptic id map differ in size")
    path = layout.image_path(image_id)
    if not cv2.imwrite(str(path), image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]):
        raise DataFormatError(f"could not write {path}")
    write_panoptic_png(layout.panoptic_png_path(image_id), panoptic_ids)


def image_record(image_id: int, height: int, width: int) -> dict:
    return {"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": height, "width": width}


def annotation_record(image_id: int, segments_info: list[dict]) -> dict:
    return {"image_id": image_id, "file_name": f"{image_id:012d}.png",
            "segments_info": segments_info}


class SplitWriter:
    """Collects a split's records; `close()` writes the JSON files (atomically).

    Image files are written as they come (`write_image_files`, possibly by workers); the
    records are added in order with `add`.
    """

    def __init__(self, root: str | Path, split: str, categories: list[dict]) -> None:
        self.layout = SplitLayout.flat(root, split)
        for folder in (self.layout.root, self.layout.panoptic_dir, self.layout.images_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.categories = categories
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.narratives: list[dict] = []

    def add(self, image: dict, annotation: dict, narratives: list[Narrative]) -> None:
        self.images.append(image)
        self.annotations.append(annotation)
        self.narratives.extend(n.to_json() for n in narratives)

    def close(self) -> None:
        panoptic = {"info": {"description": "groundrt procedural PNG scenes"},
                    "licenses": [], "images": self.images, "annotations": self.annotations,
                    "categories": self.categories}
        _write_json(self.layout.panoptic_json, panoptic)
        _write_json(self.layout.narratives_json, self.narratives)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
