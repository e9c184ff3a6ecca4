"""FairGrad: Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024
(arXiv 2402.15638); reference code OptMN-Lab/fairgrad and LibMTL's ``FairGrad``.

alpha-fair allocation of the update ``d = sum_i w_i g_i`` among the tasks: with ``K = G G^T``
(the RAW Gram matrix), the weights ``w > 0`` solve

    K w = w^(-1/alpha)   (elementwise),

i.e. every task's directional derivative ``g_i . d = w_i^(-1/alpha)``. ``alpha = 1`` is
proportional fairness, the equation of Nash-MTL (Navon et al. 2022); ``alpha -> inf`` tends to
max-min fairness. The reference solves it with ``scipy.optimize.least_squares`` (bounds
``w >= 0``, start ``1/T``); here it is the stationarity condition of the strictly convex
potential ``f(w) = w^T K w / 2 - sum_i phi(w_i)``, ``phi' = w^(-1/alpha)`` (``phi = log`` at
alpha 1), on ``w > 0``, minimised by Newton's method with a backtracking line search that keeps
``w > 0``, from ones moved to the minimum of ``f`` along their ray (closed form). Solved on
``K / ||K||_F`` and rescaled: if ``(K / n) b = b^(-1/alpha)`` then ``w = b n^(-alpha/(1+alpha))``.
Cost: one T x T copy to the host per step and a few T x T Newton steps; stateless.

Heads: ``w_i`` times their own loss gradient (``head_gradients = "weighted"``; ``w > 0``): the
reference back-propagates ``sum_i w_i L_i`` through every parameter.

Deliberate deviation: ``reg`` (1e-6, relative: ``K / ||K||_F + reg I``) keeps the problem bounded
where the gradients are linearly dependent (a Pareto-stationary point has no solution: the
weights blow up while ``d`` shrinks); the reference's least squares stops wherever it stalls.
All-zero gradients give ``w = 1``.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field
from torch import Tensor

from mtlkit.weighter import Needs, WeighterInput
from mtlkit_weighters._common import GramWeighter, UpdateEveryOptions
from mtlkit_weighters._solvers import to_device, to_host


class FairGradOptions(UpdateEveryOptions):
    alpha: float = Field(1.0, gt=0.0)
    """The fairness exponent (LibMTL's default 1.0: proportional fairness)."""
    reg: float = Field(1e-6, ge=0.0)
    """Ridge added to the normalised Gram matrix ``K / ||K||_F`` (relative, scale-free)."""
    max_iter: int = Field(50, gt=0)
    """Newton iterations per step."""
    tol: float = Field(1e-14, gt=0.0)
    """Stop when half the squared Newton decrement is below this."""


def _phi(w: np.ndarray, alpha: float) -> np.ndarray:
    if alpha == 1.0:
        return np.log(w)
    p = 1.0 - 1.0 / alpha
    return w**p / p


def fairgrad_weights(
    k: np.ndarray, alpha: float = 1.0, reg: float = 1e-6, max_iter: int = 50, tol: float = 1e-14
) -> np.ndarray:
    """Positive solution of ``(K + reg I) w = w^(-1/alpha)`` for a PSD ``K`` (well scaled)."""
    t = k.shape[0]
    kr = (k + k.T) / 2 + reg * np.eye(t)
    e = 1.0 / alpha

    def f(w: np.ndarray) -> float:
        return float(w @ kr @ w) / 2 - float(np.sum(_phi(w, alpha)))

    w = np.ones(t)
    q = float(w @ kr @ w)
    if np.isfinite(q) and q > 0:
        # d/dc f(c 1) = c q - c^(-1/alpha) T = 0
        w = w * (t / q) ** (alpha / (1.0 + alpha))
    for _ in range(max_iter):
        grad = kr @ w - w ** (-e)
        hess = kr + np.diag(e * w ** (-e - 1.0))
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        dec = float(grad @ step)
        if not np.isfinite(dec) or dec / 2 <= tol:
            break
        # start below the boundary of w > 0, then backtrack (Armijo)
        shrink = step > 0
        size = 1.0
        if shrink.any():
            size = min(1.0, 0.99 * float(np.min(w[shrink] / step[shrink])))
        f0 = f(w)
        while size > 1e-12:
            new = w - size * step
            if np.all(new > 0) and f(new) <= f0 - 0.25 * size * dec:
                break
            size /= 2
        else:
            break
        w = new
    return w


class FairGradWeighter(GramWeighter):
    """alpha-fair allocation of the update among the tasks: K w = w^(-1/alpha) (Ban & Ji 2024)."""

    Options = FairGradOptions
    options: FairGradOptions
    needs = Needs(grads="parameters")
    head_gradients = "weighted"

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        (host,) = to_host(k)
        o = self.options
        norm = float(np.linalg.norm(host))
        w = None
        if np.isfinite(norm) and norm > 0:
            b = fairgrad_weights(host / norm, o.alpha, o.reg, o.max_iter, o.tol)
            w = b * norm ** (-o.alpha / (1.0 + o.alpha))
            if not np.all(np.isfinite(w)) or float(w.max()) > np.finfo(np.float32).max / 1e3:
                w = None
        if w is None:
            w = np.ones(self.num_tasks)
        return to_device(w, k)
