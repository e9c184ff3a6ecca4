"""GradDrop: Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign:
Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020 (arXiv 2010.06808).

GradDrop acts on the gradients ``g_i`` ([B, F]) of each task's loss w.r.t. the shared
representation ``z`` ([B, F]), as the paper and LibMTL do (LibMTL refuses parameter gradients).
Per feature coordinate f (summed over the batch, with the paper's sign-of-input correction):

    s_i[f] = sum_b g_i[b, f] sign(z[b, f])
    P[f]   = 1/2 (1 + sum_i s_i[f] / sum_i |s_i[f]|)       (the sign purity, in [0, 1])
    U[f]   ~ Uniform(0, 1)
    M_i[f] = 1[P > U] 1[s_i > 0] + 1[P < U] 1[s_i < 0]
    update = sum_i (leak + (1 - leak) M_i) * g_i           (M_i broadcast over the batch)

so a coordinate where every task agrees in sign is always kept (P = 1 or 0), and a positive
(negative) ``s_i`` survives with probability P (1 - P). ``leak`` = 1 is plain summation.

The U draw is per coordinate, shared by all tasks (so relabelling the tasks changes nothing), from
a CPU generator seeded by ``(seed, step)`` (``needs.counters``) and copied to the device: a
resumed run (and every DDP rank, which sees the gathered features) draws the same masks.

``Update.weights``: the share of each task's gradient that survives,
``sum(m_i g_i^2) / sum(g_i^2)`` with ``m_i = leak + (1 - leak) M_i`` (1 for a zero gradient, 1
everywhere when nothing is dropped); logged only, the update is not a linear combination.

Cost: the representation path (one trunk backward, T head backwards) plus O(T B F) elementwise
work and F random numbers per step. Needs: representation gradients, the features, the step.

Heads: each task's own loss gradient, unscaled (``head_weights`` ones): LibMTL's GradDrop
backpropagates every task's plain loss into its decoder and masks the representation gradient
only.

Deliberate difference: the purity's denominator has no ``+ 1e-7`` (LibMTL); where
``sum_i |s_i| = 0`` no task has a sign to keep and P is set to 1/2, so the masks do not depend on
the gradients' scale (1e-7 is not small next to 1e-4-scale gradients summed over a batch).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput
from mtlkit_weighters._common import stable_seed


class GradDropOptions(Options):
    leak: float = Field(0.0, ge=0.0, le=1.0)
    """Share of every gradient kept regardless of the mask (LibMTL's ``leak``, default 0)."""
    seed: int = 0
    """Seed of the per-step uniform draws (combined with the global step)."""


def graddrop_multipliers(signed: Tensor, u: Tensor, leak: float) -> Tensor:
    """``[T, F]``: ``leak + (1 - leak) M_i`` from the batch-summed signed gradients ``signed``
    ([T, F]) and the uniform draws ``u`` ([F])."""
    total = signed.sum(0)
    mass = signed.abs().sum(0)
    ratio = torch.where(mass > 0, total / torch.where(mass > 0, mass, torch.ones_like(mass)),
                        torch.zeros_like(mass))
    purity = 0.5 * (1.0 + ratio)
    keep = ((purity > u) & (signed > 0)) | ((purity < u) & (signed < 0))
    return leak + (1.0 - leak) * keep.to(signed.dtype)


class GradDropWeighter(Weighter):
    """Gradient sign dropout on the shared representation (Chen et al. 2020)."""

    Options = GradDropOptions
    options: GradDropOptions
    needs = Needs(grads="representation", features=True, counters=True)

    def draw(self, step: int, numel: int) -> Tensor:
        """The ``[numel]`` uniform draws of ``step`` (CPU, float32)."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(stable_seed("graddrop", self.options.seed, step))
        return torch.rand(numel, generator=gen)

    def combine(self, inp: WeighterInput) -> Update:
        grads, features = inp.grads, inp.features
        if grads is None or features is None:
            raise ValueError("graddrop needs representation gradients and the features"
                             " (needs.grads, needs.features)")
        if inp.step is None:
            raise ValueError("graddrop needs the step counter (needs.counters)")
        t = grads.shape[0]
        b = features.shape[0] if features.dim() > 0 else 1
        g = grads.reshape(t, b, -1)
        sign = features.detach().reshape(b, -1).sign().to(g.dtype)
        f = g.shape[2]
        signed = torch.empty(t, f, dtype=g.dtype, device=g.device)
        energy = torch.empty(t, f, dtype=g.dtype, device=g.device)
        for i in range(t):
            torch.sum(g[i] * sign, dim=0, out=signed[i])
            torch.sum(g[i] * g[i], dim=0, out=energy[i])
        u = self.draw(inp.step, f).to(device=g.device, dtype=g.dtype, non_blocking=True)
        mult = graddrop_multipliers(signed, u, self.options.leak)
        total = energy.sum(1)
        kept = (mult * energy).sum(1)
        share = torch.where(total > 0, kept / torch.where(total > 0, total, torch.ones_like(total)),
                            torch.ones_like(total))
        w = self.record(share)
        dst = g[0] if inp.grads_scratch else torch.empty_like(g[0])
        torch.mul(g[0], mult[0], out=dst)  # exact aliasing with g[0] is fine elementwise
        for i in range(1, t):
            dst.addcmul_(g[i], mult[i])
        return Update(weights=w, grad=dst.view(grads.shape[1:]), head_weights=torch.ones_like(w))
