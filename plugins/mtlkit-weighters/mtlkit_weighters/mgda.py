"""MGDA / MGDA-UB: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018 (arXiv 1810.04650); the multiple-gradient descent algorithm of Desideri (2012).

The update is the min-norm point of the convex hull of the task gradients,

    a = argmin_{a in simplex} || sum_i a_i g_i ||^2,

which is a common descent direction, and zero exactly at Pareto-stationary points. ``rep: true``
is MGDA-UB: the ``g_i`` are the gradients w.r.t. the shared representation (one trunk backward
plus T head backwards) rather than the shared parameters (T trunk backwards).

Only the T x T Gram matrix is used. T = 2 has the closed form
``a_1 = clip((K22 - K12) / (K11 + K22 - 2 K12), 0, 1)``, computed on the device (no host sync);
T > 2 runs Wolfe's exact nearest-point algorithm (the paper's code uses Frank-Wolfe) on the host
after ONE copy of the T x T Gram matrix to the CPU per step.

``normalize`` rescales each gradient first (the paper's code: ``l2``, ``loss``, ``loss+``): the
direction is the normalised problem's min-norm point, re-expressed as a convex combination of the
raw gradients (weights ``a_i / n_i``, renormalised). By default the weights are scaled to
sum to T, like equal weighting (and the Nash-MTL/FAMO benchmark code); ``sum_to: one`` keeps the
paper's simplex weights.

Conventions that differ from well-known code, on purpose:

- The factor T (``sum_to: tasks``): Sener & Koltun's code and LibMTL step on the simplex
  combination itself (sum 1); here every weighter is on the scale of the summed loss, so the
  learning rates of equal weighting carry over (a learning rate ``lr`` there is ``lr / T`` here).
- MGDA-UB (``rep: true``) solves on the gradients w.r.t. the FULL representation ``[B, F]``,
  i.e. ``K_ij = sum_b z_ib . z_jb`` as in the paper's bound; LibMTL's ``rep_grad`` sums the
  representation gradients over the batch first (``[F]``), which drops every cross-sample
  difference between the tasks' gradients; ``rep_batch: sum`` is LibMTL's form.

Heads: ``w_i`` times their own loss gradient (``head_gradients = "weighted"``), as Sener &
Koltun's code backpropagates ``sum_t scale[t] * loss_t`` through the decoders too; ``w >= 0``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mtlkit.weighter import Needs, WeighterInput
from mtlkit_weighters._common import GramWeighter, RepOptions
from mtlkit_weighters._solvers import min_norm_2, min_norm_simplex, to_device, to_host


class MGDAOptions(RepOptions):
    normalize: Literal["none", "l2", "loss", "loss+"] = "none"
    """Gradient normalisation before the min-norm problem (none: the plain MGDA direction)."""
    sum_to: Literal["tasks", "one"] = "tasks"
    """Scale of the weights: sum T (the scale of equal weighting) or 1 (the simplex)."""
    max_iter: int = 250
    """Iteration cap of the T > 2 solver (Wolfe's nearest-point algorithm)."""


def normalizers(k: Tensor, losses: Tensor, mode: str) -> Tensor:
    """Per-task divisors ``n_i`` (gradient ``g_i / n_i``), from the Gram diagonal and losses."""
    tiny = torch.finfo(k.dtype).tiny
    if mode == "none":
        return torch.ones_like(k[0])
    norms = k.diagonal().clamp_min(0).sqrt()
    loss = losses.detach().to(k.dtype).abs()
    if mode == "l2":
        out = norms
    elif mode == "loss":
        out = loss
    else:
        out = norms * loss
    return out.clamp_min(tiny)


class MGDAWeighter(GramWeighter):
    """Min-norm convex combination of the task gradients (Sener & Koltun 2018)."""

    Options = MGDAOptions
    options: MGDAOptions
    needs = Needs(grads="parameters")
    head_gradients = "weighted"

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        n = normalizers(k, inp.losses, self.options.normalize)
        kn = k / (n[:, None] * n[None, :])
        if self.num_tasks == 2:
            a = min_norm_2(kn)
        else:
            (host,) = to_host(kn)
            a = to_device(min_norm_simplex(host, self.options.max_iter), k).to(k.dtype)
        w = a / n
        if self.options.normalize != "none":
            w = w / w.sum()  # a point of the simplex again, in raw-gradient coordinates
        scale = float(self.num_tasks) if self.options.sum_to == "tasks" else 1.0
        return (scale * w).float()
