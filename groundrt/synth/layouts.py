"""Stuff layouts: which stuff class covers each pixel of a scene, from several random templates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from groundrt.synth.textures import RoadLine

MIN_FRACTION = 0.04  # every stuff class of a layout covers at least this share of the image
GROUNDS = ("grass", "sand", "road", "water")


@dataclass
class StuffLayout:
    """`labels` [H, W] uint8 indexes `classes` (2..4 distinct stuff names) for every pixel."""

    labels: np.ndarray
    classes: list[str]
    template: str
    road: RoadLine | None = None  # the road's centre line, when the road is a strip or band


class _Canvas:
    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.labels = np.zeros((h, w), np.uint8)
        self.classes: list[str] = []
        self.xs = np.arange(w, dtype=np.float32)[None, :]
        self.ys = np.arange(h, dtype=np.float32)[:, None]
        self.road: RoadLine | None = None

    def fill(self, name: str, where: np.ndarray | None = None) -> None:
        if name not in self.classes:
            self.classes.append(name)
        k = self.classes.index(name)
        if where is None:
            self.labels[:] = k
        else:
            self.labels[where] = k

    def done(self, template: str) -> StuffLayout:
        return StuffLayout(self.labels, self.classes, template, self.road)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _wave(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """[n] float32: a sum of three random sines of total amplitude about `amp` px."""
    t = np.arange(n, dtype=np.float32) / max(n, 1)
    out = np.zeros(n, np.float32)
    for k in range(3):
        freq = rng.uniform(0.5, 2.5) * (k + 1)
        out += amp * rng.uniform(0.2, 1.0) / (k + 1) * np.sin(
            2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return out


def _horizon(c: _Canvas, rng: np.random.Generator, lo: float, hi: float, amp: float,
             tilt: float = 0.1) -> np.ndarray:
    """[1, W] y of a wavy, slightly tilted line between lo*H and hi*H."""
    base = c.h * rng.uniform(lo, hi)
    slope = rng.uniform(-tilt, tilt)
    return (base + slope * (c.xs[0] - c.w / 2) + _wave(rng, c.w, amp * c.h))[None, :]


def _blob(c: _Canvas, rng: np.random.Generator, cx: float, cy: float, rx: float,
          ry: float) -> np.ndarray:
    """[H, W] bool irregular blob (an ellipse with random low harmonics), drawn with fillPoly."""
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0, 0.25 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r /= r.max() / 1.1
    pts = np.stack([cx + rx * r * np.cos(theta), cy + ry * r * np.sin(theta)], axis=1)
    mask = np.zeros((c.h, c.w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def sky_ground(c: _Canvas, rng: np.random.Generator) -> None:
    """Sky over one or two ground bands with wavy boundaries."""
    horizon = _horizon(c, rng, 0.25, 0.5, 0.05)
    ground = _pick(rng, GROUNDS)
    c.fill(ground)
    c.fill("sky", c.ys < horizon)
    bottom = np.full_like(horizon, c.h)
    if rng.random() < 0.5:
        second = _pick(rng, [g for g in GROUNDS if g != ground])
        bottom = horizon + c.h * rng.uniform(0.2, 0.4) + _wave(rng, c.w, 0.04 * c.h)[None, :]
        c.fill(second, c.ys >= bottom)
    if "road" in c.classes:
        k = c.classes.index("road")
        top, low = (horizon, bottom) if k == c.classes.index(ground) else (bottom, c.h)
        mid = float(np.mean((top + low) / 2))
        c.road = RoadLine(c.w / 2, mid, 1.0, 0.0)


def _ground_maybe_under_sky(c: _Canvas, rng: np.random.Generator, sky_chance: float,
                            wave: float) -> tuple[float, np.ndarray]:
    """Grass or sand everywhere, then maybe a sky above a wavy horizon.

    Returns the horizon's mean row (0 without sky) and the sky's [H, W] bool mask.
    """
    c.fill(_pick(rng, ("grass", "sand")))
    sky = np.zeros((c.h, c.w), bool)
    if rng.random() >= sky_chance:
        return 0.0, sky
    horizon = _horizon(c, rng, 0.15, 0.35, wave)
    sky = c.ys < horizon
    c.fill("sky", sky)
    return float(horizon.mean()), sky


def pond(c: _Canvas, rng: np.random.Generator) -> None:
    """An irregular pond of water inside grass or sand, sometimes under the sky."""
    top, sky = _ground_maybe_under_sky(c, rng, sky_chance=0.6, wave=0.04)
    rx = c.w * rng.uniform(0.15, 0.35)
    ry = min(c.h * rng.uniform(0.12, 0.28), 0.45 * (c.h - top))
    cx = c.w * rng.uniform(0.3, 0.7)
    cy = rng.uniform(top + 0.8 * ry, c.h - 0.5 * ry)
    c.fill("water", _blob(c, rng, cx, cy, rx, ry) & ~sky)


def road_strip(c: _Canvas, rng: np.random.Generator) -> None:
    """A road strip running diagonally across grass or sand; maybe sky above, a pond beside."""
    top, sky = _ground_maybe_under_sky(c, rng, sky_chance=0.45, wave=0.03)
    angle = np.deg2rad(rng.uniform(20, 75)) * (1 if rng.random() < 0.5 else -1)
    line = RoadLine(c.w * rng.uniform(0.3, 0.7), rng.uniform(top + 0.3 * (c.h - top),
                                                             top + 0.7 * (c.h - top)),
                    float(np.cos(angle)), float(np.sin(angle)),
                    rng.uniform(-0.6, 0.6) / max(c.w, c.h))
    half = min(c.w, c.h) * rng.uniform(0.06, 0.13)
    _, across = line.frame(c.xs, c.ys)
    strip = (np.abs(across) < half) & ~sky
    c.fill("road", strip)
    c.road = line
    if len(c.classes) < 4 and rng.random() < 0.35:
        side = 1 if rng.random() < 0.5 else -1
        r = min(c.w, c.h) * rng.uniform(0.12, 0.22)
        dist = half + r * rng.uniform(0.9, 1.4)
        cx, cy = line.x - side * line.uy * dist, line.y + side * line.ux * dist
        blob = _blob(c, rng, cx, cy, r * rng.uniform(1.0, 1.6), r) & ~sky & ~strip
        c.fill("water", blob)


def wall(c: _Canvas, rng: np.random.Generator) -> None:
    """A brick wall under the sky (or filling the top), above a ground band."""
    c.fill("wall")
    if rng.random() < 0.75:
        top = c.h * rng.uniform(0.08, 0.35) + rng.uniform(-0.05, 0.05) * (c.xs - c.w / 2)
        c.fill("sky", c.ys < top)
    bottom = _horizon(c, rng, 0.55, 0.8, 0.01, tilt=0.05)
    ground = _pick(rng, ("grass", "sand", "road"))
    c.fill(ground, c.ys >= bottom)
    if ground == "road":
        c.road = RoadLine(c.w / 2, float((bottom.mean() + c.h) / 2), 1.0, 0.0)


def beach(c: _Canvas, rng: np.random.Generator) -> None:
    """Sky, sea and sand with a flat horizon and a wavy shoreline; sometimes grass in front."""
    horizon = _horizon(c, rng, 0.2, 0.42, 0.004, tilt=0.04)
    shore = horizon + c.h * rng.uniform(0.15, 0.3) + _wave(rng, c.w, 0.06 * c.h)[None, :]
    c.fill("sand")
    c.fill("sky", c.ys < horizon)
    c.fill("water", (c.ys >= horizon) & (c.ys < shore))
    if rng.random() < 0.3:
        front = shore + c.h * rng.uniform(0.15, 0.3) + _wave(rng, c.w, 0.04 * c.h)[None, :]
        c.fill("grass", c.ys >= front)


def vertical_split(c: _Canvas, rng: np.random.Generator) -> None:
    """Two grounds side by side with a wavy, slanted vertical boundary; maybe sky above."""
    left = _pick(rng, ("grass", "sand", "water", "road", "wall"))
    right = _pick(rng, [g for g in ("grass", "sand", "water", "road", "wall") if g != left])
    x_mid, slope = c.w * rng.uniform(0.3, 0.7), rng.uniform(-0.3, 0.3)
    boundary = (x_mid + slope * (c.ys[:, 0] - c.h / 2) + _wave(rng, c.h, 0.05 * c.w))[:, None]
    c.fill(right)
    c.fill(left, c.xs < boundary)
    if rng.random() < 0.5:
        c.fill("sky", c.ys < _horizon(c, rng, 0.15, 0.4, 0.04))
    if "road" in c.classes:
        norm = float(np.hypot(slope, 1.0))
        c.road = RoadLine(x_mid + (-1 if left == "road" else 1) * c.w * 0.15, c.h / 2,
                          slope / norm, 1.0 / norm)


TEMPLATES: dict[str, Callable[[_Canvas, np.random.Generator], None]] = {
    "sky_ground": sky_ground, "pond": pond, "road_strip": road_strip, "wall": wall,
    "beach": beach, "vertical_split": vertical_split,
}


def make_layout(rng: np.random.Generator, w: int, h: int) -> StuffLayout:
    """A random stuff layout of a `w` x `h` image: 2..4 classes, each ≥ MIN_FRACTION of it."""
    names = list(TEMPLATES)
    for _ in range(20):
        name = names[int(rng.integers(len(names)))]
        c = _Canvas(w, h)
        TEMPLATES[name](c, rng)
        counts = np.bincount(c.labels.ravel(), minlength=len(c.classes))
        if 2 <= len(c.classes) <= 4 and counts.min() >= MIN_FRACTION * w * h:
            return c.done(name)
    c = _Canvas(w, h)
    c.fill("grass")
    c.fill("sky", c.ys < h / 2)
    return c.done("fallback")
