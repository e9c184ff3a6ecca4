"""The Task interface: a head, a loss that tolerates missing labels, and evaluation metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mtlkit.errors import CapabilityError
from mtlkit.options import Options

MISSING_LABEL = -1
"""Integer target marking a sample that carries no label for a task."""
UNIT = (0.0, 1.0)
"""The bounds of a fraction (accuracy, F1, AUC): :attr:`MetricSpec.bounds`."""


@dataclass(frozen=True)
class MetricSpec:
    """A metric a task reports; ``higher_is_better`` drives model selection and Delta_m."""

    name: str
    higher_is_better: bool = True
    bounds: tuple[float, float] | None = None
    """The range the metric cannot leave (an accuracy: ``(0, 1)``), or None: ``mtlkit report``
    cuts its intervals to it, so a mean near 1 over few folds has no interval above 1."""


@dataclass
class TaskPrediction:
    """One task's predictions for a batch, as ``mtlkit predict`` writes them.

    ``columns`` are row fields with one value per sample (str, int, float or bool): the key
    ``""`` is the task's own column (named after the task), any other key ``k`` becomes
    ``<task>.<k>``. ``arrays`` are per-sample tensors ``[B, ...]`` too wide for a row (an
    embedding); they are saved as ``.npy`` files whose row i is the output's row i.
    """

    columns: dict[str, list[Any]] = field(default_factory=dict)
    arrays: dict[str, Tensor] = field(default_factory=dict)


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

    def meter_inputs(self, output: Any) -> Any:
        """What evaluation hands this task's meter of one batch's head output; under
        torch.distributed only this is gathered onto every rank. Default: the output itself. A
        task with a wide output its meter does not need whole (identity logits over thousands of
        people) returns the reduced part, so evaluation stays small at scale."""
        return output

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

    # --- using the trained model (``mtlkit predict`` / ``mtlkit export``) ---------------------
    def inference_outputs(self, output: Any) -> dict[str, Tensor]:
        """The head output as named per-sample tensors ``[B, ...]``.

        This is what an exported model returns (as outputs ``<task>.<name>``) and what
        :meth:`predict` reads, so both see the same numbers. It is traced, so tensor operations
        only. Default: a tensor is ``{"output": it}``; a mapping keeps its tensor entries.
        """
        if isinstance(output, Tensor):
            return {"output": output}
        if isinstance(output, Mapping):
            return {str(k): v for k, v in output.items() if isinstance(v, Tensor)}
        raise CapabilityError(
            f"task {self.name!r} ({type(self).__name__}) returns {type(output).__name__}, not a"
            " tensor or a mapping of tensors; override inference_outputs to name its outputs"
        )

    def predict(self, outputs: Mapping[str, Tensor]) -> TaskPrediction:
        """Row values from one batch of :meth:`inference_outputs`.

        Default (no knowledge of what the numbers mean): an output of shape ``[B]`` or ``[B, 1]``
        becomes a number column, a wider one an array. Classification-like tasks override this
        to name the predicted class and its probabilities.
        """
        pred = TaskPrediction()
        for key, value in outputs.items():
            name = "" if len(outputs) == 1 else key
            flat = value.detach().float().cpu()
            if flat.ndim == 1 or (flat.ndim == 2 and flat.shape[1] == 1):
                pred.columns[name] = flat.reshape(-1).tolist()
            else:
                pred.arrays[key] = flat
        return pred

    def describe_outputs(self, recorded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """What each inference output means (class names, sizes, how to compare), by output
        name, for the sidecar JSON of an exported model. ``recorded``: the task's validation
        metrics at the checkpoint's step (e.g. a decision threshold). Default: nothing."""
        return {}

    def score_pairs(
        self,
        outputs: Mapping[str, Tensor],
        first: Tensor,
        second: Tensor,
        recorded: Mapping[str, Any],
        threshold: float | None = None,
    ) -> dict[str, list[Any]] | None:
        """Compare samples pairwise (verification): columns with one value per pair, or None
        when this task does not compare samples (the default).

        ``outputs`` holds every sample's :meth:`inference_outputs`; pair ``p`` compares rows
        ``first[p]`` and ``second[p]``. ``recorded`` is the task's validation metrics at the
        checkpoint's step, where the run's decision threshold is found; ``threshold``, when
        given, replaces it.
        """
        return None

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


def class_columns(
    logits: Tensor, class_names: list[str], *, probabilities: bool = True
) -> dict[str, list[Any]]:
    """Prediction columns of a softmax classifier: the predicted class's name (column ``""``),
    its probability (``confidence``) and, with ``probabilities``, every class's (``prob.<name>``).
    """
    probs = logits.detach().float().softmax(dim=-1).cpu()
    confidence, index = probs.max(dim=-1)
    columns: dict[str, list[Any]] = {
        "": [class_names[i] for i in index.tolist()],
        "confidence": confidence.tolist(),
    }
    if probabilities:
        for k, name in enumerate(class_names):
            columns[f"prob.{name}"] = probs[:, k].tolist()
    return columns
