"""STCH, smooth Tchebycheff scalarisation: Lin, Zhang, Yang, Liu, Wang & Zhang, "Smooth Tchebycheff
Scalarization for Multi-Objective Optimization", ICML 2024 (arXiv 2402.19078).

The Tchebycheff scalarisation ``max_i f_i`` (optimise the worst objective) is smoothed into

    g_mu(f) = mu log sum_i exp(f_i / mu),

which tends to ``max_i f_i`` as ``mu -> 0`` and to ``mu log T + mean_i f_i`` for large ``mu``.
For multi-task learning the objectives are the log losses normalised by a nadir point ``n``
estimated during a warm-up, as in the reference code (LibMTL ``LibMTL/weighting/STCH.py``; Lin &
Zhang, "LibMTL: A Python Library for Multi-Task Learning", JMLR 2023; taken from the authors'
``STCH_MTL``):

- epochs ``e < warmup_epoch``: ``L = sum_i log(L_i + eps)`` (the warm-up trains on log losses);
- epoch ``e == warmup_epoch``: the same loss, and the step losses are averaged into ``n``;
- epochs ``e > warmup_epoch``: with ``f_i = log(L_i / n_i + eps)``,

      L = T mu log sum_i exp(f_i / mu)          (T: the reference's scale),

  whose gradient is ``sum_i w_i grad L_i`` with ``w_i = T softmax(f / mu)_i / (L_i + eps n_i)``.

The logged weights are those coefficients of ``grad L_i`` (``1 / (L_i + eps)`` in the warm-up).
Cost: free (one backward, as equal weighting); needs the epoch counter. The running loss sum, its
count, the nadir point and whether it is fixed yet are buffers: resume is exact. No host sync (the
phase is chosen from the integer epoch; the nadir is frozen with ``torch.where``).

Heads: ``w_i`` times their own loss gradient (the one backward of ``L``; ``w > 0``).

Deliberate differences from the reference, none of which changes a gradient it computes:

- the loss value is the true ``T mu logsumexp(f / mu)``; the reference subtracts the detached
  ``max_i f_i`` inside the exponent and does not add ``T max_i f_i`` back (same gradient);
- the logged weights are the coefficients above (the reference logs ones);
- where the reference divides by zero (no step in the nadir epoch, e.g. a run resumed after it
  from a checkpoint without the nadir; a zero mean loss) it would produce NaN: here the nadir is
  then the losses of the first step after the warm-up, and it is kept at least the smallest
  positive float.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput


class STCHOptions(Options):
    mu: float = Field(1.0, gt=0.0)
    """Smoothing parameter ``mu`` (small: close to the max of the normalised log losses)."""
    warmup_epoch: int = Field(4, ge=0)
    """The (0-based) epoch whose mean step losses become the nadir point; before and during it
    the model trains on ``sum_i log(L_i + eps)``, after it on the smooth Tchebycheff loss."""
    eps: float = Field(1e-20, gt=0.0)
    """Added inside every log (the reference's 1e-20)."""


class STCHWeighter(Weighter):
    """Smooth Tchebycheff scalarisation of the nadir-normalised log losses (Lin et al. 2024)."""

    Options = STCHOptions
    options: STCHOptions
    needs = Needs(grads="none", counters=True)

    def __init__(self, task_names: Sequence[str], options: STCHOptions | None = None) -> None:
        super().__init__(task_names, options)
        t = self.num_tasks
        self.register_buffer("loss_sum", torch.zeros(t))
        self.register_buffer("loss_count", torch.zeros(()))
        self.register_buffer("nadir", torch.ones(t))
        self.register_buffer("has_nadir", torch.zeros((), dtype=torch.bool))

    def combine(self, inp: WeighterInput) -> Update:
        if inp.epoch is None:
            raise ValueError("stch needs the epoch counter (needs.counters)")
        losses = inp.losses
        detached = losses.detach()
        eps = self.options.eps
        warmup = self.options.warmup_epoch
        if inp.epoch <= warmup:
            if inp.epoch == warmup:
                self.loss_sum.add_(detached.to(self.loss_sum.dtype))
                self.loss_count.add_(1.0)
            loss = (losses + eps).log().sum()
            return Update(weights=self.record(1.0 / (detached + eps)), loss=loss)
        tiny = torch.finfo(self.nadir.dtype).tiny
        estimate = torch.where(
            self.loss_count > 0,
            self.loss_sum / self.loss_count.clamp_min(1.0),
            detached.to(self.nadir.dtype),
        )
        nadir = torch.where(self.has_nadir, self.nadir, estimate).clamp_min(tiny)
        self.nadir.copy_(nadir)
        self.has_nadir.fill_(True)
        n = nadir.to(losses.dtype)
        mu, t = self.options.mu, self.num_tasks
        f = (losses / n + eps).log()
        loss = t * mu * torch.logsumexp(f / mu, dim=0)
        p = torch.softmax(f.detach() / mu, dim=0)
        weights = t * p / (detached + eps * n)
        return Update(weights=self.record(weights), loss=loss)
