"""The Weighter interface: turns per-task losses (and, if declared, gradients) into the update."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from mtlkit.options import Options

GradSource = Literal["none", "representation", "parameters", "last_layer"]


@dataclass(frozen=True)
class Needs:
    """What a weighter asks the trainer for; the trainer computes exactly this and nothing more.

    ``grads``:
      - ``"none"``: losses only; the weighter returns ``Update.loss`` and one backward runs.
      - ``"representation"``: ``[T, *features.shape]`` gradients of each loss w.r.t. the shared
        features; the weighter returns ``Update.grad`` shaped like the features.
      - ``"parameters"``: ``[T, D]`` gradients w.r.t. the D shared parameters in one buffer;
        the weighter returns ``Update.grad`` of shape ``[D]``.
      - ``"last_layer"``: ``[T, D_last]`` gradients w.r.t. the backbone's last shared layer only,
        for methods (GradNorm) that balance gradient norms; the weighter returns ``Update.loss``.
    """

    grads: GradSource = "none"
    features: bool = False
    after_step: bool = False
    counters: bool = False
    step_metrics: bool = False


@dataclass
class WeighterInput:
    """What the trainer hands to ``Weighter.combine``; fields not declared in ``needs`` are None.

    ``losses`` is ``[T]`` in task order. On the ``"none"`` and ``"last_layer"`` paths it is still
    attached to the graph; on the other gradient paths the graph is spent and it is detached.

    ``grads_scratch`` is True when ``grads`` is the trainer's own per-step buffer: the weighter may
    then overwrite it (for instance write its combined gradient over row 0, saving a D-sized
    result) and must not read it after ``combine``. Callers that pass their own tensor leave it
    False and get it back untouched.
    """

    losses: Tensor
    features: Tensor | None = None
    grads: Tensor | None = None
    step: int | None = None
    epoch: int | None = None
    metrics: Tensor | None = None
    grads_scratch: bool = False


@dataclass
class Update:
    """A weighter's answer.

    ``weights`` ([T], detached) are logged. ``loss`` is back-propagated through the model on the
    loss paths; on the gradient paths it may only involve the weighter's own parameters. ``grad``
    is the combined shared gradient.

    ``head_weights`` ([T], >= 0) multiply each head's gradient of its OWN loss on the gradient
    paths; None means ``weights``. Gradient-manipulation methods whose reference code trains the
    task-specific parameters on their own losses (PCGrad, CAGrad, Aligned-MTL) return ones, so a
    negative or tiny shared coefficient never turns a head against its own loss. A negative entry
    is an error (:class:`mtlkit.errors.WeighterError`).
    """

    weights: Tensor
    loss: Tensor | None = None
    grad: Tensor | None = None
    head_weights: Tensor | None = None


@dataclass(frozen=True)
class WeighterSetup:
    """Facts about the model a weighter may need to size its parameters."""

    feature_dim: int
    shared_numel: int
    device: torch.device


class Weighter(nn.Module, ABC):
    """Base class of all weighting methods.

    A weighter is an ``nn.Module`` so it can own parameters (with their own optimizer param group
    and learning rate), buffers and a ``state_dict`` that checkpoints and resumes. It exposes its
    current task weights as the ``weights`` buffer for logging.
    """

    Options: ClassVar[type[Options]] = Options
    needs: Needs = Needs()
    """Class default; a weighter whose needs depend on its options sets ``self.needs`` in
    ``__init__`` (e.g. MGDA's representation-gradient "UB" variant)."""

    weights: Tensor

    def __init__(self, task_names: Sequence[str], options: Options | None = None) -> None:
        super().__init__()
        if not task_names:
            raise ValueError("a weighter needs at least one task")
        self.task_names = list(task_names)
        self.options = options if options is not None else type(self).Options()
        self.register_buffer("weights", torch.ones(len(self.task_names)))

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def setup(self, info: WeighterSetup) -> None:
        """Create parameters that depend on the model; called once before the optimizer exists."""

    @abstractmethod
    def combine(self, inp: WeighterInput) -> Update:
        """Return the update for this step."""

    def needs_at(self, step: int | None) -> Needs:
        """What step ``step`` needs; ``needs`` on every step unless a method computes its weights
        only every few steps and asks for something cheaper in between (``update_every``)."""
        return self.needs

    def after_step(self, inp: WeighterInput) -> None:
        """Called after the optimizer step when ``needs.after_step`` is set."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer param groups for the weighter's own parameters (empty when it has none)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params}] if params else []

    def record(self, weights: Tensor) -> Tensor:
        """Store the weights of this step for logging (no host sync) and return them detached."""
        detached = weights.detach()
        self.weights.copy_(detached.to(self.weights.dtype))
        return detached


def weighted_sum(weights: Tensor, losses: Tensor) -> Tensor:
    """``sum_i w_i L_i`` with the weights cast to the losses' dtype."""
    return (weights.to(losses.dtype) * losses).sum()
