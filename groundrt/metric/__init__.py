"""The official PNG metric (Average Recall over soft IoUs) and groundrt's prediction files."""

from groundrt.metric.average_recall import (
    THRESHOLDS,
    accuracy_at,
    average_recall,
    reference_average_recall,
    soft_iou,
)
from groundrt.metric.evaluate import EvalReport, GroupScore, evaluate
from groundrt.metric.oracle import write_ground_truth_predictions
from groundrt.metric.predictions import PredictionReader, PredictionWriter

__all__ = [
    "THRESHOLDS", "EvalReport", "GroupScore", "PredictionReader", "PredictionWriter",
    "accuracy_at", "average_recall", "evaluate", "reference_average_recall", "soft_iou",
    "write_ground_truth_predictions",
]
