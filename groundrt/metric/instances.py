"""Instance AR of plural phrases: are a plural's instances told apart?

Each ground-truth segment of a plural phrase is matched one-to-one to the phrase's predicted
instance masks by the Hungarian method on IoU; a matched segment scores its IoU, an unmatched
one 0 (and so does every segment of a phrase with no instance). The AR is the official one
(`average_recall`) over all those segment IoUs, pooled over the split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from groundrt.metric.average_recall import average_recall


def iou_matrix(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> np.ndarray:
    """[N] and [M] boolean masks of one size -> [N, M] IoUs."""
    if not len(gt) or not len(pred):
        return np.zeros((len(gt), len(pred)))
    g = np.stack([m.reshape(-1) for m in gt]).astype(np.float32)
    p = np.stack([m.reshape(-1) for m in pred]).astype(np.float32)
    inter = g @ p.T
    union = g.sum(1)[:, None] + p.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def matched_segment_ious(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> np.ndarray:
    """[N] IoU of each ground-truth segment with the instance it is matched to (0: none)."""
    from scipy.optimize import linear_sum_assignment  # scipy comes with the [export] extra

    ious = iou_matrix(gt, pred)
    out = np.zeros(len(gt))
    if ious.size:
        rows, cols = linear_sum_assignment(-ious)
        out[rows] = ious[rows, cols]
    return out


def instance_ar(per_phrase: Sequence[np.ndarray]) -> float | None:
    """AR over the pooled segment IoUs of every plural phrase (None when there is none)."""
    if not per_phrase:
        return None
    return average_recall(np.concatenate(per_phrase))
