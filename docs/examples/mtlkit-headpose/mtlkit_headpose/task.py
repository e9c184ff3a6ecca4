"""The ``head_roll`` task: regress one angle per image, in degrees, with missing labels as NaN."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mtlkit.options import Options
from mtlkit.task import MetricMeter, MetricSpec, Task


class HeadRollOptions(Options):
    """Options of the ``head_roll`` task (each docstring below ends up in the config reference)."""

    hidden_dim: int = Field(64, ge=0)
    """Width of the head's hidden layer (0: a single linear layer)."""
    loss: Literal["smooth_l1", "mse"] = "smooth_l1"
    """Per-sample loss between the output and ``angle / scale``: Huber (beta 1) or squared error."""
    scale: float = Field(30.0, gt=0.0)
    """Degrees per unit of the head's output, so the loss stays near 1 whatever the angle range."""
    tolerance: float = Field(5.0, gt=0.0)
    """Degrees within which a prediction counts as a hit (metric ``within_tol``, step metric)."""


class AngleMeter(MetricMeter):
    """Absolute errors in degrees over the labelled samples of one evaluation pass."""

    def __init__(self, scale: float, tolerance: float) -> None:
        self.scale = scale
        self.tolerance = tolerance
        self.errors: list[Tensor] = []

    def update(self, output: Any, target: Tensor, batch: Mapping[str, Any]) -> None:
        labelled = ~torch.isnan(target)
        predicted = output.detach().float().cpu()[labelled.cpu()] * self.scale
        self.errors.append((predicted - target[labelled].float().cpu()).abs())

    def compute(self) -> dict[str, float]:
        err = torch.cat(self.errors) if self.errors else torch.zeros(0)
        if err.numel() == 0:
            return {"count": 0.0}
        return {
            "mae": float(err.mean()),
            "rmse": math.sqrt(float((err**2).mean())),
            "within_tol": float((err <= self.tolerance).float().mean()),
            "count": float(err.numel()),
        }


class HeadRollTask(Task):
    """A scalar regression head on the shared features; targets are angles in degrees.

    The head outputs ``[B]`` (the angle divided by ``scale``). Missing labels are NaN: the base
    class masks them, so a batch without any angle gives exactly zero loss and gradient.
    """

    Options = HeadRollOptions
    options: HeadRollOptions

    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        hidden = self.options.hidden_dim
        layers: list[nn.Module] = (
            [nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)]
            if hidden
            else [nn.Linear(feature_dim, 1)]
        )
        return nn.Sequential(*layers, nn.Flatten(start_dim=0))

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        scaled = target.to(output.dtype) / self.options.scale
        if self.options.loss == "mse":
            return F.mse_loss(output, scaled, reduction="none")
        return F.smooth_l1_loss(output, scaled, reduction="none", beta=1.0)

    def metrics(self) -> list[MetricSpec]:
        return [
            MetricSpec("mae", higher_is_better=False),
            MetricSpec("rmse", higher_is_better=False),
            MetricSpec("within_tol", bounds=(0.0, 1.0)),
        ]

    def new_meter(self) -> AngleMeter:
        return AngleMeter(self.options.scale, self.options.tolerance)

    def step_metric(self, output: Tensor, target: Tensor) -> Tensor:
        """Share of labelled samples within ``tolerance`` degrees (for DTP-style weighters)."""
        mask = self.labelled_mask(target)
        err = (output.detach().float() * self.options.scale - torch.nan_to_num(target)).abs()
        hits = ((err <= self.options.tolerance) & mask).sum().float()
        return hits / mask.sum().clamp_min(1).float()
