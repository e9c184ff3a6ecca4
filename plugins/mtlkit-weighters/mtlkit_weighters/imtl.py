"""IMTL: Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.

IMTL-G (gradient balance) picks the combination ``g = sum_i a_i g_i`` (``sum a_i = 1``) whose
projections onto every unit gradient ``u_i = g_i / ||g_i||`` are equal. With
``D = [g_1 - g_i]_{i>=2}`` and ``U = [u_1 - u_i]_{i>=2}``:

    a_{2..T} = g_1 U^T (D U^T)^{-1},   a_1 = 1 - sum_{i>=2} a_i.

IMTL-L (loss balance, ``loss_balance: true``, the paper's hybrid "IMTL") trains a scale ``s_i``
per task on ``e^{s_i} L_i - s_i`` (losses constant; optimum ``e^{s_i} L_i = 1``) and runs IMTL-G on
the scaled gradients ``e^{s_i} g_i``; the raw-gradient weights are then ``a_i e^{s_i}``. The
``s_i`` are parameters in their own param group (``Update.loss`` only involves them).

Everything comes from the T x T Gram matrix (``g_a . u_b = K_ab / sqrt(K_bb)``); the
(T-1) x (T-1) system is solved on the device with ``torch.linalg.solve_ex`` (no host sync); a
singular system (e.g. identical gradients) falls back to ``a = 1/T``. ``rep: true`` uses the
representation gradients, as the paper does for efficiency.

Deliberate difference: with ``rep: true`` the Gram matrix is that of the FULL representation
gradients ``[B, F]`` (``K_ij = sum_b z_ib . z_jb``), as MGDA-UB and the Aligned-MTL authors do;
LibMTL's ``rep_grad`` sums them over the batch first (``[F]``), which drops every per-sample
difference between the tasks and gives other weights as soon as B > 1 (two samples,
``dL/dZ`` = [[1, 0.2], [0.1, 0.9]] and [[0.3, 1], [0.8, -0.1]]: a = [0.492, 0.508] here,
[0.477, 0.523] summed). ``rep_batch: sum`` is LibMTL's form.

For T >= 3 the coefficients ``a`` may be negative (the equal-projection point can lie outside the
cone of the gradients): legitimate for the shared combination, never for a head.

Heads: their own loss gradient times ``e^{s_i}`` with IMTL-L (the decoders train on the scaled
loss ``e^{s_i} L_i - s_i``, as in the paper and LibMTL), unscaled with IMTL-G alone
(``loss_balance: false``); never the shared coefficient ``a_i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from mtlkit.weighter import Needs, Update, WeighterInput
from mtlkit_weighters._common import GramWeighter, RepOptions, own_param_groups
from mtlkit_weighters._solvers import combine_input_rows


class IMTLOptions(RepOptions):
    loss_balance: bool = True
    """Also learn the IMTL-L loss scales (the hybrid IMTL); false: IMTL-G alone."""
    lr: float | None = Field(None, gt=0.0)
    """Learning rate of the loss scales' param group (None: the main optimizer's)."""


def imtl_g(k: Tensor) -> Tensor:
    """IMTL-G weights ``a`` (``sum a = 1``) from the Gram matrix ``k`` (float64 recommended)."""
    t = k.shape[0]
    tiny = torch.finfo(k.dtype).tiny
    norms = k.diagonal().clamp_min(0).sqrt().clamp_min(tiny)
    gu = k / norms[None, :]  # gu[a, b] = g_a . u_b
    # (g_1 - g_i) . (u_1 - u_j) for i, j >= 2, and g_1 . (u_1 - u_j)
    du = gu[0, 0] - gu[0, 1:][None, :] - gu[1:, 0][:, None] + gu[1:, 1:]
    first = gu[0, 0] - gu[0, 1:]
    # a_rest^T (D U^T) = first  <=>  (D U^T)^T a_rest = first
    rest, info = torch.linalg.solve_ex(du.T, first)
    a = torch.cat([(1 - rest.sum()).reshape(1), rest])
    ok = (info == 0) & torch.isfinite(a).all()
    return torch.where(ok, a, torch.full_like(a, 1.0 / t))


class IMTLWeighter(GramWeighter):
    """Impartial gradient (and loss) balancing (Liu et al. 2021)."""

    Options = IMTLOptions
    options: IMTLOptions
    needs = Needs(grads="parameters")
    head_gradients = "own"

    def __init__(self, task_names: Sequence[str], options: IMTLOptions | None = None) -> None:
        super().__init__(task_names, options)
        self.loss_scale = nn.Parameter(
            torch.zeros(self.num_tasks), requires_grad=self.options.loss_balance
        )

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        k64 = k if k.device.type == "mps" else k.double()
        if not self.options.loss_balance:
            return imtl_g(k64).float()
        e = self.loss_scale.detach().exp().to(k64.dtype)
        return (imtl_g(e[:, None] * k64 * e[None, :]) * e).float()

    def head_weights_for(self, w: Tensor) -> Tensor:
        """``e^{s_i}`` with IMTL-L (the heads' scaled losses), ones with IMTL-G alone."""
        if not self.options.loss_balance:
            return torch.ones_like(w)
        return self.loss_scale.detach().exp().to(w.dtype)

    def combine(self, inp: WeighterInput) -> Update:
        grads = inp.grads
        if grads is None:
            raise ValueError("imtl needs per-task gradients (needs.grads)")
        if self._between_updates(inp.step):  # update_every: the last weights in between
            w = self.record(self.weights.to(grads.device))
        else:
            w = self.record(self.solve(self.gram_of(grads), inp) if self.num_tasks > 1
                            else torch.ones(1, device=grads.device))
        loss = None
        if self.options.loss_balance:
            s = self.loss_scale
            loss = (s.exp() * inp.losses.detach().to(s.dtype) - s).sum()
        return Update(weights=w, grad=combine_input_rows(w, grads, inp.grads_scratch), loss=loss,
                      head_weights=self.head_weights_for(w))

    def param_groups(self) -> list[dict[str, Any]]:
        return own_param_groups(self, self.options.lr)
