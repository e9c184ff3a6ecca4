"""ConFIG: Liu, Chu & Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
Networks", ICLR 2025 (arXiv 2408.11104, 2024). Registered as ``weighter: {name: config}``; the
module is named for what the method does, so that it does not read as configuration.

With ``u_i = g_i / ||g_i||`` the unit task gradients (rows of U), the conflict-free direction is
the minimum-norm ``d`` with the same projection on every ``u_i``,

    d = U^+ 1,        g_c = L d / ||d||,

and the length ``L`` (the reference's ``ProjectionLength``, the default) is the sum of the
projections of the raw gradients on the direction, ``L = sum_i g_i . d / ||d||``. So every task
gradient has a positive projection on ``g_c``, the same for every unit gradient. ``length``
offers the reference's other length models, ``L = tau sum_i u_i . d / ||d||`` with ``tau`` the
``min``, ``max``, ``harmonic``, ``arithmetic`` or ``geometric`` mean of the gradient norms
(``TrackMinimum`` ... ``TrackGeometricAverage``). When the gradients are linearly independent
the direction is IMTL-G's (Liu et al., ICLR 2021: equal projections on every unit gradient, within
their span); the methods differ in the length and in that ``d`` always has positive projections.

Everything is expressed through the Gram matrix ``K = G G^T``: with ``N = diag(||g_i||)``,
``K_u = N^-1 K N^-1`` and ``U^+ = U^T K_u^+``, so ``d = U^T a`` with ``a = K_u^+ 1``,
``||d||^2 = a^T K_u a``, ``u_i . d = (K_u a)_i``, and the update is ``sum_i c_i g_i`` with
``c_i = L a_i / (||d|| ||g_i||)``: ``Update.weights = c`` (may be negative). For T = 2 ``a`` has a
closed form (``a = (1, 1)``: ``d`` bisects ``u_1`` and ``u_2``; the reference's
``ConFIG_update_double``, its default for two losses, gives the same direction), computed on the
device with no host sync; for T > 2 ``K_u^+`` and ``c`` come from a T x T eigendecomposition in
float64 on the host, after ONE copy of the Gram matrix to the CPU per step. Eigenvalues of
``K_u`` below ``T eps_float32`` times the largest are treated as zero (the Gram matrix carries
float32 precision; the reference's ``lstsq`` on U cuts singular values instead, so nearly dependent
gradients lose a direction here somewhat earlier, about at singular values of U below
``sqrt(T eps_float32)`` of the largest).

A zero task gradient is left out (``u_i = 0``, as the reference's ``nan_to_num``); opposite unit
gradients at T = 2 give a zero update.

Cost: T trunk backwards (parameter gradients), one Gram product, T x T work. Needs: parameter
gradients only (``update_every: k``, as for the other Gram methods, reuses the last coefficients on
the representation gradients in between).

Heads: each task's own loss gradient, unscaled (``head_gradients = "own"``): the authors' MTL code
(``experiments/MTL/methods/weight_methods.py``) sets the task-specific gradients from
``losses.sum()`` and replaces the shared gradient only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mtlkit.weighter import Needs, WeighterInput
from mtlkit_weighters._common import GramWeighter, UpdateEveryOptions
from mtlkit_weighters._solvers import to_device, to_host

Length = Literal["projection", "min", "max", "harmonic", "arithmetic", "geometric"]


class ConFIGOptions(UpdateEveryOptions):
    length: Length = "projection"
    """Length of the update: the sum of the gradients' projections on the direction
    (``projection``, the reference default), or ``tau`` times the sum of the unit gradients'
    projections with ``tau`` the min / max / harmonic / arithmetic / geometric mean norm."""


def unit_gram(k: Tensor) -> tuple[Tensor, Tensor]:
    """``(K_u, 1 / ||g_i||)`` with zero rows and entries for zero gradients."""
    norms = k.diagonal().clamp_min(0).sqrt()
    inv = torch.where(norms > 0, 1 / torch.where(norms > 0, norms, torch.ones_like(norms)),
                      torch.zeros_like(norms))
    return k * inv[:, None] * inv[None, :], inv


def unit_gram_pinv_ones(ku: np.ndarray) -> np.ndarray:
    """``K_u^+ 1`` (host, float64), eigenvalues below ``T eps_float32`` of the largest cut."""
    t = ku.shape[0]
    lam, v = np.linalg.eigh((ku + ku.T) / 2)
    top = float(lam.max(initial=0.0))
    if not np.isfinite(top) or top <= 0:
        return np.zeros(t)
    keep = lam > top * t * np.finfo(np.float32).eps
    v_r = v[:, keep]
    return v_r @ ((v_r.T @ np.ones(t)) / lam[keep])


def config_coefficients(k: Tensor, a: Tensor, length: str = "projection") -> Tensor:
    """The coefficients ``c`` of the raw gradients in ``g_c``, from ``K`` and ``a = K_u^+ 1``."""
    t = k.shape[0]
    ku, inv = unit_gram(k)
    a = a.to(k.dtype)
    kua = ku @ a
    dd = (a @ kua).clamp_min(0)
    ok = dd > 0
    dn = torch.where(ok, dd.sqrt(), torch.ones_like(dd))
    proj = kua / dn  # u_i . d / ||d||
    norms = k.diagonal().clamp_min(0).sqrt()
    if length == "projection":
        size = (norms * proj).sum()
    else:
        if length == "min":
            tau = norms.min()
        elif length == "max":
            tau = norms.max()
        elif length == "harmonic":
            tau = t / (1 / norms).sum()
        elif length == "arithmetic":
            tau = norms.mean()
        elif length == "geometric":
            tau = norms.log().mean().exp()
        else:
            raise ValueError(f"unknown ConFIG length {length!r}")
        size = tau * proj.sum()
    c = size * a * inv / dn
    return torch.where(ok & torch.isfinite(c).all(), c, torch.zeros_like(c))


class ConFIGWeighter(GramWeighter):
    """The conflict-free direction U^+ 1, scaled by the sum of projections (Liu et al. 2024)."""

    Options = ConFIGOptions
    options: ConFIGOptions
    needs = Needs(grads="parameters")
    head_gradients = "own"

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        k64 = k if k.device.type == "mps" else k.double()
        if self.num_tasks == 2:
            a = torch.ones(2, dtype=k64.dtype, device=k64.device)
            return config_coefficients(k64, a, self.options.length).float()
        (host,) = to_host(k64)
        k_cpu = torch.from_numpy(host)
        a = torch.from_numpy(unit_gram_pinv_ones(unit_gram(k_cpu)[0].numpy()))
        return to_device(config_coefficients(k_cpu, a, self.options.length).numpy(), k)
