"""Evaluation helpers of the face tasks: verification on pairs and confusion-matrix artifacts.

Both modules need only numpy (matplotlib is imported lazily for the PNG): importing them is cheap.
"""

from __future__ import annotations

from mtlkit_face.metrics.confusion import save_confusion, write_confusion_csv
from mtlkit_face.metrics.pair_protocols import PairSettings, verification_metrics
from mtlkit_face.metrics.verification import (
    Pairs,
    PersonDisjointCV,
    ThresholdCV,
    best_threshold,
    cosine_scores,
    kfold_threshold_accuracy,
    make_pairs,
    person_disjoint_threshold_accuracy,
    roc_auc,
    tar_at_far,
)

__all__ = [
    "PairSettings",
    "Pairs",
    "PersonDisjointCV",
    "ThresholdCV",
    "best_threshold",
    "cosine_scores",
    "kfold_threshold_accuracy",
    "make_pairs",
    "person_disjoint_threshold_accuracy",
    "roc_auc",
    "save_confusion",
    "tar_at_far",
    "verification_metrics",
    "write_confusion_csv",
]
