"""PCGrad: Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning",
NeurIPS 2020 (arXiv 2001.06782).

For each task i, over the other tasks j in random order: if ``g_i . g_j < 0`` then
``g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j`` (``g_j`` the original, unprojected gradient); the
shared update is the sum of the projected gradients.

Every projected gradient stays in the span of the original ones, so it is tracked as a row of a
T x T coefficient matrix ``C`` (``g_i^pc = sum_j C_ij g_j``) and every dot product comes from the
Gram matrix: ``g_i^pc . g_j = (C K)_ij``. The whole surgery is O(T^3) on T x T tensors on the
device (no host sync, no copy of the [T, D] buffer), and the update is ``(1^T C) G``: one
``[T] @ [T, D]`` product. ``Update.weights = 1^T C`` (the coefficient of each raw gradient; all
ones when nothing conflicts).

Heads: each task's own loss gradient, unscaled (``head_gradients = "own"``): the reference code
(the authors' and LibMTL's) backpropagates every task's plain loss into its decoder and projects
the shared gradients only.

The random orders are drawn from a generator seeded by ``(seed, step)`` (``needs.counters``), so
a resumed run draws the same orders; ``order: fixed`` uses index order instead.

Deliberate difference: the projection divides by ``||g_j||^2`` exactly, as the paper, the authors'
TF code and torchjd do; LibMTL's current ``PCGrad.py`` divides by ``||g_j||^2 + 1e-8``, which is
not small next to gradients of scale 1e-4: ``G = 1e-4 [[1, 1, 1], [-1, 1, -1]]`` (``||g_j||^2 =
3e-8``) is projected by 1/3 here and by 1/4 there, 25% less, leaving a residual conflict
(update ``[0, 2.67, 0] 1e-4`` against ``[0, 2.5, 0] 1e-4``). ``eps: 1e-8`` reproduces LibMTL.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mtlkit.weighter import Needs, WeighterInput
from mtlkit_weighters._common import GramWeighter, UpdateEveryOptions, visit_orders


class PCGradOptions(UpdateEveryOptions):
    order: Literal["random", "fixed"] = "random"
    """Order in which each task projects against the others."""
    seed: int = 0
    """Seed of the random orders (combined with the global step)."""
    eps: float = Field(0.0, ge=0.0)
    """Added to ``||g_j||^2`` in the projection: 0 is the paper's exact projection; LibMTL's
    current code uses 1e-8, which projects gradients of scale 1e-4 by a quarter less."""


def pcgrad_coefficients(k: Tensor, order: Tensor, eps: float = 0.0) -> Tensor:
    """The T x T matrix ``C`` with ``g_i^pc = sum_j C_ij g_j``.

    ``k`` is the Gram matrix; ``order[i]`` lists the T-1 other tasks in the order task i visits
    them; ``eps`` is added to each ``||g_j||^2`` (LibMTL's 1e-8; 0: the exact projection).
    """
    t = k.shape[0]
    eye = torch.eye(t, dtype=k.dtype, device=k.device)
    coef = eye.clone()
    rows = torch.arange(t, device=k.device)
    sq = k.diagonal() + eps
    tiny = torch.finfo(k.dtype).tiny
    for r in range(order.shape[1]):
        j = order[:, r]
        dots = (coef @ k)[rows, j]  # g_i^pc . g_j
        sq_j = sq[j]
        scale = torch.where(
            (dots < 0) & (sq_j > tiny), dots / sq_j.clamp_min(tiny), torch.zeros_like(dots)
        )
        coef = coef - scale[:, None] * eye[j]
    return coef


class PCGradWeighter(GramWeighter):
    """Project each gradient off the conflicting others, then sum (Yu et al. 2020)."""

    Options = PCGradOptions
    options: PCGradOptions
    needs = Needs(grads="parameters", counters=True)
    conformance_traits = {"equivariant_max_tasks": 2}
    """For ``mtlkit.testing``: the projection order matters for T >= 3 when gradients conflict;
    with T = 2 each task has a single other task and the method is order-free."""
    head_gradients = "own"

    def orders(self, step: int | None) -> Tensor:
        """``[T, T-1]``: the other tasks in the order each task visits them at ``step``."""
        o = self.options
        return visit_orders(self.num_tasks, o.order == "random", "pcgrad", o.seed, step)

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        if self.options.order == "random" and inp.step is None:
            raise ValueError("pcgrad with random orders needs the step counter (needs.counters)")
        order = self.orders(inp.step).to(k.device, non_blocking=True)
        coef = pcgrad_coefficients(k if k.device.type == "mps" else k.double(), order,
                                   self.options.eps)
        return coef.sum(dim=0).float()
