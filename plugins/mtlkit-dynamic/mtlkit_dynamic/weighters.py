"""Difficulty-based dynamic weighting (Ming et al., arXiv 1911.03281) and its naive control.

Per step, with shared features ``x`` ([B, D]) and task losses ``L`` ([T]):

- ``w = mean_b softmax(unit(normalize(x_b)))`` (a point on the simplex; ``normalize_logits``
  and ``clamp`` give the authors' earlier variant);
- the network is trained on ``sum_i w_i L_i`` (``w`` detached by default);
- the unit is trained on its own loss, with the features and the task losses as constants:
  ``dynamic``: ``L_w = sum_i w_i / (L_i + sigma)`` (dL_w/dz_k = w_k (1/L_k - sum_i w_i/L_i):
  weight flows to the task with the larger loss); ``dynamic-naive``: ``L_w = sum_i w_i L_i``
  (weight flows to the easier task).

The trainer runs one backward of ``network loss + L_w``; since ``L_w`` reaches only the unit and the
network loss never reaches it, that one backward fills both sets of gradients. The unit is then
stepped by its own optimizer in ``after_step`` (by default the authors': TF1 RMSProp, lr 0.1,
decay 0.9, momentum 0.9, eps 1.0, gradients clipped to norm 5), never by the main optimizer.

Defaults follow the authors' last version (``facenet_expression_realdynamic_*.py``): raw logits,
no clamp, truncated-normal init, RMSProp. One deliberate difference: ``detach`` is true by default
(their network loss is not detached from ``w``; see ``detach``).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from mtlkit import distributed
from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput, WeighterSetup, weighted_sum
from mtlkit_dynamic.unit import DynamicWeightUnit


class NaiveDynamicOptions(Options):
    """Options of ``dynamic-naive`` (and the shared part of ``dynamic``)."""

    normalize: bool = True
    """L2-normalise each sample's features before the unit, as the authors' TF ``l2_normalize``
    (epsilon 1e-10 on the squared norm: a norm below 1e-5 is scaled by 1e5); false: raw."""
    normalize_logits: bool = False
    """Softmax over the L2-normalised logit vector (the authors' earlier version): for T = 2 each
    weight is bounded to [0.196, 0.804], the plateau of the paper's weight figure. False: raw
    logits (their last version), unbounded."""
    clamp: tuple[float, float] | None = None
    """Clamp each weight to [low, high], then renormalise (the earlier version: [0.01, 0.99])."""
    init: Literal["truncated_normal", "zero"] = "truncated_normal"
    """Unit weight init: truncated normal, std 0.1 (the authors'); zero: exactly uniform first
    weights. The bias starts at zero either way."""
    optimizer: Literal["rmsprop", "sgd"] = "rmsprop"
    """The unit's own optimizer: TF1 RMSProp (the authors') or plain SGD."""
    detach: bool = True
    """Network loss ``sum_i w_i L_i`` with ``w`` constant; false also sends ``sum_i L_i dw_i/dx``
    into the trunk (the authors' code), the unit itself still trained only by its own loss."""
    lr: float = Field(0.1, gt=0.0)
    """Learning rate of the unit's own optimizer (the authors': 0.1)."""
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    """Momentum of the unit's optimizer; None: 0.9 for rmsprop (the authors'), 0 for sgd."""
    rmsprop_decay: float = Field(0.9, ge=0.0, lt=1.0)
    """Decay of RMSProp's mean square (the authors': 0.9)."""
    rmsprop_eps: float = Field(1.0, gt=0.0)
    """RMSProp's epsilon, inside the square root as in TF1 (the authors': 1.0)."""
    clip_norm: float | None = Field(5.0, gt=0.0)
    """Clip the unit's gradient to this global norm before its step (the authors': 5); null: off."""

    @model_validator(mode="after")
    def _clamp_is_an_interval(self) -> NaiveDynamicOptions:
        if self.clamp is not None and not 0.0 <= self.clamp[0] < self.clamp[1] <= 1.0:
            raise ValueError(f"clamp must satisfy 0 <= low < high <= 1, got {self.clamp}")
        return self

    @property
    def resolved_momentum(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 0.9 if self.optimizer == "rmsprop" else 0.0


Difficulty = Literal["loss", "loss_ratio"]


class DynamicOptions(NaiveDynamicOptions):
    """Options of ``dynamic``."""

    sigma: float = Field(0.01, gt=0.0)
    """Added to each loss in ``1/(L_i + sigma)``, only to avoid a division by zero."""
    difficulty: Difficulty = "loss"
    """What the unit reads as a task's difficulty. ``loss``: the raw loss (the authors'), so a
    loss's scale steers the weights (a task whose loss is 10x larger looks 10x harder).
    ``loss_ratio`` (mtlkit's, not in the paper): ``L_i / L_i(0)``, the loss relative to its first
    positive value, GradNorm's inverse training rate; multiplying a loss by any constant leaves
    the weights unchanged, and the task that has learnt least is the hardest."""


class _DynamicWeightUnitWeighter(Weighter):
    """Shared machinery; subclasses define the unit's own loss."""

    needs = Needs(grads="none", features=True, after_step=True, counters=False)
    Options = NaiveDynamicOptions
    options: NaiveDynamicOptions
    unit: DynamicWeightUnit | None

    def __init__(
        self, task_names: Sequence[str], options: NaiveDynamicOptions | None = None
    ) -> None:
        super().__init__(task_names, options)
        self.weights.fill_(1.0 / self.num_tasks)
        self.unit = None

    def setup(self, info: WeighterSetup) -> None:
        """Create the unit ``Linear(feature_dim, T)`` (zero-initialised: uniform first weights)."""
        o = self.options
        self.unit = DynamicWeightUnit(
            info.feature_dim, self.num_tasks, normalize=o.normalize, device=info.device,
            normalize_logits=o.normalize_logits, clamp=o.clamp, init=o.init,
        )
        self.weights = self.weights.to(info.device)

    def _unit(self) -> DynamicWeightUnit:
        if self.unit is None:
            raise RuntimeError(
                f"{type(self).__name__}: call setup(WeighterSetup(...)) before combine();"
                " the unit's size comes from the backbone's feature_dim"
            )
        return self.unit

    @abstractmethod
    def unit_loss(self, weights: Tensor, losses: Tensor) -> Tensor:
        """The unit's own loss from its weights ``[T]`` (attached to the unit), losses constant."""

    def combine(self, inp: WeighterInput) -> Update:
        unit = self._unit()
        if inp.features is None:
            raise ValueError(f"{type(self).__name__} needs the shared features (needs.features)")
        losses = inp.losses
        if losses.shape != (self.num_tasks,):
            raise ValueError(
                f"expected {self.num_tasks} task losses, got shape {tuple(losses.shape)}"
            )
        # the unit's pass: constant features, live parameters -> gradients reach the unit only
        w = unit(inp.features.detach())
        own = self.unit_loss(w, losses.detach().float())
        # under torch.distributed the weights are the batch mean over ALL ranks' samples, so every
        # rank trains the network with identical weights (identity in one process); the unit's
        # loss is linear in w, so averaging its gradients over ranks is exact
        w_global = distributed.all_mean(w)
        if self.options.detach:
            w_net = w_global
        else:
            # live features, constant unit parameters -> gradients reach the trunk only
            w_net = distributed.global_value(unit(inp.features, detach_params=True))
        network = weighted_sum(w_net, losses)
        return Update(weights=self.record(w_global), loss=network + own.to(network.dtype))

    def after_step(self, inp: WeighterInput) -> None:
        """The unit's own optimiser step (after the main optimizer stepped the network)."""
        o = self.options
        self._unit().step(
            o.lr, o.resolved_momentum, optimizer=o.optimizer, clip_norm=o.clip_norm,
            decay=o.rmsprop_decay, eps=o.rmsprop_eps,
        )

    def param_groups(self) -> list[dict[str, Any]]:
        """None: the unit is stepped by its own SGD in ``after_step``, not the main optimizer."""
        return []


class DynamicWeighter(_DynamicWeightUnitWeighter):
    """Difficulty-based dynamic weights: the unit minimises ``sum_i w_i / (d_i + sigma)``, which
    moves weight towards the task with the larger (harder) difficulty ``d_i``: the loss, or with
    ``difficulty: loss_ratio`` the loss over its first value. Assumes losses ``>= 0``."""

    Options = DynamicOptions
    options: DynamicOptions
    initial_losses: Tensor

    def __init__(
        self, task_names: Sequence[str], options: DynamicOptions | None = None
    ) -> None:
        super().__init__(task_names, options)
        if self.options.difficulty == "loss_ratio":
            # NaN until a task first reports a positive loss; checkpointed with the weighter
            self.register_buffer("initial_losses", torch.full((self.num_tasks,), math.nan))

    def setup(self, info: WeighterSetup) -> None:
        super().setup(info)
        if self.options.difficulty == "loss_ratio":
            self.initial_losses = self.initial_losses.to(info.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        """A checkpoint of the other ``difficulty`` (a resume that changed it, allowed with
        --allow-config-change) loads: ``loss`` ignores stored reference losses, ``loss_ratio``
        without them takes its references from the next positive losses, as a new run does."""
        key = prefix + "initial_losses"
        if self.options.difficulty == "loss":
            state_dict.pop(key, None)
        elif key not in state_dict:
            state_dict[key] = torch.full((self.num_tasks,), math.nan)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def difficulty(self, losses: Tensor) -> Tensor:
        """``d_i``: the loss itself, or its ratio to the task's first positive (global) loss."""
        if self.options.difficulty == "loss":
            return losses
        # every rank must see the same reference: the global mean loss of that first step
        losses = distributed.all_mean(losses)
        start = self.initial_losses
        fill = torch.isnan(start) & (losses > 0)
        self.initial_losses = torch.where(fill, losses.to(start.dtype), start)
        # a task with no positive loss yet counts as not started: ratio 1
        return torch.where(torch.isnan(self.initial_losses), torch.ones_like(losses),
                           losses / self.initial_losses.to(losses.dtype))

    def unit_loss(self, weights: Tensor, losses: Tensor) -> Tensor:
        return (weights / (self.difficulty(losses) + self.options.sigma)).sum()


class NaiveDynamicWeighter(_DynamicWeightUnitWeighter):
    """The paper's naive-dynamic control: the unit minimises ``sum_i w_i L_i`` itself, which moves
    weight towards the task with the smaller (easier) loss."""

    def unit_loss(self, weights: Tensor, losses: Tensor) -> Tensor:
        return (weights * losses).sum()
