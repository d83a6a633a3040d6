"""Overlays people can read: a grounding result drawn over its image.

Each found phrase's mask is blended at `alpha` (0.5: the image stays visible) in a colour of
its own; each instance of a plural gets an outline in that colour; each label, "phrase 0.91",
is drawn in a filled box of the phrase's colour with black or white text (whichever contrasts
more), placed near its mask where it covers no other label; an optional strip at the bottom
left shows FPS and latency. Text is drawn with Pillow in TrueType fonts (`fonts`), so any
Unicode text is drawn; label boxes are cached, so an overlay per frame stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from groundrt.runtime.fonts import BGR, text_box

if TYPE_CHECKING:
    from groundrt.runtime.results import GroundingResult

# supervision's LEGACY palette (MIT; Sasha Trubetskoy's "20 distinct colours"), RGB: ordered
# so that neighbours differ most, saturated and light enough that a 50% blend keeps the image
# bright (matplotlib's tab10, used before, is dark: grass under its red turned brown)
PALETTE_RGB = ("e6194b", "3cb44b", "ffe119", "0082c8", "f58231", "911eb4", "46f0f0", "f032e6",
               "d2f53c", "fabebe", "008080", "e6beff", "aa6e28", "fffac8", "800000", "aaffc3")
PALETTE: tuple[BGR, ...] = tuple((int(h[4:], 16), int(h[2:4], 16), int(h[:2], 16))
                                 for h in PALETTE_RGB)
STRIP_COLOUR: BGR = (40, 40, 40)
# a mask covering more than LARGE of the image (stuff: the sky, the grass) is tinted at
# LARGE_TINT x alpha: seen whole, it needs less colour, and its own (green grass, a blue sky)
# stays recognisable under it; a mask LABEL_ON_MASK times its label's area takes its label on
# itself (a thing's label goes beside it, not over it)
LARGE, LARGE_TINT, LABEL_ON_MASK = 0.2, 0.6, 30

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def colour(index: int) -> BGR:
    """The BGR colour of the phrase at `index`."""
    return PALETTE[index % len(PALETTE)]


def text_size(image_shape: tuple[int, ...]) -> int:
    """Label text height in pixels for an image: 14 at 640x480."""
    return int(np.clip(round(min(image_shape[:2]) / 34), 10, 32))


def blend(out: np.ndarray, mask: np.ndarray, box: Rect, bgr: BGR, alpha: float) -> None:
    """`out` := (1 - alpha) * out + alpha * bgr where `mask` [H, W] bool, in place."""
    x0, y0, x1, y1 = box
    # inside the box only, in OpenCV's uint8 arithmetic with the colour as a scalar (a filled
    # colour image cost 5x the blend itself)
    region = out[y0:y1, x0:x1]
    tinted = cv2.add(cv2.convertScaleAbs(region, alpha=1 - alpha),
                     tuple(alpha * c for c in bgr) + (0.0,))
    cv2.copyTo(tinted, mask[y0:y1, x0:x1].view(np.uint8), region)


def box_contours(mask: np.ndarray, box: Rect) -> tuple[np.ndarray, ...]:
    """The outer contours of `mask` [H, W] bool, found inside its bounding `box` only (cheap for
    a small thing in a large frame), in image coordinates: one per instance of a plural."""
    x0, y0, x1, y1 = box
    region = np.ascontiguousarray(mask.view(np.uint8)[y0:y1, x0:x1])
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                   offset=(x0, y0))
    return contours


def outline(out: np.ndarray, mask: np.ndarray, bgr: BGR, thickness: int,
            box: Rect | None = None) -> Rect | None:
    """Draw the outer contour of `mask` [H, W] bool on `out`, except where it runs along the
    image's edge (a sky's outline is its horizon, not the frame); the mask's bounding box
    (`box` when known; None: empty)."""
    as_bytes = mask.view(np.uint8)
    if box is None:
        x, y, w, h = cv2.boundingRect(as_bytes)
        box = (x, y, x + w, y + h)
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return None
    contours = box_contours(mask, box)
    last = (out.shape[1] - 1, out.shape[0] - 1)
    closed, cut = [], []  # whole contours; the runs of those that touch the edge
    on_edge = x0 == 0 or y0 == 0 or x1 > last[0] or y1 > last[1]
    for contour in contours if on_edge else ():
        points = contour[:, 0]  # [N, 2] x, y; segment i joins point i and point i + 1
        following = np.roll(points, -1, axis=0)
        along_edge = np.zeros(len(points), bool)
        for axis in (0, 1):
            for edge in (0, last[axis]):
                along_edge |= (points[:, axis] == edge) & (following[:, axis] == edge)
        if not along_edge.any():
            closed.append(contour)
            continue
        # start after an edge segment, so that the last segment is one: then the open runs
        # between edge segments are the contour's pieces inside the image
        start = int(np.flatnonzero(along_edge)[0]) + 1
        points, along_edge = np.roll(points, -start, axis=0), np.roll(along_edge, -start)
        cut += [run for run in np.split(points, np.flatnonzero(along_edge[:-1]) + 1)
                if len(run) > 1]
    # 8-connected lines: anti-aliased ones cost 3x as much along a long horizon
    cv2.polylines(out, closed if on_edge else contours, True, bgr, thickness, cv2.LINE_8)
    if cut:
        cv2.polylines(out, cut, False, bgr, thickness, cv2.LINE_8)
    return box


def overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(size: tuple[int, int], box: Rect, centre: tuple[float, float],
                image_size: tuple[int, int], taken: list[Rect],
                region: np.ndarray | None = None) -> Rect:
    """Where a label of `size` (w, h) goes for a mask with bounding `box` and `centre` in an
    image of `image_size` (H, W), overlapping no rect of `taken`.

    A large mask (`region`, its [H, W] bool mask, given) takes the label on itself: the first
    free place, row by row from the box's top left, that lies on the mask (9 in 10 of its
    pixels). Otherwise the first free one of these, each moved inside the image: above the
    box's top left, inside it, below it, on the centre, above its top right, inside its bottom
    left; else the first moved up or down by label heights to the nearest free row; else (no
    free row) the first."""
    w, h = size
    height, width = image_size
    x0, y0, x1, y1 = box

    def inside(x: int, y: int) -> Rect:
        x = min(max(int(x), 0), max(0, width - w))
        y = min(max(int(y), 0), max(0, height - h))
        return x, y, x + w, y + h

    def free(rect: Rect) -> bool:
        return not any(overlaps(rect, other) for other in taken)

    if region is not None:
        for y in range(y0, max(y0, y1 - h) + 1, max(1, h // 2)):
            for x in range(x0, max(x0, x1 - w) + 1, max(1, w // 4)):
                rect = inside(x, y)
                on_mask = region[rect[1]:rect[3], rect[0]:rect[2]].mean() >= 0.9
                if on_mask and free(rect):
                    return rect
    cx, cy = round(centre[0] - w / 2), round(centre[1] - h / 2)
    candidates = [(x0, y0 - h), (x0, y0), (x0, y1), (cx, cy), (x1 - w, y0 - h), (x0, y1 - h)]
    for rect in (inside(x, y) for x, y in candidates):
        if free(rect):
            return rect
    first = inside(*candidates[0])
    for step in range(1, height // max(1, h) + 1):
        for dy in (-step * h, step * h):
            rect = inside(first[0], first[1] + dy)
            if rect[1] == first[1] + dy and free(rect):
                return rect
    return first


def paste(out: np.ndarray, bitmap: np.ndarray, rect: Rect) -> None:
    """Copy `bitmap` [h, w, 3] into `out` at `rect`, cut at the image's edges."""
    x0, y0 = rect[:2]
    h = min(bitmap.shape[0], out.shape[0] - y0)
    w = min(bitmap.shape[1], out.shape[1] - x0)
    out[y0:y0 + h, x0:x0 + w] = bitmap[:h, :w]


def label_bitmap(text: str, score: float, size: int, bgr: BGR) -> np.ndarray:
    """[h, w, 3] BGR: "text 0.91" in a box of `bgr`; the text and the score are cached apart
    (a score changes every frame, a phrase does not)."""
    parts = [text_box(text, size, bgr), text_box(f"{score:.2f}", size, bgr)]
    height = max(p.shape[0] for p in parts)
    parts = [cv2.copyMakeBorder(p, 0, height - p.shape[0], 0, 0, cv2.BORDER_CONSTANT,
                                value=bgr) if p.shape[0] < height else p for p in parts]
    return np.hstack(parts)


def stats_text(fps: float | None, latency_ms: float | None) -> str:
    parts = ([f"{fps:.1f} FPS"] if fps is not None else []) + (
        [f"{latency_ms:.0f} ms"] if latency_ms is not None else [])
    return " · ".join(parts)


def draw_overlay(result: GroundingResult, image: np.ndarray, alpha: float = 0.5,
                 labels: bool = True, fps: float | None = None,
                 latency_ms: float | None = None) -> np.ndarray:
    """A copy of `image` [H, W, 3] BGR uint8 (the grounded image's size) with the result drawn
    over it (see the module's docstring); the strip when `fps` or `latency_ms` is given."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"overlay needs a BGR uint8 image [H, W, 3], got {image.dtype} "
                         f"{list(image.shape)}")
    if image.shape[:2] != tuple(result.image_size):
        raise ValueError(f"overlay needs an image of size {tuple(result.image_size)}, got "
                         f"{image.shape[:2]}")
    out = image.copy()
    drawn = [(i, p) for i, p in enumerate(result.phrases) if p.area]
    image_area = image.shape[0] * image.shape[1]
    for i, phrase in drawn:
        large = phrase.area > LARGE * image_area
        blend(out, phrase.mask, phrase.box, colour(i), alpha * (LARGE_TINT if large else 1))
    thickness = max(1, round(min(image.shape[:2]) / 240))
    anchors: dict[int, Rect] = {}
    for i, phrase in drawn:
        if not phrase.plural:
            outline(out, phrase.mask, colour(i), thickness, phrase.box)
            continue
        boxes = [b for b in (outline(out, m, colour(i), thickness) for m in phrase.instances)
                 if b is not None]
        if boxes:  # the label goes by the largest instance, not the group's empty middle
            anchors[i] = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    size = text_size(image.shape)
    taken: list[Rect] = []
    if fps is not None or latency_ms is not None:
        strip = text_box(stats_text(fps, latency_ms), size, STRIP_COLOUR)
        margin = max(2, size // 3)
        rect = (margin, out.shape[0] - strip.shape[0] - margin)
        rect = (*rect, rect[0] + strip.shape[1], rect[1] + strip.shape[0])
        paste(out, strip, rect)
        taken.append(rect)
    if labels:
        # the smallest masks first: they have the fewest good places
        for i, phrase in sorted(drawn, key=lambda ip: ip[1].area):
            bitmap = label_bitmap(phrase.text, phrase.score, size, colour(i))
            box = anchors.get(i, phrase.box)
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) if i in anchors \
                else phrase.centroid
            label_area = bitmap.shape[0] * bitmap.shape[1]
            region = phrase.mask if phrase.area >= LABEL_ON_MASK * label_area else None
            rect = place_label((bitmap.shape[1], bitmap.shape[0]), box, centre,
                               out.shape[:2], taken, region)
            paste(out, bitmap, rect)
            taken.append(rect)
    return out
