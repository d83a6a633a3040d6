"""The held-out scenes' camera: tone (white balance, exposure, gamma, vignette), optics (defocus,
motion blur or resolution loss), signal-dependent sensor noise with chroma noise, and a JPEG
quality range of its own; other effects than the training camera's (`groundrt.synth.degrade`).
"""

from __future__ import annotations

import cv2
import numpy as np

JPEG_QUALITY = (35, 90)  # inclusive
BLURS = ("none", "defocus", "motion", "resample")
BLUR_P = (0.3, 0.3, 0.2, 0.2)


def tone(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`img` [H, W, 3] float32 RGB after white balance, exposure, a gamma curve and a vignette."""
    h, w = img.shape[:2]
    balance = np.array([1 + rng.uniform(-0.07, 0.07), 1.0, 1 + rng.uniform(-0.07, 0.07)],
                       np.float32)
    img = np.clip(img * balance * np.float32(rng.uniform(0.85, 1.15)), 0, 255)
    img = np.float32(255.0) * (img / np.float32(255.0)) ** np.float32(rng.uniform(0.8, 1.25))
    ys = np.linspace(-1, 1, h, dtype=np.float32)[:, None] + np.float32(rng.uniform(-0.3, 0.3))
    xs = np.linspace(-1, 1, w, dtype=np.float32)[None, :] + np.float32(rng.uniform(-0.3, 0.3))
    vignette = 1.0 - np.float32(rng.uniform(0.0, 0.35)) * np.clip((xs * xs + ys * ys) / 2, 0, 1)
    return img * vignette[..., None]


def optics(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of: no blur, a defocus disc (radius 1..2 px), motion blur (3..7 px, any direction),
    or a resolution loss (down to 50..80% and back)."""
    kind = str(rng.choice(BLURS, p=BLUR_P))
    if kind == "defocus":
        r = int(rng.integers(1, 3))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        return cv2.filter2D(img, -1, disc.astype(np.float32) / disc.sum())
    if kind == "motion":
        n = int(rng.integers(3, 8))
        kernel = np.zeros((n, n), np.float32)
        a = rng.uniform(0, np.pi)
        c = (n - 1) / 2
        dx, dy = c * np.cos(a), c * np.sin(a)
        cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0)
        return cv2.filter2D(img, -1, kernel / kernel.sum())
    if kind == "resample":
        h, w = img.shape[:2]
        f = rng.uniform(0.5, 0.8)
        small = cv2.resize(img, (max(int(w * f), 1), max(int(h * f), 1)),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def sensor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shot noise (sigma grows with the square root of the signal), read noise and low-frequency
    chroma noise on `img` [H, W, 3] float32 RGB; returns [H, W, 3] uint8 BGR."""
    h, w = img.shape[:2]
    img = np.clip(img, 0, 255)
    shot = np.sqrt(img) * np.float32(rng.uniform(0.0, 0.6))
    img = img + shot * rng.standard_normal(img.shape, dtype=np.float32)
    img += np.float32(rng.uniform(0.0, 3.0)) * rng.standard_normal(img.shape, dtype=np.float32)
    chroma = rng.standard_normal((max(h // 8, 1), max(w // 8, 1), 3), dtype=np.float32)
    img += np.float32(rng.uniform(0.0, 4.0)) * cv2.resize(chroma, (w, h),
                                                         interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(np.clip(np.rint(img), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def jpeg_quality(rng: np.random.Generator) -> int:
    return int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
