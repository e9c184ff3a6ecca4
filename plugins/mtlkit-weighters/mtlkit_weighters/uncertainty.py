"""Uncertainty weighting: Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
Losses for Scene Geometry and Semantics", CVPR 2018 (arXiv 1705.07115).

Each task gets a learned log-variance ``s_i = log sigma_i^2`` and the model is trained on

    L = sum_i exp(-s_i) L_i / 2 + s_i / 2,

so the logged weights are ``w_i = exp(-s_i) / 2``. For fixed losses the optimum is ``s_i = log L_i``
(``dL/ds_i = (1 - exp(-s_i) L_i) / 2``). The ``s_i`` are ordinary parameters in their own
optimizer param group (no weight decay; ``lr`` option). Cost: free (one backward, as equal).

Heads: ``w_i`` times their own loss gradient (the one backward of the weighted loss; ``w > 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mtlkit.weighter import Needs, Update, Weighter, WeighterInput
from mtlkit_weighters._common import LRGroupOptions, own_param_groups


class UncertaintyOptions(LRGroupOptions):
    init: float = 0.0
    """Initial log-variance ``s_i`` of every task (0: weights start at 1/2)."""


class UncertaintyWeighter(Weighter):
    """Homoscedastic-uncertainty weighting with learned log-variances (Kendall et al. 2018)."""

    Options = UncertaintyOptions
    options: UncertaintyOptions
    needs = Needs(grads="none")

    def __init__(
        self, task_names: Sequence[str], options: UncertaintyOptions | None = None
    ) -> None:
        super().__init__(task_names, options)
        self.log_vars = nn.Parameter(torch.full((self.num_tasks,), float(self.options.init)))

    def combine(self, inp: WeighterInput) -> Update:
        precision = torch.exp(-self.log_vars)
        loss = 0.5 * (precision.to(inp.losses.dtype) * inp.losses).sum() + 0.5 * self.log_vars.sum()
        return Update(weights=self.record(0.5 * precision), loss=loss)

    def param_groups(self) -> list[dict[str, Any]]:
        return own_param_groups(self, self.options.lr)
