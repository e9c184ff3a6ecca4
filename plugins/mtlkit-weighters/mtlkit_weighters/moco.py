"""MoCo: Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
Multi-objective Learning: A Provably Convergent Approach", ICLR 2023 (arXiv 2210.12624);
reference: LibMTL's ``MoCo`` (from the authors' code).

Stochastic MGDA is biased; MoCo tracks each task's gradient with a moving estimate ``y_i`` and
runs MGDA's dual on the estimates by one projected-gradient step per training step. At step
``t = 1, 2, ...`` (LibMTL's code, which first rescales each gradient to its loss,
``h_i = L_i g_i / (||g_i|| + 1e-8)``):

    y_i    <- y_i - beta_t (y_i - h_i),                beta_t  = beta / t^beta_sigma
    lambda <- P(lambda - gamma_t (Y Y^T + rho I) lambda), gamma_t = gamma / t^gamma_sigma
    d       = Y^T lambda

with ``y = 0``, ``lambda = 1/T`` at the start and ``P`` LibMTL's softmax (``projection:
softmax``) or the paper's Euclidean projection onto the simplex (``projection: simplex``).
``Update.weights`` are ``lambda`` (times T, see ``sum_to``); the update is a combination of the
TRACKED gradients ``y``, not of this step's raw ones.

Cost: the T gradient backwards, one pass over the ``[T, D]`` buffer to fold it into ``Y`` (in
place, ``addcmul_``), one Gram product of ``Y``, one combination; no host sync. Memory: ``Y`` is
a persistent ``[T, D]`` buffer (sized in ``setup``; round-trips through ``state_dict``), so MoCo
holds 2 T D floats like DB-MTL (2023). ``y``, ``lambda`` and the step count are buffers: resume
is exact.

Heads: their own loss gradient, unscaled (``Update.head_weights`` ones): LibMTL computes the
per-task gradients with one plain backward per loss, which accumulates each task's own gradient
into its decoder, and only replaces the shared parameters' gradient.

Deliberate deviation: ``sum_to: tasks`` (default) multiplies ``lambda`` (and the update) by T,
the scale of equal weighting as the other weighters here; ``sum_to: one`` is the reference's
simplex scale. ``lambda`` itself stays on the simplex.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput, WeighterSetup
from mtlkit_weighters._solvers import combine_rows, gram


class MoCoOptions(Options):
    beta: float = Field(0.5, gt=0.0, le=1.0)
    """Step of the gradient tracking at t = 1 (LibMTL's ``MoCo_beta``)."""
    beta_sigma: float = Field(0.5, ge=0.0)
    """Decay exponent of the tracking step, ``beta / t^beta_sigma``."""
    gamma: float = Field(0.1, gt=0.0)
    """Step of the lambda update at t = 1 (``MoCo_gamma``)."""
    gamma_sigma: float = Field(0.5, ge=0.0)
    """Decay exponent of the lambda step, ``gamma / t^gamma_sigma``."""
    rho: float = Field(0.0, ge=0.0)
    """L2 regularisation of lambda's update (``MoCo_rho``)."""
    projection: Literal["softmax", "simplex"] = "softmax"
    """Back onto the simplex: the reference code's softmax, or the paper's Euclidean projection."""
    sum_to: Literal["tasks", "one"] = "tasks"
    """Scale of the weights and the update: T (equal weighting's scale) or 1 (the reference)."""


def project_simplex_torch(v: Tensor) -> Tensor:
    """Euclidean projection onto ``{x >= 0, sum x = 1}`` on the device, no host sync."""
    u = torch.sort(v, descending=True).values
    css = torch.cumsum(u, 0) - 1.0
    idx = torch.arange(1, v.numel() + 1, device=v.device, dtype=v.dtype)
    k = (u - css / idx > 0).sum().clamp_min(1)  # the condition holds on a prefix
    theta = css.gather(0, (k - 1).view(1)) / k.to(v.dtype)
    return (v - theta).clamp_min(0.0)


class MoCoWeighter(Weighter):
    """MGDA on tracked gradient estimates (Fernando et al. 2023)."""

    Options = MoCoOptions
    options: MoCoOptions
    needs = Needs(grads="parameters")

    def __init__(self, task_names: Sequence[str], options: MoCoOptions | None = None) -> None:
        super().__init__(task_names, options)
        t = self.num_tasks
        self.register_buffer("y", torch.zeros(t, 0))
        self.register_buffer("lambd", torch.full((t,), 1.0 / t))
        self.register_buffer("num_steps", torch.zeros(()))

    def setup(self, info: WeighterSetup) -> None:
        self.y = torch.zeros(self.num_tasks, info.shared_numel, device=info.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "y")
        if saved is not None and saved.shape != self.y.shape:
            self.y = torch.zeros_like(saved, device=self.y.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def combine(self, inp: WeighterInput) -> Update:
        grads = inp.grads
        if grads is None:
            raise ValueError("moco needs parameter gradients (needs.grads)")
        o = self.options
        flat = grads.reshape(grads.shape[0], -1)
        if self.y.shape != flat.shape or self.y.device != flat.device:
            self.y = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        y = self.y
        self.num_steps.add_(1.0)
        step = self.num_steps
        beta = o.beta / step.pow(o.beta_sigma)
        gamma = o.gamma / step.pow(o.gamma_sigma)
        # h_i = L_i g_i / (||g_i|| + 1e-8);  y <- (1 - beta) y + beta h, in place
        norms = flat.norm(dim=1).to(y.dtype)
        scale = inp.losses.detach().to(y.dtype) / (norms + 1e-8)
        y.mul_(1 - beta).addcmul_(flat.to(y.dtype), (beta * scale)[:, None])
        k = gram(y).to(self.lambd.dtype)
        lam = self.lambd
        moved = lam - gamma * (k @ lam + o.rho * lam)
        if o.projection == "softmax":
            lam = torch.softmax(moved, dim=0)
        else:
            lam = project_simplex_torch(moved)
        self.lambd.copy_(lam)
        coef = lam * (float(self.num_tasks) if o.sum_to == "tasks" else 1.0)
        # the gradients are folded into y by now: their buffer, if scratch, holds the result
        out = flat[0] if inp.grads_scratch and flat.dtype == y.dtype else None
        g = combine_rows(coef, y, out).to(flat.dtype).view(grads.shape[1:])
        return Update(weights=self.record(coef), grad=g, head_weights=torch.ones_like(coef))
