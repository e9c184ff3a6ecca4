"""GradVac: Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021 (arXiv 2010.05874).

Each ordered task pair (i, j) keeps a target cosine ``phi_ij^T`` (an EMA, starting at 0). For
each task i, over the other tasks j in random order, with ``g_i'`` the gradient of task i as
adjusted so far and ``g_j`` the original gradient of task j:

    phi = cos(g_i', g_j)
    if phi < phi^T:
        g_i' <- g_i' + a g_j,
        a = ||g_i'|| (phi^T sqrt(1 - phi^2) - phi sqrt(1 - phi^T^2)) / (||g_j|| sqrt(1 - phi^T^2))
    phi^T <- (1 - beta) phi^T + beta phi

after which ``cos(g_i', g_j) = phi^T`` (the target before its update); the shared update is
``sum_i g_i'``. The EMA runs at every visit of a pair (``ema: always``, the default): the paper's
``phi^T(t) = (1 - beta) phi^T(t-1) + beta phi(t)``, LibMTL's current ``GradVac.py`` and torchjd's
``GradVac``; the targets rise with the cosines observed. ``ema: on_adjust`` is LibMTL 1.1.5, whose
update sits inside the ``if``: a target then moves only when its pair is adjusted, so starting at
0 it never rises above 0 (two steps of g = [(1, 0), (0.5, 0.866)] then [(1, 0), (0.1, 0.995)] give
the step-1 update [1.2726, 1.1511] with ``always``, the unadjusted [1.1, 0.995] with
``on_adjust``). ``beta`` = 0.5 is LibMTL's ``GradVac_beta``.

Whole model only: the engine hands one flat ``[T, D]`` buffer over the shared parameters and
``WeighterSetup`` does not give the parameter sizes, so LibMTL's per-layer / per-matrix groups
(``GradVac_group_type`` 1 and 2) are not offered; this is its default ``group_type`` 0.

As in PCGrad, every adjusted gradient is a row of a T x T coefficient matrix ``C``
(``g_i' = sum_j C_ij g_j``) and every dot product comes from the Gram matrix K, all T tasks'
i-loops running together on the device (O(T^3), no host sync, no D-sized copy); the update is
``(1^T C) G``. ``Update.weights = 1^T C``. The targets are a ``[T, T]`` buffer (checkpointed).

Cost: T trunk backwards (parameter gradients), one Gram product. Needs: parameter gradients, the
step (random orders seeded by ``(seed, step)``; ``order: fixed`` uses index order).
``update_every: k`` (as for the other Gram methods) reuses the last coefficients on the steps in
between, where the targets are not updated.

Heads: each task's own loss gradient, unscaled (``head_gradients = "own"``): LibMTL's GradVac
backpropagates every task's plain loss into its decoder and replaces the shared gradient only.

Deliberate difference: the cosine and ``a`` are computed without LibMTL's ``+ 1e-8`` in the
denominators (which is not small next to products of 1e-4-scale norms); a pair with a zero
gradient is left alone (cosine 0, no adjustment), and a target at +-1 adjusts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mtlkit.weighter import Needs, WeighterInput
from mtlkit_weighters._common import GramWeighter, UpdateEveryOptions, visit_orders


class GradVacOptions(UpdateEveryOptions):
    beta: float = Field(0.5, ge=0.0, le=1.0)
    """EMA rate of the target cosines (LibMTL's ``GradVac_beta``, default 0.5)."""
    ema: Literal["always", "on_adjust"] = "always"
    """Update a pair's target at every visit (the paper, LibMTL's current code, torchjd) or only
    when the pair was adjusted (LibMTL 1.1.5)."""
    order: Literal["random", "fixed"] = "random"
    """Order in which each task visits the others."""
    seed: int = 0
    """Seed of the random orders (combined with the global step)."""


def gradvac_step(
    k: Tensor, order: Tensor, target: Tensor, beta: float, ema: str = "always"
) -> tuple[Tensor, Tensor]:
    """One GradVac step in Gram space: ``(C, new_target)``.

    ``k``: the T x T Gram matrix; ``order[i]``: the T-1 other tasks in task i's visiting order;
    ``target``: the ``[T, T]`` target cosines (same dtype as ``k``; not modified).
    """
    t = k.shape[0]
    eye = torch.eye(t, dtype=k.dtype, device=k.device)
    coef = eye.clone()
    target = target.clone()
    rows = torch.arange(t, device=k.device)
    norm_j_all = k.diagonal().clamp_min(0).sqrt()
    zero = torch.zeros(t, dtype=k.dtype, device=k.device)
    for r in range(order.shape[1]):
        j = order[:, r]
        ck = coef @ k
        dots = ck[rows, j]  # g_i' . g_j
        norm_i = (ck * coef).sum(1).clamp_min(0).sqrt()  # ||g_i'||
        norm_j = norm_j_all[j]
        denom = norm_i * norm_j
        ok = denom > 0
        phi = torch.where(ok, dots / torch.where(ok, denom, torch.ones_like(denom)), zero)
        phi = phi.clamp(-1.0, 1.0)
        tgt = target[rows, j]
        below = ok & (phi < tgt)
        root_t = (1 - tgt * tgt).clamp_min(0).sqrt()
        root = (1 - phi * phi).clamp_min(0).sqrt()
        move = below & (root_t > 0)
        safe = torch.where(move, norm_j * root_t, torch.ones_like(root_t))
        a = torch.where(move, norm_i * (tgt * root - phi * root_t) / safe, zero)
        coef = coef + a[:, None] * eye[j]
        update = below if ema == "on_adjust" else ok
        target[rows, j] = torch.where(update, (1 - beta) * tgt + beta * phi, tgt)
    return coef, target


class GradVacWeighter(GramWeighter):
    """Adjust each gradient towards an EMA target cosine with every other (Wang et al. 2021)."""

    Options = GradVacOptions
    options: GradVacOptions
    needs = Needs(grads="parameters", counters=True)
    conformance_traits = {"equivariant_max_tasks": 2}
    """For ``mtlkit.testing``: the visiting order matters for T >= 3; with T = 2 each task has a
    single other task and the method is order-free."""
    head_gradients = "own"

    target: Tensor

    def __init__(self, task_names: Sequence[str], options: GradVacOptions | None = None) -> None:
        super().__init__(task_names, options)
        t = self.num_tasks
        self.register_buffer("target", torch.zeros(t, t))

    def orders(self, step: int | None) -> Tensor:
        """``[T, T-1]``: the other tasks in the order each task visits them at ``step``."""
        o = self.options
        return visit_orders(self.num_tasks, o.order == "random", "gradvac", o.seed, step)

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        if self.options.order == "random" and inp.step is None:
            raise ValueError("gradvac with random orders needs the step counter (needs.counters)")
        order = self.orders(inp.step).to(k.device, non_blocking=True)
        k64 = k if k.device.type == "mps" else k.double()
        coef, target = gradvac_step(k64, order, self.target.to(k64.dtype), self.options.beta,
                                    self.options.ema)
        self.target.copy_(target.to(self.target.dtype))
        return coef.sum(dim=0).float()
