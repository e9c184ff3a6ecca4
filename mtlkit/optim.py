"""Optimizers the stock ``torch.optim`` lacks, kept small: TensorFlow 1's RMSProp.

The paper authors' code (Ming et al. 2019) trains with ``tf.train.RMSPropOptimizer``, whose update
differs from ``torch.optim.RMSprop`` in two ways that matter at their ``epsilon = 1.0``: the
epsilon sits inside the square root, and the mean square starts at one, not zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from mtlkit.config import OptimizerConfig, SchedulerConfig
from mtlkit.schedule import lr_factor


def build_optimizer(oc: OptimizerConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The configured optimizer over ``groups`` (the model's, then each weighter's own)."""
    if oc.name == "sgd":
        return torch.optim.SGD(
            groups, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay,
            nesterov=oc.nesterov,
        )
    if oc.name == "rmsprop":
        return TFRMSprop(
            groups, lr=oc.lr, decay=oc.rmsprop_decay, momentum=oc.momentum, eps=oc.rmsprop_eps,
            weight_decay=oc.weight_decay,
        )
    return torch.optim.AdamW(groups, lr=oc.lr, betas=oc.betas, weight_decay=oc.weight_decay)


def build_scheduler(
    sc: SchedulerConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A closed-form schedule per param group (see ``mtlkit.schedule``); None: constant lr."""
    if sc.name == "none":
        return None
    factors = [lr_factor(sc, total_steps, steps_per_epoch, g["lr"]) for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


@torch.no_grad()
def tf_rmsprop_(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    momentum_buf: Tensor,
    *,
    lr: float,
    decay: float,
    momentum: float,
    eps: float,
) -> None:
    """One TF1 RMSProp step in place: ``ms = d ms + (1-d) g^2``, ``mom = m mom + lr g /
    sqrt(ms + eps)``, ``p -= mom`` (``square_avg`` must start at ones)."""
    square_avg.mul_(decay).addcmul_(grad, grad, value=1.0 - decay)
    step = grad / (square_avg + eps).sqrt()
    momentum_buf.mul_(momentum).add_(step, alpha=lr)
    param.sub_(momentum_buf)


class TFRMSprop(torch.optim.Optimizer):
    """``tf.train.RMSPropOptimizer`` (non-centred) as a torch optimizer; ``weight_decay`` adds
    ``wd * p`` to the gradient, as an L2 regulariser in the loss would."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        decay: float = 0.9,
        momentum: float = 0.0,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or not 0 <= decay < 1 or not 0 <= momentum < 1 or eps < 0:
            raise ValueError(
                f"invalid TFRMSprop settings lr={lr} decay={decay} momentum={momentum} eps={eps}"
            )
        defaults = {
            "lr": lr, "decay": decay, "momentum": momentum, "eps": eps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                tf_rmsprop_(
                    p, grad, state["square_avg"], state["momentum_buffer"],
                    lr=group["lr"], decay=group["decay"], momentum=group["momentum"],
                    eps=group["eps"],
                )
        return loss
