"""The held-out scenes' things: anti-aliased coverage from supersampling, lit shading with a
highlight, their own patterns and colour jitter, and a soft shadow each, composited in stacking
order.

The outlines are the training shapes' (`groundrt.synth.shapes.outline`), so a thing's pixels
agree with its ground-truth mask (`ThingMask`, what the placement rasterised) up to the
anti-aliased edge.
"""

from __future__ import annotations

import cv2
import numpy as np

from groundrt.synth.placement import PlacedThing
from groundrt.synth.shapes import outline
from groundrt.vocabulary import Vocabulary

SUPERSAMPLE = 4  # samples per pixel along each axis
PATTERNS = ("matte", "glossy", "dotted", "rimmed", "checked")
RIM = 0.8  # "rimmed": the rim is what lies outside the shape scaled by this
GAIN = (0.85, 1.1)  # colour jitter: brightness gain ...
SHIFT = 8  # ... and a per-channel shift, small enough to keep each colour's name


def coverage(shape: str, cx: float, cy: float, radius: float, angle: float,
             box: tuple[int, int, int, int]) -> np.ndarray:
    """Share [h, w] float32 of each pixel of `box` (x0, y0, w, h) inside the outline, from
    SUPERSAMPLE² samples per pixel (pixel centres are integers, as in `rasterize`)."""
    x0, y0, w, h = box
    s = SUPERSAMPLE
    big = np.zeros((h * s, w * s), np.uint8)
    for i, p in enumerate(outline(shape, cx, cy, radius, angle)):
        fixed = np.round(((p - (x0, y0) + 0.5) * s - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(big, [fixed], 0 if i else 1, lineType=cv2.LINE_8, shift=4)
    return big.reshape(h, s, w, s).mean(axis=(1, 3), dtype=np.float32)


def _box(t: PlacedThing, pad: float, w: int, h: int) -> tuple[int, int, int, int]:
    r = t.radius + pad
    x0, y0 = max(int(np.floor(t.cx - r)), 0), max(int(np.floor(t.cy - r)), 0)
    x1, y1 = min(int(np.ceil(t.cx + r)) + 1, w), min(int(np.ceil(t.cy + r)) + 1, h)
    return x0, y0, max(x1 - x0, 0), max(y1 - y0, 0)


def thing_color(rng: np.random.Generator, vocab: Vocabulary, color: str) -> np.ndarray:
    rgb = np.asarray(vocab.colors[color], np.float32) * np.float32(rng.uniform(*GAIN))
    return np.clip(rgb + rng.uniform(-SHIFT, SHIFT, 3).astype(np.float32), 0, 255)


def _shade(rng: np.random.Generator, t: PlacedThing, box: tuple[int, int, int, int],
           light: np.ndarray) -> np.ndarray:
    """Brightness [h, w] over `box`: a lit side, a shadowed side and the thing's pattern."""
    x0, y0, w, h = box
    u = (np.arange(w, dtype=np.float32)[None, :] + np.float32(x0 - t.cx)) / np.float32(t.radius)
    v = (np.arange(h, dtype=np.float32)[:, None] + np.float32(y0 - t.cy)) / np.float32(t.radius)
    tone = 1.0 - rng.uniform(0.12, 0.3) * (u * light[0] + v * light[1])
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    if pattern == "glossy":
        d2 = (u + 0.45 * light[0]) ** 2 + (v + 0.45 * light[1]) ** 2
        tone = tone + rng.uniform(0.25, 0.5) * np.exp(-d2 / np.float32(0.06))
    elif pattern == "dotted":
        period = np.float32(rng.uniform(0.35, 0.6))
        du = (u / period) % 1.0 - 0.5
        dv = (v / period) % 1.0 - 0.5
        tone = tone * (1.0 - rng.uniform(0.25, 0.4) * (du * du + dv * dv < 0.09))
    elif pattern == "rimmed":
        inner = coverage(t.spec.shape, t.cx, t.cy, t.radius * RIM, t.angle, box)
        tone = tone * (1.0 - rng.uniform(0.3, 0.5) * (1.0 - inner))
    elif pattern == "checked":
        a = rng.uniform(0, np.pi)
        period = np.float32(rng.uniform(0.4, 0.8))
        cu, cv = u * np.cos(a) + v * np.sin(a), v * np.cos(a) - u * np.sin(a)
        odd = (np.floor(cu / period) + np.floor(cv / period)) % 2
        tone = tone * (1.0 - rng.uniform(0.2, 0.35) * odd)
    return tone


def paint_things(rng: np.random.Generator, vocab: Vocabulary, img: np.ndarray,
                 things: list[PlacedThing]) -> None:
    """Composite `things` on `img` [H, W, 3] float32 RGB in stacking order, each over the soft
    shadow it casts (one light direction for the scene)."""
    h, w = img.shape[:2]
    a = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(a), np.sin(a)], np.float32)  # the light comes from -light
    strength = rng.uniform(0.2, 0.45)
    for t in things:
        offset = (0.08 + rng.uniform(0.0, 0.12)) * t.radius + 1.0
        sigma = rng.uniform(0.1, 0.25) * t.radius + 0.7
        box = _box(t, offset + 3 * sigma + 2, w, h)
        x0, y0, bw, bh = box
        if not bw or not bh:
            continue
        sx, sy = t.cx + light[0] * offset, t.cy + light[1] * offset
        shadow = cv2.GaussianBlur(coverage(t.spec.shape, sx, sy, t.radius, t.angle, box),
                                  (0, 0), sigma)
        alpha = coverage(t.spec.shape, t.cx, t.cy, t.radius, t.angle, box)[..., None]
        color = thing_color(rng, vocab, t.spec.color)[None, None, :] * _shade(
            rng, t, box, light)[..., None]
        region = img[y0:y0 + bh, x0:x0 + bw]
        region *= (1.0 - np.float32(strength) * shadow)[..., None]
        region += (color - region) * alpha
