"""Shared fixtures: a tiny dataset in the PNG release's own layout, written by hand."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from groundrt.data.panoptic import ids_to_rgb

IMAGE_ID = 139
HEIGHT, WIDTH = 6, 8


def panoptic_ids() -> np.ndarray:
    """[6, 8]: grass (id 3) everywhere, circles 1 and 2, a sky band (id 300000, 3 bytes)."""
    ids = np.full((HEIGHT, WIDTH), 3, dtype=np.int32)
    ids[0, :] = 300000
    ids[2:4, 1:3] = 1
    ids[2:4, 5:7] = 2
    return ids


SEGMENTS_INFO = [
    {"id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 2, 2, 2], "area": 4},
    {"id": 2, "category_id": 1, "iscrowd": 0, "bbox": [5, 2, 2, 2], "area": 4},
    {"id": 3, "category_id": 102, "iscrowd": 0, "bbox": [0, 1, 8, 5], "area": 32},
    {"id": 300000, "category_id": 101, "iscrowd": 0, "bbox": [0, 0, 8, 1], "area": 8},
]
CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "thing", "isthing": 1},
    {"id": 101, "name": "sky", "supercategory": "stuff", "isthing": 0},
    {"id": 102, "name": "grass", "supercategory": "stuff", "isthing": 0},
]


def seg(utterance, ids=(), noun=False, plural=False):
    return {"utterance": utterance, "segment_ids": [str(i) for i in ids], "plural": plural,
            "noun": noun}


NARRATIVES = [
    {  # 0: fine, three grounded phrases (one plural, one thing+stuff mixed)
        "image_id": str(IMAGE_ID), "annotator_id": 3,
        "caption": "In this picture we can see two red circles on the grass. Above, the sky.",
        "segments": [seg("In"), seg("this picture", noun=True), seg("we can see"),
                     seg("two red circles", [1, 2], True, True), seg("on"),
                     seg("the grass", [3], True), seg(". Above,"),
                     seg("the sky", [1, 300000], True), seg(".")]},
    {  # 1: a word too many in the caption -> excluded
        "image_id": str(IMAGE_ID), "annotator_id": 4,
        "caption": "Here we can see the the grass.",
        "segments": [seg("Here we can see"), seg("the grass", [3], True), seg(".")]},
    {  # 2: no grounded phrase -> excluded
        "image_id": str(IMAGE_ID), "annotator_id": 5,
        "caption": "A picture of nothing.",
        "segments": [seg("A picture", noun=True), seg("of nothing.")]},
    {  # 3: segment id unknown -> excluded
        "image_id": str(IMAGE_ID), "annotator_id": 6,
        "caption": "We can see a circle.",
        "segments": [seg("We can see"), seg("a circle", [99], True), seg(".")]},
    {  # 4: a contraction split as the annotations split it ("is" + "n't") still joins
        "image_id": str(IMAGE_ID), "annotator_id": 7,
        "caption": "There isn't any water, only the grass.",
        "segments": [seg("There is"), seg("n't any water,"), seg("only"),
                     seg("the grass", [3], True), seg(".")]},
]


def write_release(root: Path, narratives=NARRATIVES) -> Path:
    """Writes the fixture in the layout of the PNG release's README."""
    ann = root / "annotations"
    (ann / "panoptic_segmentation" / "val2017").mkdir(parents=True)
    (root / "images" / "val2017").mkdir(parents=True)
    (ann / "png_coco_val2017.json").write_text(json.dumps(narratives))
    panoptic = {
        "images": [{"id": IMAGE_ID, "file_name": f"{IMAGE_ID:012d}.jpg", "height": HEIGHT,
                    "width": WIDTH}],
        "annotations": [{"image_id": IMAGE_ID, "file_name": f"{IMAGE_ID:012d}.png",
                         "segments_info": SEGMENTS_INFO}],
        "categories": CATEGORIES,
    }
    (ann / "panoptic_val2017.json").write_text(json.dumps(panoptic))
    png = ann / "panoptic_segmentation" / "val2017" / f"{IMAGE_ID:012d}.png"
    cv2.imwrite(str(png), ids_to_rgb(panoptic_ids())[..., ::-1])
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    cv2.imwrite(str(root / "images" / "val2017" / f"{IMAGE_ID:012d}.jpg"), image)
    return root


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return write_release(tmp_path / "png")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """10 train and 4 val procedural scenes (with their absent-phrase side files); a test module
    may define its own."""
    from groundrt.synth.dataset import synthesize

    root = tmp_path_factory.mktemp("synth")
    synthesize(root, "train", 10, seed=5, size=(128, 96), workers=1, progress=False)
    synthesize(root, "val", 4, seed=6, size=(120, 90), workers=1, progress=False)
    return root


def free_ports(count: int) -> list[int]:
    """`count` loopback ports free at the time of the call (for the servers the tests start)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_in_threads(target, count: int) -> None:
    """target(k) on `count` threads at once, k = 0 .. count - 1; returns when all are done."""
    import threading

    threads = [threading.Thread(target=target, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
