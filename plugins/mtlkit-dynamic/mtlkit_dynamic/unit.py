"""The dynamic-weight unit: one linear layer from shared features to task weights on the simplex."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DynamicWeightUnit(nn.Module):
    """``w = mean_b softmax(W x_b + c)`` with ``x_b`` the (optionally L2-normalised) features.

    The weight and bias start at zero, so the first weights are exactly uniform (1/T) and equal
    losses never move them. The unit runs in float32 with autocast off, whatever the trunk's dtype.
    It owns its SGD state: ``step`` applies ``p <- p - lr * (momentum buffer or grad)``, the
    momentum buffers being registered buffers so a ``state_dict`` resumes the unit exactly.
    """

    weight_momentum: Tensor
    bias_momentum: Tensor

    def __init__(
        self,
        feature_dim: int,
        num_tasks: int,
        normalize: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if feature_dim <= 0 or num_tasks <= 0:
            raise ValueError(
                f"feature_dim and num_tasks must be > 0, got {feature_dim}, {num_tasks}"
            )
        self.normalize = normalize
        self.linear = nn.Linear(feature_dim, num_tasks, device=device, dtype=torch.float32)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
        self.register_buffer("weight_momentum", torch.zeros_like(self.linear.weight))
        self.register_buffer("bias_momentum", torch.zeros_like(self.linear.bias))

    @property
    def feature_dim(self) -> int:
        return self.linear.in_features

    @property
    def num_tasks(self) -> int:
        return self.linear.out_features

    def prepare(self, features: Tensor) -> Tensor:
        """Flatten to ``[B, D]``, cast to float32, L2-normalise each sample if configured."""
        x = features.flatten(1) if features.ndim > 2 else features
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(
                f"dynamic-weight unit expects features [B, {self.feature_dim}], got"
                f" {tuple(features.shape)}"
            )
        x = x.float()
        return F.normalize(x, dim=1) if self.normalize else x

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
            return torch.softmax(logits, dim=1).mean(dim=0)

    @torch.no_grad()
    def step(self, lr: float, momentum: float = 0.0) -> None:
        """One SGD step on the unit's own gradients (PyTorch SGD semantics, no dampening), then
        clear them. Parameters without a gradient are left alone."""
        pairs = ((self.linear.weight, self.weight_momentum), (self.linear.bias, self.bias_momentum))
        for param, buf in pairs:
            grad = param.grad
            if grad is None:
                continue
            if momentum:
                buf.mul_(momentum).add_(grad)
                grad = buf
            param.add_(grad, alpha=-lr)
            param.grad = None
