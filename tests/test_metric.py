"""The official metric on hand-computed cases, and `evaluate` end to end on a fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundrt.data import PNGDataset
from groundrt.errors import PredictionFormatError
from groundrt.metric import (
    PredictionReader,
    PredictionWriter,
    accuracy_at,
    average_recall,
    evaluate,
    reference_average_recall,
    soft_iou,
    write_ground_truth_predictions,
)


def test_soft_iou_hand_computed():
    target = np.array([[1, 0], [1, 0]], dtype=bool)
    assert soft_iou(target, target) == 1.0
    assert soft_iou(np.zeros((2, 2)), target) == 0.0
    # p*t = 0.5 + 0.25 = 0.75; p + t - p*t = (0.5+1+0.25) + 2 - 0.75 = 3.0
    soft = np.array([[0.5, 1.0], [0.25, 0.0]])
    assert soft_iou(soft, target) == pytest.approx(0.25, abs=1e-15)
    assert soft_iou(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 0.0  # NaN officially
    with pytest.raises(ValueError):
        soft_iou(np.zeros((2, 3)), target)


def test_average_recall_hand_computed():
    assert average_recall([1.0, 1.0]) == pytest.approx(0.99999, abs=1e-12)
    assert average_recall([0.0]) == pytest.approx(1e-5, abs=1e-12)  # recall(0) = 1
    # half the phrases perfect, half 0.5: about (1 + 0.5) / 2
    assert average_recall([1.0, 0.5]) == pytest.approx(0.75, abs=2e-5)
    assert np.isnan(average_recall([]))


@settings(max_examples=8, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_average_recall_matches_the_official_loop(ious):
    assert average_recall(ious) == pytest.approx(reference_average_recall(ious), abs=1e-9)


def test_average_recall_matches_on_threshold_values():
    # IoUs exactly on thresholds are where >= vs > and float rounding of arange would differ
    ious = np.arange(0, 1, 0.00001)[[0, 1, 12345, 50000, 99999]]
    assert average_recall(ious) == pytest.approx(reference_average_recall(ious), abs=1e-9)


def test_accuracy_is_strictly_above():
    assert accuracy_at([0.5, 0.51, 0.2, 1.0]) == 0.5


def test_ground_truth_scores_one_and_nothing_scores_zero(tmp_path, release):
    ds = PNGDataset(release, "val")
    report = evaluate(ds, PredictionReader(write_ground_truth_predictions(ds, tmp_path / "gt")))
    for name in ("overall", "things", "stuff", "singulars", "plurals"):
        assert report.group(name).ar == pytest.approx(1.0, abs=1e-5)
    assert report.group("overall").phrases == 4
    assert (report.group("things").phrases, report.group("stuff").phrases) == (1, 3)
    assert (report.group("singulars").phrases, report.group("plurals").phrases) == (2, 2)
    assert report.missing_predictions == 0 and sum(report.excluded.values()) == 3

    soft = evaluate(ds, PredictionReader(
        write_ground_truth_predictions(ds, tmp_path / "soft", soft=True)))
    assert soft.group("overall").ar == pytest.approx(1.0, abs=1e-5)

    empty = PredictionWriter(tmp_path / "empty.json").close()
    report = evaluate(ds, PredictionReader(empty))
    assert report.group("overall").ar == pytest.approx(0.0, abs=1e-5)
    assert report.group("overall").acc50 == 0.0
    assert report.missing_predictions == 4


def test_partial_prediction_gives_the_hand_computed_iou(tmp_path, release):
    ds = PNGDataset(release, "val")
    panoptic = ds.read_panoptic(139)
    writer = PredictionWriter(tmp_path / "p.json")
    circles = ds.phrases[0]
    half = ds.gt_mask(panoptic, circles).copy()
    half[:, 4:] = False  # only the left circle: IoU 4 / 8
    writer.add_mask(circles.key, half)
    soft = np.where(ds.gt_mask(panoptic, ds.phrases[1]), 0.5, 0.0)  # IoU 0.5 * 32 / 32
    writer.add_soft(ds.phrases[1].key, soft)
    report = evaluate(ds, PredictionReader(writer.close()))
    ious = sorted([0.5, 0.5, 0.0, 0.0])
    assert report.group("overall").ar == pytest.approx(reference_average_recall(ious), abs=1e-4)
    assert report.group("things").ar == pytest.approx(0.5, abs=2e-5)
    assert report.group("plurals").acc50 == 0.0  # 0.5 is not above 0.5


def test_prediction_file_errors_name_the_problem(tmp_path, release):
    ds = PNGDataset(release, "val")
    with pytest.raises(PredictionFormatError, match="missing"):
        PredictionReader(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"predictions": []}))
    with pytest.raises(PredictionFormatError, match="not a groundrt prediction file"):
        PredictionReader(bad)
    writer = PredictionWriter(tmp_path / "small.json")
    writer.add_mask(ds.phrases[0].key, np.ones((3, 3), bool))
    with pytest.raises(PredictionFormatError, match="original image size"):
        evaluate(ds, PredictionReader(writer.close()))
    twice = PredictionWriter(tmp_path / "twice.json")
    twice.add_mask(ds.phrases[0].key, np.ones((6, 8), bool))
    twice.add_mask(ds.phrases[0].key, np.ones((6, 8), bool))
    with pytest.raises(PredictionFormatError, match="two predictions"):
        PredictionReader(twice.close())
