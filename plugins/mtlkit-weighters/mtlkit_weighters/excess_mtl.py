"""ExcessMTL: He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust Multi-Task Learning with
Excess Risks", ICML 2024 (arXiv 2402.02009).

Tasks are weighted by their estimated excess risk (the loss above what the task could reach)
rather than by their loss, so a task with high irreducible noise does not take over. The excess
risk of task i is estimated from its gradient ``g_i`` (w.r.t. the shared parameters) and a
diagonal curvature estimate, the AdaGrad accumulator of its squared gradients:

    S_i <- S_i + g_i * g_i,        e_i = g_i^T diag(1 / sqrt(S_i + eps)) g_i.

The first step records ``e^0 = e`` and keeps the weights at 1; every later step updates them by
exponentiated gradient ascent on the excess risks relative to that first estimate,

    lambda_i <- lambda_i exp(eta e_i / e^0_i),   lambda <- T lambda / sum_j lambda_j,

and the shared update is ``sum_i lambda_i g_i`` (``Update.weights = lambda``, > 0, summing to T).

Reference: LibMTL ``LibMTL/weighting/ExcessMTL.py`` (Lin & Zhang, "LibMTL: A Python Library for
Multi-Task Learning", JMLR 2023; from the authors' repository ``yifei-he/ExcessMTL``), with its
default ``robust_step_size = 1e-2`` and ``1e-7`` inside the square root; it uses the per-task
gradients w.r.t. the shared (encoder) parameters, as here (``needs.grads = "parameters"``), then
back-propagates ``sum_i lambda_i L_i`` through everything.

Heads: ``lambda_i`` times their own loss gradient (the reference's decoders receive the gradient
of ``sum_i lambda_i L_i``; ``lambda > 0``); ``Update.head_weights`` is left None.

Cost: T backwards (the parameter-gradient path) and a persistent ``[T, D]`` accumulator ``S``
(sized in ``setup``, a buffer, so resume is exact; updated in place), so ExcessMTL holds 2 T D
floats like DB-MTL; O(T D) per step, no host sync.

Deliberate differences from the reference (none changes a step it computes finitely):

- the renormalised multiplicative update is computed as ``T softmax(log lambda + eta e / e^0)``
  (the same numbers, but no overflow of ``exp`` for a large ratio);
- a task whose first estimate ``e^0_i`` is 0 (no gradient on the shared parameters at the first
  step) makes the reference divide by zero (NaN weights from then on); here its reference value is
  the first positive estimate it later has, and until then its ratio is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from mtlkit.weighter import Needs, Update, WeighterInput, WeighterSetup
from mtlkit_weighters._common import PeriodicWeights, UpdateEveryOptions
from mtlkit_weighters._solvers import combine_input_rows


class ExcessMTLOptions(UpdateEveryOptions):
    step_size: float = Field(1e-2, gt=0.0)
    """Step size ``eta`` of the exponentiated weight update (the reference's
    ``robust_step_size``)."""
    eps: float = Field(1e-7, gt=0.0)
    """Added to the accumulated squared gradients inside the square root."""


class ExcessMTLWeighter(PeriodicWeights):
    """Exponentiated weights on AdaGrad-estimated excess risks (He et al. 2024)."""

    Options = ExcessMTLOptions
    options: ExcessMTLOptions
    needs = Needs(grads="parameters")

    def __init__(
        self, task_names: Sequence[str], options: ExcessMTLOptions | None = None
    ) -> None:
        super().__init__(task_names, options)
        t = self.num_tasks
        self.register_buffer("grad_sq_sum", torch.zeros(t, 0))
        self.register_buffer("loss_weight", torch.ones(t))
        self.register_buffer("initial_excess", torch.zeros(t))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))

    def setup(self, info: WeighterSetup) -> None:
        self.grad_sq_sum = torch.zeros(self.num_tasks, info.shared_numel, device=info.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "grad_sq_sum")
        if saved is not None and saved.shape != self.grad_sq_sum.shape:
            self.grad_sq_sum = torch.zeros_like(saved, device=self.grad_sq_sum.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def excess_risks(self, flat: torch.Tensor) -> torch.Tensor:
        """Accumulate ``g * g`` into ``S`` and return ``e_i = g_i . (g_i / sqrt(S_i + eps))``."""
        acc = self.grad_sq_sum
        if acc.shape != flat.shape or acc.device != flat.device:
            acc = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
            self.grad_sq_sum = acc
        g = flat.to(acc.dtype)
        acc.addcmul_(g, g)
        eps = self.options.eps
        return torch.stack([torch.dot(g[i] * (acc[i] + eps).rsqrt(), g[i])
                            for i in range(g.shape[0])])

    def combine(self, inp: WeighterInput) -> Update:
        reused = self.reuse_weights(inp)  # update_every: the last weights in between
        if reused is not None:
            return reused
        grads = inp.grads
        if grads is None:
            raise ValueError("excess_mtl needs parameter gradients (needs.grads)")
        flat = grads.reshape(grads.shape[0], -1)
        e = self.excess_risks(flat)
        lw = self.loss_weight
        first = self.initial_excess
        # a task's reference value: its first estimate, or its first positive one
        initial = torch.where(self.has_initial & (first > 0), first, e)
        ratio = torch.where(initial > 0, e / initial.clamp_min(torch.finfo(e.dtype).tiny),
                            torch.zeros_like(e))
        step = (self.options.step_size * ratio).clamp_max(1e30)
        updated = self.num_tasks * torch.softmax(lw.log() + step, dim=0)
        lw = torch.where(self.has_initial, updated, lw)
        self.loss_weight.copy_(lw)
        self.initial_excess.copy_(initial)
        self.has_initial.fill_(True)
        w = self.record(lw)
        return Update(weights=w, grad=combine_input_rows(w, grads, inp.grads_scratch))
