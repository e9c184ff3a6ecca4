"""Nash-MTL: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, "Multi-Task Learning
as a Bargaining Game", ICML 2022 (arXiv 2202.01017).

The update ``d = sum_i a_i g_i`` is the Nash bargaining solution: ``a > 0`` solves

    G G^T a = 1 / a   (elementwise),

on the RAW Gram matrix ``K = G G^T``, so that every task's directional derivative
``g_i . d = 1 / a_i`` is positive and ``||d||^2 = a^T K a = T``. For conditioning the equation is
solved on ``K / ||K||_F`` and the answer rescaled: if ``(K / n) b = 1 / b`` then ``a = b / sqrt(n)``
solves ``K a = 1 / a`` (the reference code divides by the norm for its cvxpy solver but keeps the
raw equation in its constraint ``alpha_i n (K / n alpha)_i >= 1``). Scaling every gradient by s
scales the weights by 1/s and leaves ``d`` unchanged. The combined shared gradient is then clipped
to ``max_norm`` (the reference clips the shared parameters' gradient after the backward;
``max_norm: null`` turns it off; the clip is folded into the coefficients through the Gram matrix:
no extra pass over the gradients, no host sync). Before the clip ``||d|| = sqrt(T)`` (up to the
ridge), so with the reference's ``max_norm`` 1 every step of the shared parameters has norm 1.

The equation is solved by damped Newton on the convex potential ``a^T K a / 2 - sum log a``
(``_solvers.nash_weights``; the reference uses cvxpy's concave-convex procedure), warm-started
from the previous step's weights, which are a buffer holding the raw ``a`` (resume is exact). It
needs ONE copy of the T x T Gram matrix (and the T previous weights) to the CPU per step.

Heads: ``a_i`` times their own loss gradient (``head_gradients = "weighted"``; ``a > 0``), as the
reference backpropagates ``sum_i a_i L_i`` through every parameter and clips the shared ones only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from mtlkit.weighter import Needs, Update, WeighterInput
from mtlkit_weighters._common import GramWeighter, UpdateEveryOptions
from mtlkit_weighters._solvers import combine_input_rows, gram, nash_weights, to_device, to_host


class NashMTLOptions(UpdateEveryOptions):
    max_iter: int = Field(20, gt=0)
    """Newton iterations per step (the reference's ``optim_niter``)."""
    tol: float = Field(1e-14, gt=0.0)
    """Stop when half the squared Newton decrement is below this."""
    reg: float = Field(1e-6, ge=0.0)
    """Ridge added to the normalised Gram matrix ``K / ||K||_F``, i.e. ``reg ||K||_F`` on the raw
    one: relative, so the weights stay scale-free. Keeps the problem bounded at Pareto-stationary
    points, where the equation has no solution."""
    max_norm: float | None = Field(1.0, gt=0.0)
    """Clip the combined shared gradient to this norm (the reference's 1.0); null: no clipping."""


class NashMTLWeighter(GramWeighter):
    """Nash bargaining over the task gradients (Navon et al. 2022)."""

    Options = NashMTLOptions
    options: NashMTLOptions
    needs = Needs(grads="parameters")
    head_gradients = "weighted"

    def __init__(self, task_names: Sequence[str], options: NashMTLOptions | None = None) -> None:
        super().__init__(task_names, options)
        self.register_buffer("alpha", torch.ones(self.num_tasks))

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        host, start = to_host(k, self.alpha)
        norm = float(np.linalg.norm(host))
        a = None
        if np.isfinite(norm) and norm > 0:
            # solve (K / n + reg I) b = 1 / b, then a = b / sqrt(n): (K + reg n I) a = 1 / a
            root = float(np.sqrt(norm))
            b = nash_weights(host / norm, start * root, self.options.max_iter, self.options.tol,
                             self.options.reg)
            a = b / root
            if not np.all(np.isfinite(a)) or float(a.max()) > np.finfo(np.float32).max:
                a = None  # gradients so small that the weights leave float32
        if a is None:
            a = np.ones(self.num_tasks)
        w = to_device(a, k)
        self.alpha.copy_(w)
        return w

    def combine(self, inp: WeighterInput) -> Update:
        reused = self.reuse_weights(inp)  # update_every: between updates, no solve and no clip
        if reused is not None:
            return reused
        grads = inp.grads
        if grads is None:
            raise ValueError("nash_mtl needs per-task gradients (needs.grads)")
        k = gram(grads)
        w = self.record(self.solve(k, inp))
        coef = w
        if self.options.max_norm is not None:
            # ||sum_i w_i g_i||^2 = w^T K w (= T up to the ridge): the clip folds into the
            # coefficients (the heads keep their weights, as the reference clips the shared
            # parameters only)
            norm = (w.to(k.dtype) @ k @ w.to(k.dtype)).clamp_min(0).sqrt().to(w.dtype)
            coef = w * (self.options.max_norm / (norm + 1e-6)).clamp(max=1.0)
        return Update(weights=w, grad=combine_input_rows(coef, grads, inp.grads_scratch),
                      head_weights=self.head_weights_for(w))
