"""MoDo: Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning:
Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023 (arXiv 2305.20057);
reference: LibMTL's ``MoDo`` (from the authors' heshandevaka/Trade-Off-MOL).

Multi-objective gradient with double sampling: MGDA's dual is run by one projected-gradient step
per training step, on an UNBIASED estimate of ``G G^T lambda`` built from two independent
gradient samples, and the model steps along a third:

    lambda <- Proj_simplex(lambda - gamma (G_1 G_2^T lambda + rho lambda)),   d = G_3^T lambda,

``lambda = 1/T`` at the start (a buffer: resume is exact). LibMTL draws three independent
mini-batches per step (three forwards, 3 T backwards).

**Single-sample approximation (deliberate deviation, no option to turn off):** mtlkit's engine
hands a weighter ONE ``[T, D]`` gradient matrix per step, so here ``G_1 = G_2 = G_3 = G`` (this
step's gradients): ``lambda <- Proj(lambda - gamma (K lambda + rho lambda))``, ``K = G G^T``.
The lambda step is then the biased one MoDo's double sampling was designed to avoid (the bias of
``G G^T`` is the gradient noise covariance); at MoDo's small default ``gamma`` (1e-3) lambda moves
slowly, so the effect is an average over many batches anyway. The model step uses the same batch
as the lambda step (the reference's third sample is independent of the first two).

Cost: the T gradient backwards, one Gram product and one combination, all on the device (the
simplex projection is a sort of T numbers); no host sync, no state beyond T numbers.

Heads: their own loss gradient, unscaled (``Update.head_weights`` ones): the reference's plain
per-task backwards accumulate each task's own gradient into its decoder (averaged over the three
samples), and only the shared gradient is replaced.

Deliberate deviation: ``sum_to: tasks`` (default) multiplies the weights (and the update) by T,
the scale of equal weighting as the other weighters here (MGDA, 2018); ``sum_to: one`` is the
reference's simplex scale (lambda itself stays on the simplex).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mtlkit.weighter import Needs, Update, WeighterInput
from mtlkit_weighters._common import PeriodicWeights, UpdateEveryOptions
from mtlkit_weighters._solvers import combine_input_rows, gram
from mtlkit_weighters.moco import project_simplex_torch


class MoDoOptions(UpdateEveryOptions):
    gamma: float = Field(1e-3, gt=0.0)
    """Step of the lambda update (LibMTL's ``MoDo_gamma``)."""
    rho: float = Field(0.1, ge=0.0)
    """L2 regularisation of lambda's update (``MoDo_rho``)."""
    sum_to: Literal["tasks", "one"] = "tasks"
    """Scale of the weights and the update: T (equal weighting's scale) or 1 (the reference)."""


class MoDoWeighter(PeriodicWeights):
    """MGDA's dual by one projected-gradient step per training step (Chen et al. 2023)."""

    Options = MoDoOptions
    options: MoDoOptions
    needs = Needs(grads="parameters")

    def __init__(self, task_names: Sequence[str], options: MoDoOptions | None = None) -> None:
        super().__init__(task_names, options)
        t = self.num_tasks
        self.register_buffer("lambd", torch.full((t,), 1.0 / t))

    def head_weights_for(self, w: Tensor) -> Tensor | None:
        return torch.ones_like(w)  # heads: their own loss gradient, unscaled

    def combine(self, inp: WeighterInput) -> Update:
        reused = self.reuse_weights(inp)  # update_every: the last weights in between
        if reused is not None:
            return reused
        grads = inp.grads
        if grads is None:
            raise ValueError("modo needs parameter gradients (needs.grads)")
        o = self.options
        k = gram(grads).to(self.lambd.dtype)
        lam = self.lambd
        lam = project_simplex_torch(lam - o.gamma * (k @ lam + o.rho * lam))
        self.lambd.copy_(lam)
        coef = lam * (float(self.num_tasks) if o.sum_to == "tasks" else 1.0)
        return Update(weights=self.record(coef),
                      grad=combine_input_rows(coef, grads, inp.grads_scratch),
                      head_weights=torch.ones_like(coef))
