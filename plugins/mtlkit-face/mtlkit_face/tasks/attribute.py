"""The ``binary_attribute`` task: one yes/no face attribute (CelebA-style), a 2-way softmax head.

A config lists one task per attribute: ``{name: binary_attribute, id: smiling, target:
attr_smiling}``; missing labels (MISSING_LABEL) give no loss, as for every mtlkit task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mtlkit.builtin.classification import ClassificationOptions, ClassificationTask
from mtlkit.errors import ConfigError
from mtlkit.task import UNIT, MetricMeter, MetricSpec


class BinaryAttributeMeter(MetricMeter):
    """Counts of the 2x2 confusion over labelled samples."""

    def __init__(self, missing_label: int) -> None:
        self.missing_label = missing_label
        self.counts = torch.zeros(2, 2, dtype=torch.long)  # [true, predicted]

    def update(self, output: Any, target: Tensor, batch: Mapping[str, Any]) -> None:
        mask = target != self.missing_label
        pred = output.detach().argmax(dim=-1)[mask].cpu()
        true = target[mask].cpu()
        self.counts += torch.bincount(true * 2 + pred, minlength=4).view(2, 2)

    def compute(self) -> dict[str, float]:
        c = self.counts.double()
        total = float(c.sum())
        tn, fp, fn, tp = (float(c[0, 0]), float(c[0, 1]), float(c[1, 0]), float(c[1, 1]))
        recalls = [r for r, n in ((tn / (tn + fp) if tn + fp else 0.0, tn + fp),
                                  (tp / (tp + fn) if tp + fn else 0.0, tp + fn)) if n]
        return {
            "accuracy": (tn + tp) / total if total else 0.0,
            "balanced_accuracy": sum(recalls) / len(recalls) if recalls else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "positive_rate": (tp + fn) / total if total else 0.0,
            "count": total,
        }


class BinaryAttributeTask(ClassificationTask):
    """Two-class cross-entropy (options as ``classification``: ``label_smoothing``,
    ``hidden_dim``); metrics accuracy, balanced accuracy and positive-class F1."""

    Options = ClassificationOptions
    options: ClassificationOptions

    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        k = int(info.get("num_classes", 2))
        if k != 2:
            raise ConfigError(
                f"task {self.name!r} (binary_attribute) needs a binary target, but the data"
                f" reports num_classes={k}"
            )
        return super().build_head(feature_dim, {**info, "num_classes": 2})

    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec(m, bounds=UNIT) for m in ("accuracy", "balanced_accuracy", "f1")]

    def new_meter(self) -> BinaryAttributeMeter:
        return BinaryAttributeMeter(self.missing_label)
