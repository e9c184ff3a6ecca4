"""The Task interface: a head, a loss that tolerates missing labels, and evaluation metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mtlkit.errors import CapabilityError
from mtlkit.options import Options

MISSING_LABEL = -1
"""Integer target marking a sample that carries no label for a task."""


@dataclass(frozen=True)
class MetricSpec:
    """A metric a task reports; ``higher_is_better`` drives model selection and Delta_m."""

    name: str
    higher_is_better: bool = True


class MetricMeter(ABC):
    """Accumulates one evaluation pass; ``compute`` returns scalar metrics by name."""

    @abstractmethod
    def update(self, output: Any, target: Tensor, batch: Mapping[str, Any]) -> None:
        """Add one batch (``batch`` holds the inputs' ``meta`` tensors, e.g. subject ids)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Return the metrics over everything seen so far."""

    def save_artifacts(self, directory: Any, prefix: str) -> list[str]:
        """Write files (plots, tables) for the last ``compute``; returns the paths written."""
        return []


class Task(ABC):
    """One learning target sharing the backbone with the others.

    Subclasses build a head, give a per-sample loss, and declare metrics. The base class turns the
    per-sample loss into a mean over labelled samples only, so a batch without any label for this
    task contributes exactly zero loss and zero gradient (never NaN).
    """

    Options: ClassVar[type[Options]] = Options
    missing_label: ClassVar[int] = MISSING_LABEL

    def __init__(self, name: str, options: Options | None = None) -> None:
        self.name = name
        self.options = options if options is not None else type(self).Options()

    @abstractmethod
    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        """Head mapping features ``[B, feature_dim]`` to the output; ``info`` comes from the data.

        ``info`` is what the dataset reports for this task (e.g. ``{"num_classes": 7}``).
        """

    @abstractmethod
    def per_sample_loss(self, output: Any, target: Tensor) -> Tensor:
        """Loss per sample ``[B]``; ``target`` has missing labels replaced by a valid fill value."""

    @abstractmethod
    def metrics(self) -> list[MetricSpec]:
        """The metrics ``new_meter().compute()`` returns, with their direction."""

    @abstractmethod
    def new_meter(self) -> MetricMeter:
        """A fresh accumulator for one evaluation pass."""

    def labelled_mask(self, target: Tensor) -> Tensor:
        """Boolean ``[B]`` mask of samples carrying a label for this task."""
        if target.is_floating_point():
            valid = ~torch.isnan(target)
            return valid.reshape(valid.shape[0], -1).all(dim=1)
        return target != self.missing_label

    def fill_missing(self, target: Tensor, mask: Tensor) -> Tensor:
        """Replace missing labels with a harmless value so ``per_sample_loss`` stays finite."""
        if target.is_floating_point():
            return torch.nan_to_num(target, nan=0.0)
        return torch.where(mask, target, torch.zeros_like(target))

    def loss(self, output: Any, target: Tensor) -> Tensor:
        """Mean loss over labelled samples; exactly 0 with no gradient when none is labelled."""
        mask = self.labelled_mask(target)
        per_sample = self.per_sample_loss(output, self.fill_missing(target, mask))
        masked = torch.where(mask, per_sample, torch.zeros_like(per_sample))
        count = mask.sum().clamp_min(1).to(per_sample.dtype)
        return masked.sum() / count

    def step_metric(self, output: Any, target: Tensor) -> Tensor:
        """A cheap per-batch score in [0, 1] (e.g. accuracy) for weighters that need one."""
        raise CapabilityError(
            f"task {self.name!r} ({type(self).__name__}) defines no per-step metric"
        )

    def update_state(self, output: Any, target: Tensor) -> None:
        """Update state the optimizer does not train (e.g. moving-average class centres).

        Called once per training step after the backward, under ``no_grad``, with the step's
        outputs and the raw targets (missing labels included); never during evaluation. Every rank
        calls it at the same step, so it may all-reduce. Keep such state in the head's buffers:
        they are checkpointed with the model.
        """
        return None


def accuracy_from_logits(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Fraction of labelled samples whose argmax equals the target (0 when none is labelled)."""
    hits = (logits.argmax(dim=-1) == target) & mask
    return hits.sum().to(torch.float32) / mask.sum().clamp_min(1).to(torch.float32)
