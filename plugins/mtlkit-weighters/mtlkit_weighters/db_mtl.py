"""DB-MTL: Lin et al., "Dual-Balancing for Multi-Task Learning", arXiv 2308.12029 (2023).

Loss-scale balancing: every task is trained on ``log(L_i + eps)``, whose gradient is
``g_i / (L_i + eps)``. Gradient-magnitude balancing: an exponential moving average of those
gradients,

    ghat_i <- b_t ghat_i + (1 - b_t) g_i / (L_i + eps),
    b_t = beta / t^sigma   (t = 1, 2, ...; the reference code's decaying coefficient),

and the shared update ``sum_i a_i ghat_i`` with ``a_i = max_j ||ghat_j|| / ||ghat_i||`` (every task
contributes with the largest norm). The heads are trained on their own log losses, so
``Update.weights = 1 / (L_i + eps)`` (the logged weights); the balancing factors ``a`` are kept in
the ``alpha`` buffer.

Heads: ``1 / (L_i + eps)`` times their own loss gradient, the gradient of their own log loss (the
reference code's decoders train on ``log(L_i + eps)``); ``Update.head_weights`` is left None.

The EMA is a persistent ``[T, D]`` buffer (sized in ``setup``; it round-trips through
``state_dict``), updated in place with ``addcmul_`` (no [T, D] temporary): DB-MTL therefore holds
2 T D floats (the trainer's gradient buffer plus the EMA). No host sync.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput, WeighterSetup
from mtlkit_weighters._solvers import combine_rows


class DBMTLOptions(Options):
    beta: float = Field(0.9, ge=0.0, lt=1.0)
    """EMA coefficient at the first step."""
    beta_sigma: float = Field(0.5, ge=0.0)
    """Decay exponent of the EMA coefficient, ``beta / t^beta_sigma``."""
    eps: float = Field(1e-8, gt=0.0)
    """Added to the losses inside the log."""


class DBMTLWeighter(Weighter):
    """Log-loss scale balancing plus EMA gradient-magnitude balancing (Lin et al. 2023)."""

    Options = DBMTLOptions
    options: DBMTLOptions
    needs = Needs(grads="parameters")

    def __init__(self, task_names: Sequence[str], options: DBMTLOptions | None = None) -> None:
        super().__init__(task_names, options)
        self.register_buffer("ema", torch.zeros(self.num_tasks, 0))
        self.register_buffer("num_steps", torch.zeros(()))
        self.register_buffer("alpha", torch.ones(self.num_tasks))

    def setup(self, info: WeighterSetup) -> None:
        self.ema = torch.zeros(self.num_tasks, info.shared_numel, device=info.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "ema")
        if saved is not None and saved.shape != self.ema.shape:
            self.ema = torch.zeros_like(saved, device=self.ema.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def combine(self, inp: WeighterInput) -> Update:
        grads = inp.grads
        if grads is None:
            raise ValueError("db_mtl needs parameter gradients (needs.grads)")
        flat = grads.reshape(grads.shape[0], -1)
        if self.ema.shape != flat.shape or self.ema.device != flat.device:
            self.ema = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        inv = 1.0 / (inp.losses.detach().to(self.ema.dtype) + self.options.eps)
        self.num_steps.add_(1.0)
        b = self.options.beta / self.num_steps.pow(self.options.beta_sigma)
        # ema <- b ema + (1 - b) g / L, in place
        self.ema.mul_(b).addcmul_(flat.to(self.ema.dtype), ((1 - b) * inv)[:, None])
        norms = self.ema.norm(dim=1)
        alpha = norms.max() / norms.clamp_min(torch.finfo(norms.dtype).tiny)
        alpha = torch.where(norms > 0, alpha, torch.zeros_like(alpha))
        self.alpha.copy_(alpha)
        # the gradients are folded into the EMA by now: their buffer, if scratch, holds the result
        out = flat[0] if inp.grads_scratch and flat.dtype == self.ema.dtype else None
        g = combine_rows(alpha, self.ema, out).to(flat.dtype).view(grads.shape[1:])
        return Update(weights=self.record(inv), grad=g)
