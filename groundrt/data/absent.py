"""Absent phrases: noun phrases that name nothing in an image, in a side file beside a split.

The official PNG format has no way to say "this phrase is not in the image", so groundrt keeps
them apart, in `absent_{split}.json` at the split's root (the official files stay unchanged)::

    {"format": "groundrt.absent", "version": 1,
     "phrases": [{"image_id": "2000000", "utterance": "a purple star", "kind": "thing",
                   "plural": false}, ...]}

Training learns the presence score from them; `groundrt eval` reports GRES's no-target accuracy
(absent phrases answered "not found") and target accuracy (grounded phrases answered "found").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from groundrt.data.layout import SplitLayout, split_dirname
from groundrt.errors import DataFormatError

FORMAT, VERSION = "groundrt.absent", 1
KINDS = ("thing", "stuff", "unknown")  # unknown: a word outside the vocabulary


@dataclass(frozen=True)
class AbsentPhrase:
    image_id: str
    utterance: str
    kind: str  # one of KINDS
    plural: bool = False


def absent_path(root: str | Path, split: str) -> Path:
    return Path(root) / f"absent_{split_dirname(split)}.json"


def write_absent(root: str | Path, split: str, phrases: list[AbsentPhrase]) -> Path:
    """Writes the side file atomically (a temporary file renamed over it)."""
    path = absent_path(root, split)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, "phrases": [
        {"image_id": p.image_id, "utterance": p.utterance, "kind": p.kind, "plural": p.plural}
        for p in phrases]}))
    os.replace(tmp, path)
    return path


def read_absent(layout: SplitLayout) -> dict[str, list[AbsentPhrase]]:
    """The split's absent phrases by image id; {} when the split has no side file."""
    path = layout.root / f"absent_{layout.name}.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT or raw.get("version") != VERSION:
            raise DataFormatError(f"{path}: not a {FORMAT} v{VERSION} file")
        out: dict[str, list[AbsentPhrase]] = {}
        for item in raw["phrases"]:
            phrase = AbsentPhrase(str(item["image_id"]), str(item["utterance"]), str(item["kind"]),
                                  bool(item.get("plural", False)))
            if phrase.kind not in KINDS or not phrase.utterance.strip():
                raise DataFormatError(f"{path}: bad absent phrase {item!r}")
            out.setdefault(phrase.image_id, []).append(phrase)
        return out
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DataFormatError(f"{path} is malformed: {exc}") from exc
