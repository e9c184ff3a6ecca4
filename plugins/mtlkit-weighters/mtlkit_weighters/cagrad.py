"""CAGrad: Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021 (arXiv 2110.14048).

With ``g_0`` the average gradient, CAGrad maximises the worst task's improvement within a ball
around ``g_0``: ``max_d min_i g_i . d`` s.t. ``||d - g_0|| <= c ||g_0||``. Its dual is

    w = argmin_{w in simplex} g_w . g_0 + c ||g_0|| ||g_w||,   g_w = sum_i w_i g_i,

and the update is ``d = g_0 + (c ||g_0|| / ||g_w||) g_w``, divided by ``1 + c^2`` (the reference
code's ``rescale=1``) and multiplied by T.

The factor T is our convention, on purpose: every weighter here is on the scale of the summed loss
``sum_i L_i`` (equal weighting's gradient is ``T g_0``), so the learning rates of equal weighting
carry over. The Nash-MTL authors' CAGrad does the same ("to match the sum loss"); LibMTL's CAGrad
returns the mean-scale ``d`` without the factor T: a learning rate ``lr`` there is ``lr / T``
here.

All of it is expressed through the T x T Gram matrix. For T = 2 the dual has a closed form,
computed on the device (no host sync, ``_solvers.cagrad_weights_2``); for T > 2 it is solved on
the host (an exact reduction to a few warm-started min-norm problems,
``_solvers.cagrad_weights``) after ONE copy of the Gram matrix to the CPU per step. In both cases
``Update.weights`` are the coefficients of the raw gradients, ``T (1/T + lambda w) / (1 + c^2)``
with ``lambda = c ||g_0|| / ||g_w||``. ``c = 0`` is equal weighting; the paper uses ``c = 0.4``
(NYUv2, CityScapes).

Heads: each task's own loss gradient, unscaled (``head_gradients = "own"``): the reference code
backpropagates every task's plain loss into its decoder and replaces the shared gradient only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mtlkit.weighter import Needs, WeighterInput
from mtlkit_weighters._common import GramWeighter, UpdateEveryOptions
from mtlkit_weighters._solvers import cagrad_weights, cagrad_weights_2, to_device, to_host


class CAGradOptions(UpdateEveryOptions):
    c: float = Field(0.4, ge=0.0)
    """Radius of the ball around the average gradient, relative to its norm."""
    rescale: Literal[0, 1, 2] = 1
    """Divide the update by 1 (0), ``1 + c^2`` (1, the reference default) or ``1 + c`` (2)."""
    max_iter: int = Field(100, gt=0)
    """Outer iterations of the T > 2 dual solver."""


class CAGradWeighter(GramWeighter):
    """Conflict-averse update around the average gradient (Liu et al. 2021)."""

    Options = CAGradOptions
    options: CAGradOptions
    needs = Needs(grads="parameters")
    head_gradients = "own"

    def coefficients(self, k: Tensor, w: Tensor) -> Tensor:
        """Coefficients of the raw gradients in the update, from the Gram matrix and dual ``w``."""
        t = k.shape[0]
        c = self.options.c
        b = torch.full((t,), 1.0 / t, dtype=k.dtype, device=k.device)
        w = w.to(k.dtype)
        g0_norm = (b @ k @ b).clamp_min(0).sqrt()
        gw_norm = (w @ k @ w).clamp_min(0).sqrt()
        tiny = torch.finfo(k.dtype).tiny
        lam = c * g0_norm / torch.where(gw_norm > 0, gw_norm, torch.full_like(gw_norm, tiny))
        lam = torch.where(gw_norm > 0, lam, torch.zeros_like(lam))
        div = {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[self.options.rescale]
        return t * (b + lam * w) / div

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        k64 = k if k.device.type == "mps" else k.double()
        if self.num_tasks == 2:
            w = cagrad_weights_2(k64, self.options.c)
        else:
            (host,) = to_host(k64)
            w = to_device(cagrad_weights(host, self.options.c, self.options.max_iter), k)
        return self.coefficients(k64, w).float()
