"""GLS, the Geometric Loss Strategy: Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++:
Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR 2019
Workshops (arXiv 1904.08492).

The model is trained on the geometric mean of the task losses,

    L = (prod_i L_i)^(1/T) = exp(mean_i log L_i),

whose gradient is ``sum_i w_i grad L_i`` with ``w_i = dL/dL_i = L / (T L_i)`` (the logged weights;
``sum_i w_i L_i = L``). A task whose loss is small gets a large weight: the strategy is invariant
to the scale of each loss (multiplying ``L_i`` by ``c`` multiplies ``L`` by ``c^(1/T)`` and leaves
the direction of the update unchanged). Cost: free (one backward, as equal weighting). No state.

Computed in log space (``exp(mean log L_i)``), so a product of many small or large losses neither
underflows nor overflows. The losses must be positive; a loss at or below zero is clamped to the
smallest positive float, so it gets weight 0 and pulls ``L`` to nearly 0 (the reference's
gradient is NaN there).

Heads: ``w_i`` times their own loss gradient (the one backward of ``L``; ``w >= 0``).

Reference: LibMTL ``LibMTL/weighting/GLS.py`` (``torch.pow(losses.prod(), 1/T)``). Deliberate
difference, in logging only: LibMTL returns ``L_i / (T prod_j L_j)`` as its weights, which is not
the coefficient of ``grad L_i`` in the update; here the weights are the true ``L / (T L_i)``.
"""

from __future__ import annotations

import torch

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput


class GLSOptions(Options):
    """GLS has no options (the reference has none)."""


class GLSWeighter(Weighter):
    """Geometric mean of the task losses (Chennupati et al. 2019)."""

    Options = GLSOptions
    options: GLSOptions
    needs = Needs(grads="none")

    def combine(self, inp: WeighterInput) -> Update:
        losses = inp.losses
        tiny = torch.finfo(losses.dtype).tiny
        loss = losses.clamp_min(tiny).log().mean().exp()
        detached = losses.detach()
        weights = torch.where(
            detached > tiny,
            loss.detach() / (self.num_tasks * detached.clamp_min(tiny)),
            torch.zeros_like(detached),
        )
        return Update(weights=self.record(weights), loss=loss)
