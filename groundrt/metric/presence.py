"""Is the phrase in the image at all? GRES's (ReLA, CVPR 2023) two accuracies:

* no-target accuracy (N-acc): the share of absent phrases answered "not found";
* target accuracy (T-acc): the share of grounded phrases answered "found".

groundrt scores N-acc on each image's absent phrases (`groundrt.data.absent`) given with the
image's grounded phrases as one explicit phrase list, and T-acc on the grounded phrases of the
narratives' own captions.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def presence_accuracy(found: Iterable[bool], present: Iterable[bool]) -> dict[str, float | None]:
    """found / present per phrase -> {"no_target_acc", "target_acc", "absent", "present"}
    (an accuracy is None where its group is empty)."""
    found_arr = np.fromiter(found, dtype=bool)
    present_arr = np.fromiter(present, dtype=bool)
    if found_arr.shape != present_arr.shape:
        raise ValueError(f"{found_arr.size} answers for {present_arr.size} phrases")
    absent = ~present_arr
    return {
        "no_target_acc": float((~found_arr[absent]).mean()) if absent.any() else None,
        "target_acc": float(found_arr[present_arr].mean()) if present_arr.any() else None,
        "absent": int(absent.sum()), "present": int(present_arr.sum()),
    }


CURVE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# where a package's threshold is chosen from: steps of 0.01 (a fitted probability of presence
# may separate the phrases anywhere)
CALIBRATION_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 100))


def presence_curve(presence: Iterable[float], present: Iterable[bool],
                   thresholds: Iterable[float] = CURVE_THRESHOLDS
                   ) -> list[dict[str, float | None]]:
    """The two accuracies at each threshold of the presence probability (found = presence >
    threshold), from one pass: how well the score separates present from absent phrases,
    whatever threshold a package ships with."""
    scores = np.fromiter(presence, dtype=np.float64)
    truth = list(present)
    return [{"threshold": float(t), **presence_accuracy(scores > t, truth)} for t in thresholds]


def choose_threshold(curve: list[dict[str, float | None]], min_target_acc: float = 0.98
                     ) -> dict[str, float | None] | None:
    """The point of `curve` with the best no-target accuracy among those that keep target
    accuracy >= `min_target_acc` (GRES's two accuracies: find absent phrases "not found" as
    often as possible without losing present ones); the lowest threshold on ties; None when no
    point keeps the target accuracy or the curve has no absent phrases."""
    kept = [p for p in curve if p["target_acc"] is not None and p["no_target_acc"] is not None
            and p["target_acc"] >= min_target_acc]
    if not kept:
        return None
    best = max(p["no_target_acc"] for p in kept)
    return min((p for p in kept if p["no_target_acc"] == best), key=lambda p: p["threshold"])
