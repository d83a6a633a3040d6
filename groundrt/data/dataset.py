"""A PNG split on disk: narratives, grounded phrases, official exclusions, ground-truth masks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from groundrt.data.layout import SplitLayout
from groundrt.data.narratives import Narrative
from groundrt.data.panoptic import PanopticIndex, load_json, read_panoptic_png
from groundrt.errors import DataFormatError

# Why a narrative is left out of the evaluation. The first two are the official rules; the
# official code crashes on the last two, groundrt counts them instead.
EXCLUSION_REASONS = {
    "words_mismatch": "utterances do not join into the caption's words",
    "no_grounded_phrase": "no grounded phrase",
    "unknown_image": "image not in the panoptic annotations",
    "unknown_segment": "a segment id not in the image's panoptic segments",
}


@dataclass(frozen=True)
class GroundedPhrase:
    """A noun utterance with segments: one ground-truth mask to predict."""

    narrative_index: int  # into PNGDataset.narratives
    segment_index: int  # into the narrative's `segments`
    image_id: int
    annotator_id: int
    text: str
    char_span: tuple[int, int]  # caption[start:end] covers the phrase's words
    word_span: tuple[int, int]  # [start, end) in the caption's basic words
    segment_ids: tuple[int, ...]
    plural_flag: bool  # as annotated; the metric's singular/plural is by segment count
    is_thing: bool  # `isthing` of the last segment's category, as the official metric does
    phenomena: tuple[str, ...]

    @property
    def is_plural(self) -> bool:
        return len(self.segment_ids) >= 2

    @property
    def key(self) -> tuple[str, int, int]:
        """Identifies the phrase in a prediction file."""
        return (str(self.image_id), self.annotator_id, self.segment_index)


@dataclass(frozen=True)
class Exclusion:
    narrative_index: int
    image_id: str
    reason: str  # a key of EXCLUSION_REASONS
    detail: str = ""


class PNGDataset:
    """One split of PNG-format data, in the flat layout or the PNG release's layout."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.layout = SplitLayout.find(root, split)
        raw = load_json(self.layout.narratives_json)
        if not isinstance(raw, list):
            raise DataFormatError(f"{self.layout.narratives_json} must hold a list of narratives")
        self.narratives: list[Narrative] = []
        for i, item in enumerate(raw):
            try:
                self.narratives.append(Narrative.from_json(item))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataFormatError(
                    f"{self.layout.narratives_json}: narrative {i} is malformed ({exc!r})") from exc
        self.panoptic = PanopticIndex.load(self.layout.panoptic_json)
        self.phrases: list[GroundedPhrase] = []
        self.excluded: list[Exclusion] = []
        for index, narrative in enumerate(self.narratives):
            phrases, exclusion = self._grounded_phrases(index, narrative)
            if exclusion:
                self.excluded.append(exclusion)
            else:
                self.phrases.extend(phrases)

    def _grounded_phrases(self, index: int, narrative: Narrative):
        def excluded(reason: str, detail: str = ""):
            return [], Exclusion(index, narrative.image_id, reason, detail)

        spans = narrative.utterance_word_spans()
        if spans is None:
            return excluded("words_mismatch")
        grounded = [(i, u) for i, u in enumerate(narrative.utterances) if u.grounded]
        if not grounded:
            return excluded("no_grounded_phrase")
        try:
            image_id = int(narrative.image_id)
        except ValueError:
            return excluded("unknown_image", f"image id {narrative.image_id!r} is not a number")
        image = self.panoptic.images.get(image_id)
        if image is None:
            return excluded("unknown_image", f"image {image_id}")
        phrases = []
        for i, u in grounded:
            unknown = [s for s in u.segment_ids if s not in image.segments]
            if unknown:
                return excluded("unknown_segment", f"segment {unknown[0]} in {u.text!r}")
            phrases.append(GroundedPhrase(
                narrative_index=index, segment_index=i, image_id=image_id,
                annotator_id=narrative.annotator_id, text=u.text,
                char_span=narrative.char_span(spans[i]), word_span=spans[i],
                segment_ids=u.segment_ids, plural_flag=u.plural,
                is_thing=self.panoptic.is_thing(image_id, u.segment_ids[-1]),
                phenomena=u.phenomena,
            ))
        return phrases, None

    @property
    def name(self) -> str:
        return self.layout.name

    def exclusion_counts(self) -> dict[str, int]:
        return dict(Counter(e.reason for e in self.excluded))

    def image_size(self, image_id: int) -> tuple[int, int]:
        """(height, width) as the panoptic JSON records it."""
        image = self.panoptic.images[image_id]
        return image.height, image.width

    def image_path(self, image_id: int) -> Path:
        return self.layout.images_dir / self.panoptic.images[image_id].image_file

    def read_image(self, image_id: int) -> np.ndarray:
        """The image as [H, W, 3] uint8 BGR."""
        path = self.image_path(image_id)
        if not path.is_file():
            raise DataFormatError(f"image missing: {path}")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataFormatError(f"image unreadable (corrupt or not an image): {path}")
        return image

    def read_panoptic(self, image_id: int) -> np.ndarray:
        """The image's panoptic segment ids, [H, W] int32, checked against the JSON's size."""
        image = self.panoptic.images[image_id]
        ids = read_panoptic_png(self.layout.panoptic_dir / image.png_file)
        if ids.shape != (image.height, image.width):
            raise DataFormatError(
                f"panoptic PNG of image {image_id} is {ids.shape[1]}x{ids.shape[0]}, the JSON "
                f"says {image.width}x{image.height}")
        return ids

    def phrases_by_narrative(self) -> dict[int, list[GroundedPhrase]]:
        """Grounded phrases by narrative index, in order (narratives without any left out)."""
        grouped: dict[int, list[GroundedPhrase]] = {}
        for phrase in self.phrases:
            grouped.setdefault(phrase.narrative_index, []).append(phrase)
        return grouped

    def phrases_by_image(self) -> dict[int, list[GroundedPhrase]]:
        grouped: dict[int, list[GroundedPhrase]] = {}
        for phrase in self.phrases:
            grouped.setdefault(phrase.image_id, []).append(phrase)
        return grouped

    @staticmethod
    def gt_mask(panoptic_ids: np.ndarray, phrase: GroundedPhrase) -> np.ndarray:
        """[H, W] bool: the union of the phrase's segments."""
        return np.isin(panoptic_ids, np.asarray(phrase.segment_ids, dtype=panoptic_ids.dtype))
