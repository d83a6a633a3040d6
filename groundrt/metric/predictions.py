"""groundrt's prediction files: one mask per grounded phrase, as COCO RLE or a soft map.

A prediction file is JSON (or a folder holding `predictions.json`)::

    {"format": "groundrt.predictions", "version": 1,
     "predictions": [
        {"image_id": "2000000", "annotator_id": 0, "segment_index": 3,
         "utterance": "two red circles",
         "rle": {"size": [H, W], "counts": "..."}},          # binary mask, COCO RLE
        {"image_id": "2000000", "annotator_id": 0, "segment_index": 7,
         "utterance": "the sky", "soft": "soft/2000000_0_7.png"}   # soft map in [0, 1]
     ]}

`(image_id, annotator_id, segment_index)` names the phrase: `segment_index` is the position of
its utterance in the narrative's `segments`. Masks are at the image's original size. A soft map
is a 16- or 8-bit grayscale PNG (value / 65535 or / 255) or a float `.npy`, its path relative
to the JSON file. `utterance` is informative. A phrase without a prediction scores IoU 0.

Optional, written by groundrt for network v2 packages and read by `groundrt eval`: a
prediction's `"found"` (bool: the model says the phrase is in the image) and `"instances"`
(a list of RLE masks, a plural's instances), and a top-level `"absent"` list of the answers to
the split's absent phrases, `{"image_id", "utterance", "found"}`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from groundrt.errors import PredictionFormatError

FORMAT = "groundrt.predictions"
VERSION = 1
PhraseKey = tuple[str, int, int]  # (image_id, annotator_id, segment_index)


def encode_rle(mask: np.ndarray) -> dict:
    """[H, W] bool -> COCO RLE with string counts (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> [H, W] bool."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        rle = {"size": [height, width], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


class PredictionWriter:
    """Collects predictions and writes them as one JSON file (soft maps beside it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix != ".json":
            self.path = self.path / "predictions.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: list[dict] = []
        self.absent: list[dict] = []

    def add_mask(self, key: PhraseKey, mask: np.ndarray, utterance: str = "",
                 found: bool | None = None,
                 instances: list[np.ndarray] | None = None) -> None:
        entry = {**_key_fields(key), "utterance": utterance, "rle": encode_rle(mask)}
        if found is not None:
            entry["found"] = bool(found)
        if instances is not None:
            entry["instances"] = [encode_rle(m) for m in instances]
        self.entries.append(entry)

    def add_absent(self, image_id: str, utterance: str, found: bool) -> None:
        """The answer to an absent phrase (it should not be found)."""
        self.absent.append({"image_id": str(image_id), "utterance": utterance,
                            "found": bool(found)})

    def add_soft(self, key: PhraseKey, soft: np.ndarray, utterance: str = "") -> None:
        """A soft map [H, W] in [0, 1], stored as a 16-bit PNG (resolution 1/65535)."""
        relative = Path("soft") / f"{key[0]}_{key[1]}_{key[2]}.png"
        (self.path.parent / relative).parent.mkdir(exist_ok=True)
        quantized = np.round(np.clip(soft, 0.0, 1.0) * 65535).astype(np.uint16)
        cv2.imwrite(str(self.path.parent / relative), quantized)
        self.entries.append({**_key_fields(key), "utterance": utterance,
                             "soft": relative.as_posix()})

    def close(self) -> Path:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "version": VERSION, "predictions": self.entries,
                       **({"absent": self.absent} if self.absent else {})}, f)
        os.replace(tmp, self.path)
        return self.path


def _key_fields(key: PhraseKey) -> dict:
    return {"image_id": str(key[0]), "annotator_id": int(key[1]), "segment_index": int(key[2])}


class PredictionReader:
    """Reads a prediction file; `mask(key, shape)` gives a phrase's map or None."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "predictions.json"
        if not path.is_file():
            raise PredictionFormatError(f"prediction file missing: {path}")
        self.path = path
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PredictionFormatError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise PredictionFormatError(f"{path} is not a groundrt prediction file "
                                        f"(expected \"format\": \"{FORMAT}\")")
        if raw.get("version") != VERSION:
            raise PredictionFormatError(f"{path}: prediction format version "
                                        f"{raw.get('version')!r} is not supported ({VERSION} is)")
        self.entries: dict[PhraseKey, dict] = {}
        for i, entry in enumerate(raw.get("predictions", [])):
            try:
                key = (str(entry["image_id"]), int(entry["annotator_id"]),
                       int(entry["segment_index"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise PredictionFormatError(f"{path}: prediction {i} lacks image_id/"
                                            f"annotator_id/segment_index ({exc!r})") from exc
            if key in self.entries:
                raise PredictionFormatError(f"{path}: two predictions for phrase {key}")
            if ("rle" in entry) == ("soft" in entry):
                raise PredictionFormatError(f"{path}: prediction {key} needs exactly one of "
                                            "'rle' and 'soft'")
            if "found" in entry and not isinstance(entry["found"], bool):
                raise PredictionFormatError(f"{path}: prediction {key}: 'found' must be a bool")
            if not isinstance(entry.get("instances", []), list):
                raise PredictionFormatError(f"{path}: prediction {key}: 'instances' must be a "
                                            "list of RLE masks")
            self.entries[key] = entry
        self.absent: list[dict] = raw.get("absent", [])
        if not isinstance(self.absent, list) or not all(
                isinstance(a, dict) and isinstance(a.get("found"), bool) for a in self.absent):
            raise PredictionFormatError(f"{path}: 'absent' must be a list of "
                                        "{image_id, utterance, found}")

    def keys(self) -> set[PhraseKey]:
        return set(self.entries)

    def found(self, key: PhraseKey) -> bool | None:
        """The model's presence answer for the phrase (None: not given)."""
        entry = self.entries.get(key)
        return None if entry is None else entry.get("found")

    def has_instances(self) -> bool:
        return any("instances" in e for e in self.entries.values())

    def instances(self, key: PhraseKey, shape: tuple[int, int]) -> list[np.ndarray]:
        """The phrase's instance masks (none given: [])."""
        entry = self.entries.get(key) or {}
        out = []
        for rle in entry.get("instances", []):
            try:
                mask = decode_rle(rle)
            except Exception as exc:  # pycocotools raises bare exceptions on corrupt counts
                raise PredictionFormatError(f"{self.path}: an instance of {key} is unreadable: "
                                            f"{exc!r}") from exc
            if mask.shape != tuple(shape):
                raise PredictionFormatError(f"{self.path}: an instance of {key} is not at the "
                                            "original image size")
            out.append(mask)
        return out

    def mask(self, key: PhraseKey, shape: tuple[int, int]) -> np.ndarray | None:
        """The phrase's [H, W] map (bool, or float in [0, 1]), checked against `shape`."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        try:
            pred = decode_rle(entry["rle"]) if "rle" in entry else self._read_soft(entry["soft"])
        except PredictionFormatError:
            raise
        except Exception as exc:  # pycocotools raises bare exceptions on corrupt counts
            raise PredictionFormatError(f"{self.path}: mask of {key} is unreadable: "
                                        f"{exc!r}") from exc
        if pred.shape != tuple(shape):
            raise PredictionFormatError(
                f"{self.path}: mask of {key} is {pred.shape[1]}x{pred.shape[0]}, the image is "
                f"{shape[1]}x{shape[0]}; predictions must be at the original image size")
        return pred

    def _read_soft(self, relative: str) -> np.ndarray:
        path = self.path.parent / relative
        if not path.is_file():
            raise PredictionFormatError(f"soft map missing: {path}")
        if path.suffix == ".npy":
            soft = np.load(path, allow_pickle=False).astype(np.float64)
        else:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
                raise PredictionFormatError(f"soft map {path} must be an 8- or 16-bit "
                                            "grayscale PNG or a .npy")
            soft = image.astype(np.float64) / np.iinfo(image.dtype).max
        if soft.ndim != 2 or not np.all((soft >= 0) & (soft <= 1)):
            raise PredictionFormatError(f"soft map {path} must be [H, W] with values in [0, 1]")
        return soft
