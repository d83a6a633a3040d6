"""Thing shapes: the eight outlines as polygons, rasterised into binary masks, and their paint."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "diamond")
STYLES = ("shaded", "striped")

_SHIFT = 4  # fractional bits of cv2.fillPoly's fixed-point vertices: 1/16 px
_ONE = 1 << _SHIFT
RING_INNER = 0.55  # inner / outer radius of a ring
STAR_INNER = 0.42  # inner / outer radius of a star
CROSS_ARM = 0.3  # half width of a cross arm / arm length


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    a = phase + 2.0 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1) * radius


@cache
def unit_outline(shape: str) -> tuple[np.ndarray, ...]:
    """Polygons [N, 2] (x, y) of `shape` with circumradius about 1, centred on (0, 0).

    The first polygon is filled, the following ones are holes. Do not modify the arrays.
    """
    if shape == "circle":
        polys = (_regular(48),)
    elif shape == "square":
        polys = (_regular(4, phase=np.pi / 4),)
    elif shape == "triangle":
        polys = (_regular(3),)
    elif shape == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, STAR_INNER)
        a = -np.pi / 2 + np.pi * np.arange(10) / 5
        polys = (np.stack([np.cos(a) * radii, np.sin(a) * radii], axis=1),)
    elif shape == "ring":
        polys = (_regular(48), _regular(48, RING_INNER))
    elif shape == "cross":
        a = CROSS_ARM
        pts = [(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1),
               (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)]
        polys = (np.array(pts, dtype=np.float64) / np.hypot(1.0, a),)
    elif shape == "hexagon":
        polys = (_regular(6, phase=0.0),)
    elif shape == "diamond":
        polys = (np.array([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], dtype=np.float64),)
    else:
        raise KeyError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    for p in polys:
        p.setflags(write=False)
    return polys


@dataclass
class ThingMask:
    """A thing's full (unoccluded) mask: `mask` [h, w] bool placed at image pixel (x0, y0)."""

    mask: np.ndarray
    x0: int
    y0: int

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def outline(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[np.ndarray]:
    """`unit_outline(shape)` rotated by `angle`, scaled by `radius`, centred at (cx, cy)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # row vectors: p @ rot rotates by `angle`
    return [p @ rot * radius + (cx, cy) for p in unit_outline(shape)]


def rasterize(shape: str, cx: float, cy: float, radius: float, angle: float,
              width: int, height: int) -> ThingMask:
    """The binary mask of `shape` centred at (cx, cy) (pixel centres are integers), clipped to a
    `width` x `height` image; vertices at 1/16 px precision."""
    polys = outline(shape, cx, cy, radius, angle)
    lo = np.floor(polys[0].min(axis=0)) - 1
    hi = np.ceil(polys[0].max(axis=0)) + 2
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), width), min(int(hi[1]), height)
    mask = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
    if mask.size:
        for i, p in enumerate(polys):
            fixed = np.round((p - (x0, y0)) * _ONE).astype(np.int32)
            cv2.fillPoly(mask, [fixed], 0 if i else 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return ThingMask(mask.astype(bool), x0, y0)


def paint(tm: ThingMask, cx: float, cy: float, radius: float, rgb: np.ndarray, style: str,
          rng: np.random.Generator) -> np.ndarray:
    """Colour [h, w, 3] float32 of a thing over its mask's box: `rgb` under a linear brightness
    gradient across the shape, plus alternating darker bands when `style` is "striped"."""
    h, w = tm.mask.shape
    ys = (np.arange(h, dtype=np.float32) + (tm.y0 - cy))[:, None]
    xs = (np.arange(w, dtype=np.float32) + (tm.x0 - cx))[None, :]
    a = rng.uniform(0.0, 2.0 * np.pi)
    gain = rng.uniform(0.1, 0.3)
    tone = 1.0 + (gain / max(radius, 1.0)) * (xs * np.cos(a) + ys * np.sin(a))
    if style == "striped":
        b = rng.uniform(0.0, np.pi)
        period = float(np.clip(rng.uniform(0.3, 0.7) * radius, 4.0, 22.0))
        proj = xs * np.cos(b) + ys * np.sin(b) + rng.uniform(0.0, period)
        dark = (np.floor(proj * (2.0 / period)) % 2).astype(np.float32)
        tone = tone * (1.0 - rng.uniform(0.2, 0.4) * dark)
    return np.asarray(rgb, np.float32)[None, None, :] * tone[..., None]
