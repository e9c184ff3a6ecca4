"""The dynamic-weight unit: one linear layer from shared features to task weights on the simplex."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlkit.optim import tf_rmsprop_

UnitInit = Literal["truncated_normal", "zero"]
UnitOptimizer = Literal["rmsprop", "sgd"]

TRUNC_STD = 0.1
"""Std of the authors' ``truncated_normal_initializer(stddev=0.1)`` (cut at two std, as TF)."""

TF_L2_EPS = 1e-10
"""The authors' ``tf.nn.l2_normalize(x, 1, 1e-10)`` epsilon, a floor on the SQUARED norm."""


def tf_l2_normalize(x: Tensor, dim: int = 1, eps: float = TF_L2_EPS) -> Tensor:
    """TensorFlow's ``l2_normalize``: ``x * rsqrt(max(sum x^2, eps))``.

    Not ``F.normalize``, whose epsilon (1e-12) floors the norm itself: below a norm of
    ``sqrt(eps)`` = 1e-5 TF scales by 1e5 instead of normalising, so a feature of norm 1e-6 becomes
    a vector of norm 0.1 (the authors' weights [0.525, 0.475] where ``F.normalize`` gave
    [0.731, 0.269] on the same unit).
    """
    return x * torch.rsqrt((x * x).sum(dim=dim, keepdim=True).clamp_min(eps))


class DynamicWeightUnit(nn.Module):
    """``w = mean_b softmax(z_b)``, ``z_b = W x_b + c`` (or ``z_b / ||z_b||``), ``x_b`` the
    (optionally L2-normalised) features; optionally clamped.

    The unit runs in float32 with autocast off, whatever the trunk's dtype. It owns its optimizer
    state as registered buffers (so a ``state_dict`` resumes the unit exactly): ``step`` clips the
    unit's gradient to a global norm, then applies SGD or TensorFlow 1's RMSProp.
    """

    weight_momentum: Tensor
    bias_momentum: Tensor
    weight_square: Tensor
    bias_square: Tensor

    def __init__(
        self,
        feature_dim: int,
        num_tasks: int,
        normalize: bool = True,
        device: torch.device | str | None = None,
        *,
        normalize_logits: bool = False,
        clamp: tuple[float, float] | None = None,
        init: UnitInit = "zero",
    ) -> None:
        super().__init__()
        if feature_dim <= 0 or num_tasks <= 0:
            raise ValueError(
                f"feature_dim and num_tasks must be > 0, got {feature_dim}, {num_tasks}"
            )
        self.normalize = normalize
        self.normalize_logits = normalize_logits
        self.clamp = clamp
        self.linear = nn.Linear(feature_dim, num_tasks, device=device, dtype=torch.float32)
        with torch.no_grad():
            self.linear.bias.zero_()
            if init == "zero":
                self.linear.weight.zero_()
            else:
                nn.init.trunc_normal_(
                    self.linear.weight, std=TRUNC_STD, a=-2 * TRUNC_STD, b=2 * TRUNC_STD
                )
        self.register_buffer("weight_momentum", torch.zeros_like(self.linear.weight))
        self.register_buffer("bias_momentum", torch.zeros_like(self.linear.bias))
        # TF1's RMSProp starts its mean square at one
        self.register_buffer("weight_square", torch.ones_like(self.linear.weight))
        self.register_buffer("bias_square", torch.ones_like(self.linear.bias))

    @property
    def feature_dim(self) -> int:
        return self.linear.in_features

    @property
    def num_tasks(self) -> int:
        return self.linear.out_features

    def prepare(self, features: Tensor) -> Tensor:
        """Flatten to ``[B, D]``, cast to float32, L2-normalise each sample if configured (as
        the authors' TF code: :func:`tf_l2_normalize`)."""
        x = features.flatten(1) if features.ndim > 2 else features
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(
                f"dynamic-weight unit expects features [B, {self.feature_dim}], got"
                f" {tuple(features.shape)}"
            )
        x = x.float()
        return tf_l2_normalize(x) if self.normalize else x

    def forward(self, features: Tensor, detach_params: bool = False) -> Tensor:
        """Task weights ``[T]`` (non-negative, summing to 1).

        ``detach_params=True`` uses the unit's parameters as constants: gradients then reach the
        features only, never the unit (used when the network loss is not detached from ``w``).
        """
        x = self.prepare(features)
        weight, bias = self.linear.weight, self.linear.bias
        if detach_params:
            weight, bias = weight.detach(), bias.detach()
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x, weight, bias)
            if self.normalize_logits:
                # unit-length logit vectors: for T = 2 each weight stays in [0.196, 0.804]
                logits = tf_l2_normalize(logits)
            w = torch.softmax(logits, dim=1).mean(dim=0)
            if self.clamp is not None:
                # the authors' earlier variant; outside the bounds the unit gets no gradient
                w = w.clamp(*self.clamp)
                w = w / w.sum()
            return w

    def _pairs(self) -> list[tuple[nn.Parameter, Tensor, Tensor]]:
        return [
            (self.linear.weight, self.weight_momentum, self.weight_square),
            (self.linear.bias, self.bias_momentum, self.bias_square),
        ]

    @torch.no_grad()
    def step(
        self,
        lr: float,
        momentum: float = 0.0,
        *,
        optimizer: UnitOptimizer = "sgd",
        clip_norm: float | None = None,
        decay: float = 0.9,
        eps: float = 1.0,
    ) -> None:
        """One step on the unit's own gradients, then clear them.

        ``clip_norm`` first scales the gradients to that global norm (the authors clip at 5).
        ``sgd``: PyTorch SGD semantics, no dampening. ``rmsprop``: TF1's RMSProp (``decay``,
        ``momentum``, ``eps`` inside the square root). Parameters without a gradient stay put.
        """
        pairs = [(p, m, s) for p, m, s in self._pairs() if p.grad is not None]
        if clip_norm is not None and pairs:
            torch.nn.utils.clip_grad_norm_([p for p, _, _ in pairs], clip_norm)
        for param, mom, square in pairs:
            grad = param.grad
            assert grad is not None
            if optimizer == "rmsprop":
                tf_rmsprop_(param, grad, square, mom, lr=lr, decay=decay, momentum=momentum,
                            eps=eps)
            else:
                if momentum:
                    mom.mul_(momentum).add_(grad)
                    grad = mom
                param.add_(grad, alpha=-lr)
            param.grad = None
