"""UPGrad: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232
(2024); the aggregator ``UPGrad`` of TorchJD (``torchjd.aggregation.upgrad``), also in LibMTL.

Each task gradient is projected onto the dual cone of all the task gradients,
``C = {x : g_j . x >= 0 for every j}``, and the projections are added (weighted by a preference
vector ``u``). Everything runs on the T x T Gram matrix ``K = G G^T``: by the paper's
Proposition 1 the projection of ``G^T u`` onto ``C`` is ``G^T v`` with

    v = argmin_v  v^T K v   subject to  v >= u,

so the update is ``d = G^T w``, ``w = sum_i v(u_i e_i)`` (the coefficients of the RAW gradients,
logged as the weights). ``w >= u >= 0`` and, up to the ridge below, ``g_j . d >= 0`` for every
task: the update never increases any task's loss to first order. Gradients that do not conflict
are left alone (``w = u``: equal weighting). As in TorchJD the Gram matrix is first normalised by
its trace and regularised, ``K <- K / tr K + reg_eps I`` (so the weights are scale-free).

Solver: each of the T quadratic programs is a non-negative least-squares problem in
``s = v - u >= 0`` (minimise ``(u + s)^T K (u + s)``), solved exactly by the Lawson-Hanson
active-set method written on the Gram matrix (finite termination); TorchJD and LibMTL call
``quadprog`` through ``qpsolvers``. Cost: the T gradient backwards of every gradient method, one
Gram product, one T x T copy to the host per step and T tiny active-set solves there (O(T^4)
worst case, nothing that grows with the model). Stateless.

Heads: their own loss gradient, unscaled (``head_gradients = "own"``): TorchJD's
``mtl_backward`` aggregates the Jacobian of the SHARED parameters only and back-propagates each
task's own loss into its task-specific parameters (LibMTL likewise backpropagates each loss on
its own into the decoders).

Deliberate deviations (each an option):

- ``sum_to: tasks`` (default): ``u = 1`` (the sum of the projections), so that non-conflicting
  gradients give exactly equal weighting's update and a learning rate carries over from it, as
  the other weighters here (MGDA, 2018, does the same). ``sum_to: one`` is TorchJD's and LibMTL's
  mean, ``u = 1/T`` (the problem is positively homogeneous in u: the update is just T times
  smaller).
- ``norm_eps: 0`` (default): TorchJD and LibMTL replace the Gram matrix by zeros (hence return
  the plain mean) when ``tr K = ||G||_F^2 < norm_eps = 1e-4``, an ABSOLUTE threshold: gradients
  of norm under ~1e-2 (late training, small losses) would silently lose the projection. Here only
  an exactly zero Gram matrix falls back; ``norm_eps: 1e-4`` restores the reference.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from torch import Tensor

from mtlkit.weighter import Needs, WeighterInput
from mtlkit_weighters._common import GramWeighter, UpdateEveryOptions
from mtlkit_weighters._solvers import to_device, to_host


class UPGradOptions(UpdateEveryOptions):
    sum_to: Literal["tasks", "one"] = "tasks"
    """Preference vector: ``u = 1`` (sum of the projections; equal weighting when nothing
    conflicts) or ``u = 1/T`` (TorchJD's and LibMTL's mean)."""
    norm_eps: float = Field(0.0, ge=0.0)
    """Below this trace ``||G||_F^2`` the Gram matrix is treated as zero (the weights are then
    ``u``). The reference's 1e-4 is absolute; 0: only all-zero gradients."""
    reg_eps: float = Field(1e-4, ge=0.0)
    """Ridge added to the trace-normalised Gram matrix (TorchJD's and LibMTL's 1e-4)."""
    max_iter: int = Field(500, gt=0)
    """Iteration cap of each active-set solve (it terminates far earlier)."""


def nonneg_quadratic(
    q: np.ndarray, c: np.ndarray, max_iter: int = 500, tol: float = 1e-13
) -> np.ndarray:
    """``argmin_{s >= 0} s^T Q s / 2 - c^T s`` for a symmetric positive (semi)definite ``Q``:
    the Lawson-Hanson NNLS active-set method on the Gram form (``Q = A^T A``, ``c = A^T b``).

    Optimality (KKT): ``s >= 0``, ``r = c - Q s <= 0`` off the support and ``= 0`` on it, up to
    ``tol`` relative to the largest diagonal entry of ``Q`` times the size of ``s`` and ``c``.
    """
    t = q.shape[0]
    s = np.zeros(t)
    passive = np.zeros(t, dtype=bool)
    scale = max(float(np.max(np.abs(np.diag(q)))) if t else 0.0, 1e-300)
    iters = 0

    def solve_on(mask: np.ndarray) -> np.ndarray:
        z = np.zeros(t)
        idx = np.flatnonzero(mask)
        sub = q[np.ix_(idx, idx)]
        try:
            z[idx] = np.linalg.solve(sub, c[idx])
        except np.linalg.LinAlgError:
            z[idx] = np.linalg.lstsq(sub, c[idx], rcond=None)[0]
        return z

    while iters < max_iter:
        iters += 1
        r = c - q @ s
        thresh = tol * scale * (1.0 + float(np.abs(s).max()) + float(np.abs(c).max()) / scale)
        cand = np.where(passive, -np.inf, r)
        j = int(np.argmax(cand))
        if passive.all() or cand[j] <= thresh:
            break
        passive[j] = True
        while iters < max_iter:
            iters += 1
            z = solve_on(passive)
            bad = passive & (z <= 0)
            if not bad.any():
                s = z
                break
            idx = np.flatnonzero(bad)
            ratio = s[idx] / np.maximum(s[idx] - z[idx], 1e-300)
            step = float(np.min(ratio))
            s = s + step * (z - s)
            passive[idx[int(np.argmin(ratio))]] = False  # the blocking variable leaves
            passive &= s > 0
            s[~passive] = 0.0
    return np.maximum(s, 0.0)


def dual_cone_weights(k: np.ndarray, u: np.ndarray, max_iter: int = 500) -> np.ndarray:
    """``v = argmin_{v >= u} v^T K v``: ``G^T v`` is the projection of ``G^T u`` onto the dual
    cone ``{x : G x >= 0}`` (Quinton & Rey 2024, Proposition 1), for a PSD Gram matrix ``K``."""
    s = nonneg_quadratic(k, -(k @ u), max_iter)
    return u + s


def upgrad_weights(
    k: np.ndarray, pref: np.ndarray, norm_eps: float = 0.0, reg_eps: float = 1e-4,
    max_iter: int = 500,
) -> np.ndarray:
    """UPGrad's coefficients ``sum_i v(pref_i e_i)`` on the normalised, regularised Gram."""
    t = k.shape[0]
    trace = float(np.trace(k))
    if not np.isfinite(trace) or trace <= norm_eps or trace <= 0:
        kn = np.zeros_like(k)
    else:
        kn = k / trace
    kn = (kn + kn.T) / 2 + reg_eps * np.eye(t)
    w = np.zeros(t)
    for i in range(t):
        u = np.zeros(t)
        u[i] = pref[i]
        w += dual_cone_weights(kn, u, max_iter)
    return w


class UPGradWeighter(GramWeighter):
    """Sum of the projections of each task gradient onto the dual cone of all of them
    (Quinton & Rey 2024)."""

    Options = UPGradOptions
    options: UPGradOptions
    needs = Needs(grads="parameters")
    head_gradients = "own"

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        (host,) = to_host(k)
        t = self.num_tasks
        pref = np.ones(t) if self.options.sum_to == "tasks" else np.full(t, 1.0 / t)
        w = upgrad_weights(host, pref, self.options.norm_eps, self.options.reg_eps,
                           self.options.max_iter)
        if not np.all(np.isfinite(w)):
            w = pref
        return to_device(w, k)
