"""Random Loss Weighting: Lin et al., "Reasonable Effectiveness of Random Weighting:
A Litmus Test for Multi-Task Learning", TMLR 2022 (arXiv 2111.10603).

Each step ``lambda ~ N(0, I)`` and ``w = softmax(lambda)``; the model is trained on
``sum_i w_i L_i``. The draw of task i at step t comes from a generator seeded by ``(seed, t, task
name)``, so the weights are a pure function of the global step: a resumed run draws exactly what
the uninterrupted run drew, no RNG state needs checkpointing, and permuting the tasks permutes the
weights. The T draws happen on the CPU (T numbers) and are copied to the device without a sync.
Cost: free. Needs the step counter.

Heads: ``w_i`` times their own loss gradient (the one backward of the weighted loss; ``w > 0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput, weighted_sum
from mtlkit_weighters._common import stable_seed


class RLWOptions(Options):
    seed: int = 0
    """Seed of the per-step draws (combined with the step and the task name)."""


class RLWWeighter(Weighter):
    """w = softmax(lambda), lambda ~ N(0, I), redrawn every step (Lin et al. 2022)."""

    Options = RLWOptions
    options: RLWOptions
    needs = Needs(grads="none", counters=True)

    def __init__(self, task_names: Sequence[str], options: RLWOptions | None = None) -> None:
        super().__init__(task_names, options)
        self._gen = torch.Generator(device="cpu")

    def draw(self, step: int) -> torch.Tensor:
        """The logits ``lambda`` of ``step`` (CPU, float32)."""
        out = torch.empty(self.num_tasks)
        for i, name in enumerate(self.task_names):
            self._gen.manual_seed(stable_seed("rlw", self.options.seed, step, name))
            out[i] = torch.randn((), generator=self._gen)
        return out

    def combine(self, inp: WeighterInput) -> Update:
        if inp.step is None:
            raise ValueError("rlw needs the step counter (needs.counters)")
        w = torch.softmax(self.draw(inp.step), dim=0).to(inp.losses.device, non_blocking=True)
        w = self.record(w)
        return Update(weights=w, loss=weighted_sum(w, inp.losses))
