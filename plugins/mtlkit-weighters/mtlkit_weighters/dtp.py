"""Dynamic Task Prioritization: Guo, Haque, Huang, Yeung & Fei-Fei, "Dynamic Task Prioritization
for Multitask Learning", ECCV 2018.

A key performance indicator ``k_i`` in [0, 1] per task (here the task's per-step metric, e.g.
batch accuracy, from ``needs.step_metrics``) is smoothed by an exponential moving average
``k_i <- alpha m_i + (1 - alpha) k_i`` (the first step takes ``m_i``), and the task-level focal
weight is

    w_i = -(1 - k_i)^gamma log k_i,

so tasks with a low KPI (hard tasks) get larger weights. ``k`` is clamped to ``[eps, 1 - eps]``
(a perfect task would otherwise get weight 0 forever, a hopeless one weight infinity). The moving
averages are buffers (resume is exact). Cost: free.

Heads: ``w_i`` times their own loss gradient (the one backward of the weighted loss; ``w >= 0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput, weighted_sum


class DTPOptions(Options):
    gamma: float = Field(1.0, ge=0.0)
    """Task-level focusing parameter (``gamma_0`` of the paper; 0: ``w = -log k``)."""
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    """Weight of the newest metric in the moving average of the KPI (1: no smoothing)."""
    eps: float = Field(1e-3, gt=0.0, lt=0.5)
    """``k`` is clamped to ``[eps, 1 - eps]``."""


class DTPWeighter(Weighter):
    """Focal task weights ``-(1-k)^gamma log k`` on moving-average KPIs (Guo et al. 2018)."""

    Options = DTPOptions
    options: DTPOptions
    needs = Needs(grads="none", step_metrics=True)

    def __init__(self, task_names: Sequence[str], options: DTPOptions | None = None) -> None:
        super().__init__(task_names, options)
        self.register_buffer("kpi", torch.zeros(self.num_tasks))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def combine(self, inp: WeighterInput) -> Update:
        if inp.metrics is None:
            raise ValueError("dtp needs per-step task metrics (needs.step_metrics)")
        m = inp.metrics.detach().to(self.kpi.dtype)
        a = self.options.alpha
        self.kpi.copy_(torch.where(self.started, a * m + (1 - a) * self.kpi, m))
        self.started.fill_(True)
        eps = self.options.eps
        k = self.kpi.clamp(eps, 1 - eps)
        w = self.record(-((1 - k) ** self.options.gamma) * torch.log(k))
        return Update(weights=w, loss=weighted_sum(w, inp.losses))
