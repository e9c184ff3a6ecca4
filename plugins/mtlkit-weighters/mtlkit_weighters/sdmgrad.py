"""SDMGrad: Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable
Stochastic Algorithms", NeurIPS 2023 (arXiv 2305.18409); reference: LibMTL's ``SDMGrad`` (from
the authors' OptMN-Lab/sdmgrad).

The update is kept close to a target direction, the mean gradient ``g_0 = G^T 1 / T``: with
``K = G G^T / (mean_i ||g_i||)^2`` (LibMTL: ``GG / (scale^2 + 1e-8)``, ``scale`` the mean of the
square roots of the clamped diagonal) and ``b = K 1 / T``, the weights ``w`` (a buffer on the
simplex, ``1/T`` at the start) take ``niter`` steps of SGD with learning rate 5 and momentum 0.5
(a fresh momentum buffer each training step, as the reference builds its optimizer per step),
each followed by the Euclidean projection onto the simplex, on

    grad(w) = K w + lamda b,

and the shared update is ``d = (G^T w + lamda g_0) / (1 + lamda)``, i.e. coefficients
``(w + lamda / T) / (1 + lamda)`` on the raw gradients (logged as the weights).

**Single-sample approximation (deliberate deviation):** LibMTL draws three independent
mini-batches per step (``zeta`` for the update, ``xi_1``, ``xi_2`` for ``K = G_xi1 G_xi2^T``).
mtlkit's engine hands one ``[T, D]`` gradient matrix per step, so the three samples are the same
``G`` here; the ``K`` of the w-steps is then biased by the gradient noise covariance (the
reference's double sampling removes that), and the update uses the same batch.

**Rounding decides the weights on near-symmetric inputs (measured: by up to 1.0):** the inner steps
(learning rate 5, momentum 0.5) contract only where ``lr * h < 2 (1 + momentum)``, ``h`` a
curvature of the normalised ``K``; for two equal-norm gradients with cosine ``c`` the antisymmetric
direction has ``h = 1 - c``, so below ``c = 0.4`` the symmetric point ``w = [0.5, 0.5]`` is an
unstable fixed point. A relative difference of one float32 ulp (1.2e-7) between the tasks, in the
inputs or in the rounding of the Gram matrix, then reaches a vertex within the 20 steps:
``w = [0, 1]`` or ``[1, 0]`` instead of ``[0.5, 0.5]``, an effect of 1.0 on ``w``. The inner loop
here already runs in float64 on the host; that cannot help, since the difference is in the float32
gradients themselves (LibMTL in float64 also ends at a vertex; LibMTL in float32 gives
``[0.5, 0.5]`` where its rounding happens to erase the difference). Which vertex, or the symmetric
point, mtlkit gives depends on the float32 Gram's rounding, which depends on the tasks' order.

Cost: the T gradient backwards, one Gram product, ONE copy of the T x T Gram matrix to the host
per step and ``niter`` tiny projected steps there, one combination.

Heads: their own loss gradient, unscaled (``Update.head_weights`` ones): the reference's plain
per-task backwards accumulate each task's own gradient into its decoder (summed over its three
samples; here the one sample), and only the shared gradient is replaced.

Deliberate deviation: ``sum_to: tasks`` (default) multiplies the coefficients (and the update) by
T, the scale of equal weighting as the other weighters here (MGDA, 2018); ``sum_to: one`` is the
reference's scale (coefficients summing to 1). ``w`` itself stays on the simplex.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from mtlkit.weighter import Needs, Update, WeighterInput
from mtlkit_weighters._common import PeriodicWeights, UpdateEveryOptions
from mtlkit_weighters._solvers import combine_input_rows, gram, project_simplex, to_device, to_host


class SDMGradOptions(UpdateEveryOptions):
    lamda: float = Field(0.3, ge=0.0)
    """Pull toward the mean gradient (LibMTL's ``SDMGrad_lamda``)."""
    niter: int = Field(20, ge=0)
    """Projected SGD steps of the weights per training step (``SDMGrad_niter``)."""
    lr: float = Field(5.0, gt=0.0)
    """Learning rate of those steps (the reference's hard-coded 5)."""
    momentum: float = Field(0.5, ge=0.0, lt=1.0)
    """Their momentum (the reference's hard-coded 0.5; reset every training step)."""
    sum_to: Literal["tasks", "one"] = "tasks"
    """Scale of the coefficients and the update: T (equal weighting's) or 1 (the reference)."""


def sdmgrad_inner(k: np.ndarray, w: np.ndarray, lamda: float, niter: int, lr: float = 5.0,
                  momentum: float = 0.5) -> np.ndarray:
    """The reference's ``niter`` projected momentum-SGD steps of ``w`` on the raw Gram ``k``."""
    diag = np.maximum(np.diag(k), 0.0)
    scale = float(np.mean(np.sqrt(diag)))
    kn = k / (scale * scale + 1e-8)
    b = kn.mean(axis=1)
    buf = None
    for _ in range(niter):
        grad = kn @ w + lamda * b
        buf = grad if buf is None else momentum * buf + grad
        w = project_simplex(w - lr * buf)
    return w


class SDMGradWeighter(PeriodicWeights):
    """Direction-oriented multi-objective gradient toward the mean gradient (Xiao et al. 2023)."""

    Options = SDMGradOptions
    options: SDMGradOptions
    needs = Needs(grads="parameters")
    conformance_traits = {"equivariant_max_tasks": 2}
    """Permutation-equivariant in exact arithmetic only: the reference's inner steps (learning
    rate 5, momentum 0.5) do not contract, so the float32 rounding of the Gram matrix, which
    depends on the tasks' order, can move w by up to 1.0 (a vertex instead of the symmetric
    point; see the module docstring)."""

    def __init__(self, task_names: Sequence[str], options: SDMGradOptions | None = None) -> None:
        super().__init__(task_names, options)
        t = self.num_tasks
        self.register_buffer("w", torch.full((t,), 1.0 / t))

    def _solve(self, k: Tensor) -> Tensor:
        o = self.options
        host, start = to_host(k, self.w)
        w = sdmgrad_inner(host, start, o.lamda, o.niter, o.lr, o.momentum)
        if not np.all(np.isfinite(w)):
            w = start
        return to_device(w, k)

    def head_weights_for(self, w: Tensor) -> Tensor | None:
        return torch.ones_like(w)  # heads: their own loss gradient, unscaled

    def combine(self, inp: WeighterInput) -> Update:
        reused = self.reuse_weights(inp)  # update_every: the last weights in between
        if reused is not None:
            return reused
        grads = inp.grads
        if grads is None:
            raise ValueError("sdmgrad needs parameter gradients (needs.grads)")
        o = self.options
        t = self.num_tasks
        w = self._solve(gram(grads))
        self.w.copy_(w)
        coef = (w + o.lamda / t) / (1.0 + o.lamda)
        coef = coef * (float(t) if o.sum_to == "tasks" else 1.0)
        return Update(weights=self.record(coef),
                      grad=combine_input_rows(coef, grads, inp.grads_scratch),
                      head_weights=torch.ones_like(coef))
