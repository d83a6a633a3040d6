"""Where the files of a PNG split live: the flat COCO layout and the PNG release's layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from groundrt.errors import DataFormatError


def split_dirname(split: str) -> str:
    """COCO's name of a split: 'val' -> 'val2017' ('val2017' stays as it is)."""
    if not split or "/" in split or split.startswith("."):
        raise DataFormatError(f"bad split name {split!r}: use e.g. 'train', 'val' or 'val2017'")
    return split if split[-4:].isdigit() else f"{split}2017"


@dataclass(frozen=True)
class SplitLayout:
    """Paths of one split's files.

    groundrt writes the flat layout (COCO's own names, as DESIGN.md lists them)::

        png_coco_val2017.json  panoptic_val2017.json  panoptic_val2017/*.png  val2017/*.jpg

    and also reads the PNG release as its README arranges it::

        annotations/png_coco_val2017.json  annotations/panoptic_val2017.json
        annotations/panoptic_segmentation/val2017/*.png  images/val2017/*.jpg
    """

    root: Path
    name: str  # e.g. 'val2017'
    narratives_json: Path
    panoptic_json: Path
    panoptic_dir: Path
    images_dir: Path

    @classmethod
    def flat(cls, root: str | Path, split: str) -> SplitLayout:
        root, name = Path(root), split_dirname(split)
        return cls(root, name, root / f"png_coco_{name}.json", root / f"panoptic_{name}.json",
                   root / f"panoptic_{name}", root / name)

    @classmethod
    def find(cls, root: str | Path, split: str) -> SplitLayout:
        """Locate an existing split under `root`, in either layout."""
        root, name = Path(root), split_dirname(split)
        if not root.is_dir():
            raise DataFormatError(f"data folder {root} does not exist")

        def first(kind: str, candidates: list[Path], is_dir: bool) -> Path:
            for path in candidates:
                if path.is_dir() if is_dir else path.is_file():
                    return path
            tried = ", ".join(str(p) for p in candidates)
            raise DataFormatError(f"{kind} of split {name!r} not found; looked for {tried}")

        ann = root / "annotations"
        return cls(
            root, name,
            first("narratives", [root / f"png_coco_{name}.json", ann / f"png_coco_{name}.json"],
                  False),
            first("panoptic annotations",
                  [root / f"panoptic_{name}.json", ann / f"panoptic_{name}.json"], False),
            first("panoptic PNG folder",
                  [root / f"panoptic_{name}", ann / "panoptic_segmentation" / name,
                   ann / f"panoptic_{name}"], True),
            first("image folder", [root / name, root / "images" / name], True),
        )

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / f"{image_id:012d}.jpg"

    def panoptic_png_path(self, image_id: int) -> Path:
        return self.panoptic_dir / f"{image_id:012d}.png"
