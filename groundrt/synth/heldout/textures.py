"""The held-out scenes' stuff textures, made with other noise than the training textures'
(`groundrt.synth.textures`): fractal value noise (octaves of bilinear grids) and cellular
(Worley) noise, other patterns (streaky cirrus, mowing stripes, caustics, wind ripples, cracks,
solid road lines, stone and block walls) and their own colour ranges around each class.

Same signature as the training textures: (rng, h, w, offset, road line) -> [h, w, 3] float32 RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

from groundrt.synth.textures import RoadLine, TextureFn


def fractal_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 4,
                  gain: float = 0.5, stretch: float = 1.0) -> np.ndarray:
    """Value noise [h, w] float32 of zero mean and unit variance: `octaves` uniform grids, cells
    of cell x cell·stretch px halving per octave, upsampled bilinearly and summed with weights
    gain**octave."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for o in range(octaves):
        cy = max(cell / 2 ** o, 1.0)
        cx = max(cy * stretch, 1.0)
        grid = rng.random((int(h / cy) + 2, int(w / cx) + 2), dtype=np.float32)
        out += np.float32(amp) * cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
        amp *= gain
    out -= out.mean()
    return out / np.float32(out.std() + 1e-6)


def cellular(rng: np.random.Generator, h: int, w: int, cell: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Worley noise of one jittered point per cell x cell px: per pixel the distances [h, w]
    float32 to the nearest and second nearest point, and the nearest point's index [h, w].
    Point (i, j) lies in cell (i - 1, j - 1), so a pixel's 3 x 3 neighbour cells are i = its
    cell + 0..2."""
    gy, gx = int(h / cell) + 3, int(w / cell) + 3
    pts = (np.stack(np.meshgrid(np.arange(gy), np.arange(gx), indexing="ij"), -1)
           + rng.random((gy, gx, 2)) - 1.0).astype(np.float32) * np.float32(cell)  # (y, x)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    ci, cj = (ys / cell).astype(np.intp), (xs / cell).astype(np.intp)
    f1 = np.full((h, w), np.inf, np.float32)
    f2 = np.full((h, w), np.inf, np.float32)
    idx = np.zeros((h, w), np.intp)
    for di in (0, 1, 2):
        for dj in (0, 1, 2):
            i, j = ci + di, cj + dj
            p = pts[np.broadcast_to(i, (h, w)), np.broadcast_to(j, (h, w))]
            d = np.hypot(p[..., 0] - ys, p[..., 1] - xs)
            k = i * gx + j
            nearer = d < f1
            f2 = np.where(nearer, f1, np.minimum(f2, d))
            idx = np.where(nearer, k, idx)
            f1 = np.where(nearer, d, f1)
    return f1, f2, idx


def _color(rng: np.random.Generator, lo: tuple[int, int, int], hi: tuple[int, int, int]
           ) -> np.ndarray:
    """A colour on the segment from `lo` to `hi` (one draw for all channels, so the hue stays
    the class's), jittered by up to 4 per channel."""
    t = np.float32(rng.random())
    lo_, hi_ = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    return lo_ + (hi_ - lo_) * t + rng.uniform(-4, 4, 3).astype(np.float32)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


def _coords(h: int, w: int, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(w, dtype=np.float32)[None, :] + np.float32(offset[0]),
            np.arange(h, dtype=np.float32)[:, None] + np.float32(offset[1]))


def sky(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
        road: RoadLine | None) -> np.ndarray:
    """A hazy gradient, a sun glow and streaky cirrus clouds."""
    top = _color(rng, (70, 125, 190), (120, 170, 235))
    haze = _color(rng, (190, 205, 215), (225, 232, 245))
    xs, ys = _coords(h, w, offset)
    t = np.clip((ys - offset[1]) / max(h, 1), 0, 1) ** np.float32(rng.uniform(1.2, 2.5))
    img = _mix(top, haze, np.broadcast_to(t, (h, w)))
    sx, sy = rng.uniform(offset[0], offset[0] + w), rng.uniform(offset[1], offset[1] + h)
    glow = np.exp(-((xs - sx) ** 2 + (ys - sy) ** 2) / np.float32(2 * (0.3 * max(h, w)) ** 2))
    img += (np.float32(250.0) - img) * (rng.uniform(0.0, 0.35) * glow)[..., None]
    streaks = fractal_noise(rng, h, w, rng.uniform(8, 20), 3, 0.6, stretch=rng.uniform(4, 9))
    alpha = np.clip((streaks - rng.uniform(0.3, 1.4)) * 0.6, 0.0, 0.7)
    return img + (np.float32(245.0) - img) * alpha[..., None]


def grass(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
          road: RoadLine | None) -> np.ndarray:
    """Fractal patches between olive and bright green, clover specks, maybe mowing stripes."""
    dark = _color(rng, (40, 95, 25), (70, 125, 45))
    light = _color(rng, (95, 150, 45), (140, 185, 80))
    t = np.clip(0.5 + 0.22 * fractal_noise(rng, h, w, rng.uniform(20, 50), 5, 0.55), 0, 1)
    img = _mix(dark, light, t)
    if rng.random() < 0.5:
        xs, ys = _coords(h, w, offset)
        a = rng.uniform(0, np.pi)
        band = np.floor((xs * np.cos(a) + ys * np.sin(a)) / rng.uniform(25, 60)) % 2
        img *= (1.0 + rng.uniform(0.04, 0.1) * (band - 0.5))[..., None]
    specks = cv2.GaussianBlur((rng.random((h, w), dtype=np.float32) < 0.02).astype(np.float32),
                              (0, 0), 0.8)
    img *= (1.0 - 0.9 * specks * rng.uniform(-0.6, 0.6))[..., None]
    return img * (1.0 + 0.06 * fractal_noise(rng, h, w, 2.0, 2))[..., None]


def water(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
          road: RoadLine | None) -> np.ndarray:
    """Deep blue to teal, with cellular caustics or horizontal reflection streaks."""
    deep = _color(rng, (15, 55, 105), (40, 90, 150))
    shallow = _color(rng, (50, 120, 150), (90, 165, 200))
    t = np.clip(0.5 + 0.25 * fractal_noise(rng, h, w, rng.uniform(30, 80), 3), 0, 1)
    img = _mix(deep, shallow, t)
    if rng.random() < 0.5:
        f1, f2, _ = cellular(rng, h, w, rng.uniform(10, 24))
        lines = np.clip(1.0 - (f2 - f1) / rng.uniform(1.0, 2.5), 0, 1)
        light = lines * np.clip(0.5 + 0.5 * fractal_noise(rng, h, w, 30, 2), 0, 1) * 0.4
    else:
        light = np.clip(fractal_noise(rng, h, w, rng.uniform(2, 5), 2, stretch=10.0) - 1.0,
                        0, 1) * rng.uniform(0.3, 0.6)
    return img + (np.float32(225.0) - img) * light[..., None]


def sand(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
         road: RoadLine | None) -> np.ndarray:
    """Beige to golden sand with wind ripples and coloured grains."""
    base = _color(rng, (195, 170, 120), (230, 205, 160))
    xs, ys = _coords(h, w, offset)
    a = rng.uniform(-0.5, 0.5) + np.pi / 2
    warp = 4.0 * fractal_noise(rng, h, w, rng.uniform(20, 40), 2)
    phase = (xs * np.cos(a) + ys * np.sin(a) + warp) * np.float32(2 * np.pi / rng.uniform(6, 14))
    ripple = np.sin(phase + 0.5 * np.sin(phase))  # asymmetric crests
    tone = 1.0 + rng.uniform(0.02, 0.06) * ripple + 0.05 * fractal_noise(rng, h, w, 40, 3)
    grains = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(0.035)
    return base * (tone[..., None] + grains)


def road(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
         line: RoadLine | None) -> np.ndarray:
    """Grey asphalt with tar patches, cracks and, along a known centre line, solid lines."""
    grey = np.float32(rng.uniform(60, 105))
    tint = rng.uniform(-5, 5, 3).astype(np.float32)
    tone = 1.0 - 0.08 * np.clip(fractal_noise(rng, h, w, rng.uniform(15, 40), 4), 0, None)
    tone += 0.07 * rng.standard_normal((h, w), dtype=np.float32)
    if rng.random() < 0.5:
        f1, f2, _ = cellular(rng, h, w, rng.uniform(25, 60))
        tone -= 0.3 * (f2 - f1 < 1.0)
    img = (grey + tint) * tone[..., None]
    if line is not None and rng.random() < 0.8:
        xs, ys = _coords(h, w, offset)
        _, across = line.frame(xs, ys)
        gap, width = rng.uniform(2.0, 4.0), rng.uniform(0.8, 1.8)
        on = np.abs(np.abs(across) - gap) < width  # a double line either side of the centre
        paint = _color(rng, (200, 170, 30), (240, 210, 70)) if rng.random() < 0.5 else _color(
            rng, (215, 215, 205), (245, 245, 240))
        img[on] = paint
    return img


def wall(rng: np.random.Generator, h: int, w: int, offset: tuple[int, int],
         road: RoadLine | None) -> np.ndarray:
    """Irregular stones (cellular) or stacked concrete blocks, with mortar joints."""
    mortar_rgb = _color(rng, (150, 145, 135), (200, 195, 185))
    fine = 0.05 * rng.standard_normal((h, w), dtype=np.float32)
    if rng.random() < 0.5:
        f1, f2, idx = cellular(rng, h, w, rng.uniform(12, 26))
        mortar = (f2 - f1) < rng.uniform(1.5, 3.0)
        shade_of = rng.normal(0.0, 0.12, int(idx.max()) + 1).astype(np.float32)
        shade = shade_of[idx]
        stone = _color(rng, (120, 110, 95), (175, 160, 140))
    else:
        xs, ys = _coords(h, w, offset)
        bh = rng.uniform(14, 26)
        bw = bh * rng.uniform(1.6, 2.2)
        joint = rng.uniform(1.0, 2.5)
        row, col = np.floor(ys / bh), np.floor(xs / bw)
        mortar = ((ys - row * bh) < joint) | ((xs - col * bw) < joint)
        key = (row.astype(np.int64) * 7919 + col.astype(np.int64) * 104729) % 997
        shade = rng.normal(0.0, 0.07, 997).astype(np.float32)[key]
        stone = _color(rng, (135, 135, 130), (185, 185, 178))
    img = stone * (1.0 + shade + fine)[..., None]
    img[mortar] = mortar_rgb * (1.0 + fine[mortar])[:, None]
    return img


TEXTURES: dict[str, TextureFn] = {
    "sky": sky, "grass": grass, "water": water, "sand": sand, "road": road, "wall": wall,
}
