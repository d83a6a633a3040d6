"""Soft IoU and Average Recall exactly as the official PNG evaluation computes them."""

from __future__ import annotations

import numpy as np

# The official thresholds: 100,000 values 0, 1e-5, ..., 0.99999.
THRESHOLDS = np.arange(0, 1, 0.00001)


def soft_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """IoU = sum(p t) / sum(p + t - p t) of a [H, W] map in [0, 1] and a [H, W] target.

    Both at the image's original size. A phrase whose prediction and target are both empty has
    union 0; the official code then gets NaN, which passes no threshold: we return 0.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction is {pred.shape}, target is {target.shape}")
    p = pred.astype(np.float64, copy=False)
    t = target.astype(np.float64, copy=False)
    intersection = float(np.sum(p * t))
    union = float(np.sum(p)) + float(np.sum(t)) - intersection
    return intersection / union if union > 0 else 0.0


def recall_curve(ious: np.ndarray) -> np.ndarray:
    """recall(t) = fraction of IoUs >= t, for every official threshold t."""
    ious = np.sort(np.asarray(ious, dtype=np.float64))
    below = np.searchsorted(ious, THRESHOLDS, side="left")  # count of IoUs < t
    return (len(ious) - below) / len(ious)


def average_recall(ious) -> float:
    """AR = sum_i (t_{i+1} - t_i) recall(t_i): the official left Riemann sum, vectorised."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        return float("nan")
    steps = np.abs(np.diff(THRESHOLDS))
    return float(np.sum(steps * recall_curve(ious)[:-1]))


def reference_average_recall(ious) -> float:
    """The official loop, kept as the reference `average_recall` is tested against (slow)."""
    ious = np.asarray(ious, dtype=np.float64)
    accuracy = [np.sum((ious >= t).astype(int)) / len(ious) for t in THRESHOLDS]
    total = 0.0
    for i, (t0, t1) in enumerate(zip(THRESHOLDS[:-1], THRESHOLDS[1:], strict=True)):
        total += abs(t1 - t0) * accuracy[i]
    return float(total)


def accuracy_at(ious, threshold: float = 0.5) -> float:
    """Fraction of phrases with IoU strictly above `threshold` (acc@0.5)."""
    ious = np.asarray(ious, dtype=np.float64)
    return float(np.mean(ious > threshold)) if ious.size else float("nan")
