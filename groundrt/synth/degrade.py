"""Camera effects on a rendered scene: lighting ramp, blur, sensor noise, JPEG quality."""

from __future__ import annotations

import cv2
import numpy as np


def light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`img` [H, W, 3] float32 times a linear brightness ramp (0.75..1.2) in a random direction."""
    h, w = img.shape[:2]
    a = rng.uniform(0, 2 * np.pi)
    lo, hi = rng.uniform(0.75, 0.95), rng.uniform(1.0, 1.2)
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] * np.float32(np.cos(a))
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None] * np.float32(np.sin(a))
    t = (xs + ys) / np.float32(abs(np.cos(a)) / 2 + abs(np.sin(a)) / 2) * 0.5 + 0.5  # 0..1
    img *= (np.float32(lo) + np.float32(hi - lo) * t)[..., None]
    return img


def camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur (sigma 0..1.2, none in a quarter of images) and Gaussian sensor noise
    (sigma 0..8) on `img` [H, W, 3] float32 RGB; returns [H, W, 3] uint8 BGR."""
    if rng.random() >= 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(0.0, 8.0))
    noise += np.float32(0.5)  # so that the truncation below rounds to nearest
    img += noise
    np.clip(img, 0, 255, out=img)
    return cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2BGR)


def jpeg_quality(rng: np.random.Generator) -> int:
    """JPEG quality the image is to be encoded with, uniform 60..95."""
    return int(rng.integers(60, 96))
