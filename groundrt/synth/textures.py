"""Stuff textures: sky, grass, water, sand, road and wall as [h, w, 3] float32 RGB images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class RoadLine:
    """A road's centre line in image pixels: through (x, y) along unit (ux, uy), bending by
    `curve` px per px² of distance along it (the same bend its layout used)."""

    x: float
    y: float
    ux: float
    uy: float
    curve: float = 0.0

    def frame(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(along, across) coordinates of pixels xs [1, w], ys [h, 1]: both [h, w] float32."""
        dx, dy = xs - np.float32(self.x), ys - np.float32(self.y)
        along = dx * np.float32(self.ux) + dy * np.float32(self.uy)
        across = dy * np.float32(self.ux) - dx * np.float32(self.uy)
        return along, across + np.float32(self.curve) * along * along


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell_y: float,
                 cell_x: float | None = None) -> np.ndarray:
    """Low-frequency noise [h, w] float32 of about unit variance: a coarse Gaussian grid with
    cells of cell_y x cell_x px, upsampled with cv2.resize (bicubic)."""
    cell_x = cell_y if cell_x is None else cell_x
    gy, gx = int(h / max(cell_y, 1.0)) + 2, int(w / max(cell_x, 1.0)) + 2
    grid = rng.standard_normal((gy, gx), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _color(rng: np.random.Generator, rgb: tuple[float, float, float], jitter: float) -> np.ndarray:
    return np.asarray(rgb, np.float32) + rng.uniform(-jitter, jitter, 3).astype(np.float32)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """a + (b - a) * t for colours a, b [3] and weights t [h, w] → [h, w, 3]."""
    return a + (b - a) * t[..., None]


def _grid(h: int, w: int, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    xs = np.arange(w, dtype=np.float32)[None, :] + np.float32(offset[0])
    ys = np.arange(h, dtype=np.float32)[:, None] + np.float32(offset[1])
    return xs, ys


def sky(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
        road: RoadLine | None) -> np.ndarray:
    """Vertical gradient from a deep zenith to a pale horizon, with soft clouds."""
    zenith = _color(rng, (60, 120, 205), 25)
    horizon = _color(rng, (175, 205, 235), 15)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None] ** np.float32(rng.uniform(0.6, 1.4))
    img = _mix(zenith, horizon, np.broadcast_to(t, (h, w)))
    clouds = 0.7 * smooth_noise(rng, h, w, rng.uniform(30, 70), rng.uniform(60, 140))
    clouds += 0.3 * smooth_noise(rng, h, w, 10, 25)
    cover = rng.uniform(-0.3, 0.9)
    alpha = np.clip((clouds - (1.0 - cover)) * rng.uniform(0.8, 2.0), 0.0, 0.85)
    cloud_rgb = _color(rng, (238, 240, 245), 8)
    return img + (cloud_rgb - img) * alpha[..., None]


def grass(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
          road: RoadLine | None) -> np.ndarray:
    """Green noise with patches of lighter and darker green, and slanted blade streaks."""
    dark = _color(rng, (45, 110, 35), 15)
    light = _color(rng, (120, 165, 60), 15)
    patches = np.clip(0.5 + 0.35 * smooth_noise(rng, h, w, rng.uniform(25, 60)), 0.0, 1.0)
    img = _mix(dark, light, patches)
    length = int(rng.integers(5, 10))
    kernel = np.zeros((length, length), np.float32)
    lean = int(round(rng.uniform(-0.35, 0.35) * (length - 1)))
    cv2.line(kernel, ((length - 1) // 2 - lean, 0), ((length - 1) // 2 + lean, length - 1), 1.0)
    kernel /= kernel.sum()
    blades = cv2.filter2D(rng.standard_normal((h, w), dtype=np.float32), -1, kernel,
                          borderType=cv2.BORDER_REFLECT)
    tone = 1.0 + 0.28 * np.sqrt(length) * blades * np.float32(rng.uniform(0.7, 1.2))
    return img * tone[..., None]


def water(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
          road: RoadLine | None) -> np.ndarray:
    """Blue to teal water with wavy ripples and bright glints on their crests."""
    deep = _color(rng, (25, 75, 140), 20)
    light = _color(rng, (75, 140, 190), 20)
    xs, ys = _grid(h, w, offset)
    period = rng.uniform(5.0, 13.0)
    warp = smooth_noise(rng, h, w, rng.uniform(15, 35), rng.uniform(30, 70)) * rng.uniform(2, 6)
    slope = rng.uniform(-0.15, 0.15)
    ripple = np.sin((ys + slope * xs + warp) * np.float32(2 * np.pi / period))
    depth = np.clip(0.5 + 0.3 * smooth_noise(rng, h, w, rng.uniform(40, 90)), 0.0, 1.0)
    img = _mix(deep, light, np.clip(depth + 0.15 * ripple, 0.0, 1.0))
    glint = np.clip((ripple - 0.75) * 4.0, 0.0, 1.0) * rng.uniform(0.2, 0.5)
    return img + (np.float32(235.0) - img) * glint[..., None]


def sand(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
         road: RoadLine | None) -> np.ndarray:
    """Beige sand: gentle dunes, fine speckle and scattered darker and lighter grains."""
    base = _color(rng, (212, 188, 140), 14)
    tone = 1.0 + 0.06 * smooth_noise(rng, h, w, rng.uniform(30, 80))
    tone += 0.05 * rng.standard_normal((h, w), dtype=np.float32)
    grains = rng.random((h, w), dtype=np.float32)
    tone -= 0.18 * (grains < 0.03)
    tone += 0.10 * (grains > 0.98)
    return base * tone[..., None]


def road(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
         line: RoadLine | None) -> np.ndarray:
    """Dark grey asphalt noise with light grains; lane dashes along the centre line if known."""
    base = np.float32(rng.uniform(55, 95)) + rng.uniform(-4, 4, 3).astype(np.float32)
    tone = 1.0 + 0.06 * smooth_noise(rng, h, w, rng.uniform(20, 50))
    tone += 0.10 * rng.standard_normal((h, w), dtype=np.float32)
    tone += 0.35 * (rng.random((h, w), dtype=np.float32) > 0.99)
    img = base * tone[..., None]
    if line is not None and rng.random() < 0.75:
        xs, ys = _grid(h, w, offset)
        along, across = line.frame(xs, ys)
        period = rng.uniform(18, 40)
        half_width = rng.uniform(1.0, 2.5)
        on = (np.abs(across) < half_width) & ((along % period) < period * rng.uniform(0.4, 0.6))
        paint = _color(rng, (230, 230, 220), 10) if rng.random() < 0.7 else _color(
            rng, (230, 190, 50), 10)
        img[on] = paint * (1.0 + 0.05 * rng.standard_normal((int(on.sum()), 1), dtype=np.float32))
    return img


_BRICKS = ((165, 75, 55), (140, 95, 70), (150, 148, 140), (200, 170, 120), (120, 60, 45))


def wall(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
         road: RoadLine | None) -> np.ndarray:
    """Bricks in running bond, each a slightly different shade, with mortar joints."""
    brick_h = rng.uniform(8.0, 18.0)
    brick_w = brick_h * rng.uniform(1.8, 2.8)
    joint = max(1.0, round(brick_h * rng.uniform(0.1, 0.18)))
    xs, ys = _grid(h, w, offset)
    row = np.floor(ys / np.float32(brick_h))
    xo = xs + (row % 2) * np.float32(brick_w / 2)
    col = np.floor(xo / np.float32(brick_w))
    mortar = ((ys - row * np.float32(brick_h)) < joint) | ((xo - col * np.float32(brick_w)) < joint)
    rows = row.astype(np.intp) - int(row[0, 0])
    cols = col.astype(np.intp) - int(col.min())
    shade = rng.normal(0.0, 0.09, (int(rows.max()) + 1, int(cols.max()) + 1)).astype(np.float32)
    fine = 0.06 * rng.standard_normal((h, w), dtype=np.float32)
    brick = _color(rng, _BRICKS[int(rng.integers(len(_BRICKS)))], 12)
    mortar_rgb = _color(rng, (185, 180, 170), 15)
    tone = 1.0 + np.broadcast_to(shade[rows, cols], (h, w)) + fine
    img = brick * tone[..., None]
    img[mortar] = mortar_rgb * (1.0 + fine[mortar])[:, None]
    return img


TextureFn = Callable[[np.random.Generator, int, int, tuple[int, int], RoadLine | None], np.ndarray]
TEXTURES: dict[str, TextureFn] = {
    "sky": sky, "grass": grass, "water": water, "sand": sand, "road": road, "wall": wall,
}


def stuff_texture(name: str, rng: np.random.Generator, h: int, w: int,
                  offset: tuple[int, int] = (0, 0), line: RoadLine | None = None,
                  textures: dict[str, TextureFn] = TEXTURES) -> np.ndarray:
    """Texture [h, w, 3] float32 RGB (0..255, unclipped) of stuff class `name` for the image box
    whose top-left pixel is `offset` (x, y), from `textures` (default: the training scenes')."""
    try:
        fn = textures[name]
    except KeyError:
        raise KeyError(f"no texture for stuff {name!r}; "
                       f"expected one of {sorted(textures)}") from None
    return fn(rng, h, w, offset, line).astype(np.float32, copy=False)
