"""A generic classification task: linear head, cross-entropy, accuracy and macro-F1."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlkit.options import Options
from mtlkit.task import (
    UNIT,
    MetricMeter,
    MetricSpec,
    Task,
    TaskPrediction,
    accuracy_from_logits,
    class_columns,
)


class ClassificationOptions(Options):
    label_smoothing: float = 0.0
    hidden_dim: int = 0
    """Width of an optional hidden layer in the head (0: a single linear layer)."""


class ConfusionMeter(MetricMeter):
    """Accumulates a confusion matrix over labelled samples; reports accuracy and macro-F1."""

    def __init__(self, num_classes: int, missing_label: int) -> None:
        self.num_classes = num_classes
        self.missing_label = missing_label
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, output: Any, target: Tensor, batch: Mapping[str, Any]) -> None:
        mask = target != self.missing_label
        pred = output.detach().argmax(dim=-1)[mask].cpu()
        true = target[mask].cpu()
        idx = true * self.num_classes + pred
        self.matrix += torch.bincount(idx, minlength=self.num_classes**2).view_as(self.matrix)

    def compute(self) -> dict[str, float]:
        m = self.matrix.double()
        total = m.sum()
        tp = m.diag()
        precision = tp / m.sum(0).clamp_min(1)
        recall = tp / m.sum(1).clamp_min(1)
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        present = m.sum(1) > 0
        macro = f1[present].mean() if present.any() else torch.tensor(0.0)
        acc = tp.sum() / total if total > 0 else torch.tensor(0.0)
        return {"accuracy": float(acc), "macro_f1": float(macro), "count": float(total)}


class ClassificationTask(Task):
    """Softmax cross-entropy over ``info["num_classes"]`` classes."""

    Options = ClassificationOptions
    options: ClassificationOptions

    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        self.num_classes = int(info["num_classes"])
        names = info.get("class_names")
        ok = names is not None and len(names) == self.num_classes
        self.class_names = [str(n) for n in (names if ok else range(self.num_classes))]
        hidden = self.options.hidden_dim
        if hidden:
            return nn.Sequential(
                nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, self.num_classes)
            )
        return nn.Linear(feature_dim, self.num_classes)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            output, target, reduction="none", label_smoothing=self.options.label_smoothing
        )

    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec("accuracy", bounds=UNIT), MetricSpec("macro_f1", bounds=UNIT)]

    def new_meter(self) -> ConfusionMeter:
        return ConfusionMeter(self.num_classes, self.missing_label)

    def step_metric(self, output: Tensor, target: Tensor) -> Tensor:
        return accuracy_from_logits(output.detach(), target, self.labelled_mask(target))

    def inference_outputs(self, output: Tensor) -> dict[str, Tensor]:
        return {"logits": output}

    def predict(self, outputs: Mapping[str, Tensor]) -> TaskPrediction:
        """The predicted class name, its probability and every class's probability."""
        return TaskPrediction(columns=class_columns(outputs["logits"], self.class_names))

    def describe_outputs(self, recorded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {
            "logits": {
                "kind": "class logits",
                "class_names": list(self.class_names),
                "probabilities": "softmax over the last axis",
            }
        }
