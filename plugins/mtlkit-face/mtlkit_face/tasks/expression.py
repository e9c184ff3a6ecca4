"""The ``expression`` task: the builtin classification task plus confusion-matrix artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from mtlkit.builtin.classification import ClassificationTask, ConfusionMeter
from mtlkit_face.metrics.confusion import class_labels, save_confusion


class ExpressionMeter(ConfusionMeter):
    """Accuracy and macro-F1 as the builtin meter; also writes the confusion matrix it holds."""

    def __init__(self, num_classes: int, missing_label: int, class_names: list[str]) -> None:
        super().__init__(num_classes, missing_label)
        self.class_names = class_names

    def save_artifacts(self, directory: Any, prefix: str) -> list[str]:
        """``<prefix>confusion.csv`` (class-name header) and ``.png`` (CSV only w/o matplotlib)."""
        total = int(self.matrix.sum())
        acc = float(self.matrix.diag().sum()) / total if total else 0.0
        title = f"{prefix}confusion (n={total}, accuracy {acc:.3f})"
        return save_confusion(self.matrix, self.class_names, Path(directory), prefix, title)


class ExpressionTask(ClassificationTask):
    """Cross-entropy over the dataset's expression classes (options as ``classification``)."""

    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        head = super().build_head(feature_dim, info)
        self.class_names = class_labels(self.num_classes, info.get("class_names"))
        return head

    def new_meter(self) -> ExpressionMeter:
        return ExpressionMeter(self.num_classes, self.missing_label, self.class_names)
