"""Dynamic Weight Average: Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
CVPR 2019 (arXiv 1803.10704).

With ``Lbar_i(e)`` the mean training loss of task i over epoch e,

    r_i = Lbar_i(e-1) / Lbar_i(e-2),   w_i = T exp(r_i / Temp) / sum_j exp(r_j / Temp),

and ``w = 1`` during the first two epochs (no two completed epochs yet); ``Temp = 2``. The epoch
means are accumulated from the (detached) step losses on the device; the running sums and the last
two epoch means are buffers, and the epoch bookkeeping (plain ints, no host sync) is the module's
extra state, so a resumed run continues identically. Cost: free. Needs the epoch counter.

Heads: ``w_i`` times their own loss gradient (the one backward of the weighted loss; ``w > 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput, weighted_sum


class DWAOptions(Options):
    temp: float = Field(2.0, gt=0.0)
    """Softmax temperature ``Temp`` (the paper's 2)."""


class DWAWeighter(Weighter):
    """Weights from the ratio of the last two epoch-mean losses (Liu et al. 2019)."""

    Options = DWAOptions
    options: DWAOptions
    needs = Needs(grads="none", counters=True)

    def __init__(self, task_names: Sequence[str], options: DWAOptions | None = None) -> None:
        super().__init__(task_names, options)
        t = self.num_tasks
        self.register_buffer("epoch_sum", torch.zeros(t))
        self.register_buffer("epoch_count", torch.zeros(()))
        # row 0: mean of epoch e-1, row 1: mean of epoch e-2
        self.register_buffer("history", torch.ones(2, t))
        self._epoch = -1  # the epoch being accumulated
        self._completed = 0  # completed epochs in ``history`` (0, 1 or 2)

    def get_extra_state(self) -> dict[str, int]:
        return {"epoch": self._epoch, "completed": self._completed}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._epoch = int(state["epoch"])
        self._completed = int(state["completed"])

    def _roll(self, epoch: int) -> None:
        """Close the accumulated epoch (if any) and start ``epoch``."""
        if self._epoch >= 0 and epoch != self._epoch:
            mean = self.epoch_sum / self.epoch_count.clamp_min(1.0)
            # an epoch without any step keeps the previous history
            closed = torch.where(self.epoch_count > 0, mean, self.history[0])
            self.history[1].copy_(self.history[0])
            self.history[0].copy_(closed)
            self._completed = min(self._completed + 1, 2)
            self.epoch_sum.zero_()
            self.epoch_count.zero_()
        self._epoch = epoch

    def weights_now(self) -> torch.Tensor:
        """The weights of the current epoch (``1`` until two epochs are complete)."""
        if self._completed < 2:
            return torch.ones(self.num_tasks, device=self.history.device)
        ratio = self.history[0] / self.history[1].clamp_min(torch.finfo(self.history.dtype).tiny)
        return (self.num_tasks * torch.softmax(ratio / self.options.temp, dim=0))

    def combine(self, inp: WeighterInput) -> Update:
        if inp.epoch is None:
            raise ValueError(
                "dwa needs the epoch counter: the Trainer passes it; with mtlkit.WeightedStep pass"
                " steps_per_epoch= or backward(..., epoch=e)"
            )
        if inp.epoch != self._epoch:
            self._roll(inp.epoch)
        w = self.record(self.weights_now())
        self.epoch_sum.add_(inp.losses.detach().to(self.epoch_sum.dtype))
        self.epoch_count.add_(1.0)
        return Update(weights=w, loss=weighted_sum(w, inp.losses))
