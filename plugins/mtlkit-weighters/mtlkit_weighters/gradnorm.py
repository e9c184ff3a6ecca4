"""GradNorm: Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018 (arXiv 1711.02257).

Learned weights ``w`` (ones at start). With ``g_i`` the gradient of ``L_i`` w.r.t. the last shared
layer ``W`` (``needs.grads = "last_layer"``: T partial backwards through that one layer),

    G_i = w_i ||g_i||,   Ltilde_i = L_i(t) / L_i(0),   r_i = Ltilde_i / mean(Ltilde),
    L_grad = sum_i | G_i - mean(G) r_i^alpha |,   target ``mean(G) r^alpha`` held constant.

The model is trained on ``sum_i w_i L_i`` with ``w`` constant, and ``w`` only by ``L_grad``: both go
into the one backward (``L_grad`` reaches only ``w``, since the ``g_i`` are constants). ``w`` is in
its own optimizer param group (``lr``, default 0.025, no weight decay); after the optimizer step it
is clamped positive and renormalised to sum to T (``needs.after_step``). ``L_i(0)`` (the first
step's losses) is a buffer, so a resumed run keeps the original reference. No host sync.

Heads: ``w_i`` times their own loss gradient (the one backward of ``sum_i w_i L_i``; ``w > 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import nn

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput
from mtlkit_weighters._common import own_param_groups


class GradNormOptions(Options):
    alpha: float = Field(1.5, ge=0.0)
    """Restoring-force strength (the paper's 1.5 for NYUv2; 0 equalises the gradient norms)."""
    lr: float | None = Field(0.025, gt=0.0)
    """Learning rate of the weights' own param group (None: the main optimizer's)."""
    min_weight: float = Field(1e-4, gt=0.0)
    """Weights are clamped to at least this before renormalising (they must stay positive)."""


class GradNormWeighter(Weighter):
    """Weights trained to balance last-shared-layer gradient norms (Chen et al. 2018)."""

    Options = GradNormOptions
    options: GradNormOptions
    needs = Needs(grads="last_layer", after_step=True)

    def __init__(self, task_names: Sequence[str], options: GradNormOptions | None = None) -> None:
        super().__init__(task_names, options)
        self.task_weights = nn.Parameter(torch.ones(self.num_tasks))
        self.register_buffer("initial_losses", torch.ones(self.num_tasks))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def combine(self, inp: WeighterInput) -> Update:
        if inp.grads is None:
            raise ValueError("gradnorm needs last-layer gradients (needs.grads = 'last_layer')")
        losses = inp.losses
        detached = losses.detach().to(self.initial_losses.dtype)
        self.initial_losses.copy_(torch.where(self.started, self.initial_losses, detached))
        self.started.fill_(True)
        w = self.task_weights
        norms = inp.grads.flatten(1).norm(dim=1).to(w.dtype)
        g = w * norms
        tiny = torch.finfo(detached.dtype).tiny
        ratio = detached / self.initial_losses.clamp_min(tiny)
        r = ratio / ratio.mean().clamp_min(tiny)
        target = (g.mean() * r**self.options.alpha).detach()
        grad_loss = (g - target).abs().sum()
        weights = self.record(w.detach().clone())  # w changes in after_step
        task_loss = (weights.to(losses.dtype) * losses).sum()
        return Update(weights=weights, loss=task_loss + grad_loss.to(task_loss.dtype))

    @torch.no_grad()
    def after_step(self, inp: WeighterInput) -> None:
        w = self.task_weights
        w.clamp_(min=self.options.min_weight)
        w.mul_(self.num_tasks / w.sum())

    def param_groups(self) -> list[dict[str, Any]]:
        return own_param_groups(self, self.options.lr)
