"""Learning-rate schedules in closed form: the factor at step ``t`` depends only on ``t`` and the
config, so a resumed run (even one whose epochs or lr changed) recomputes its schedule exactly."""

from __future__ import annotations

import math
from collections.abc import Callable

from mtlkit.config import SchedulerConfig


def lr_factor(
    sc: SchedulerConfig, total_steps: int, steps_per_epoch: int, base_lr: float
) -> Callable[[int], float]:
    """Multiplier of ``base_lr`` at step ``t``.

    cosine: from 1 down to ``min_lr / base_lr`` at ``total_steps``, then flat (never back up);
    step: ``gamma ** (t // (step_size * steps_per_epoch))``; none: 1.
    """
    if sc.name == "cosine":
        total = max(1, total_steps)
        floor = sc.min_lr / base_lr if base_lr > 0 else 0.0

        def cosine(t: int) -> float:
            progress = min(t, total) / total
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return cosine
    if sc.name == "step":
        every = sc.step_size * max(1, steps_per_epoch)
        return lambda t: sc.gamma ** (t // every)
    return lambda t: 1.0
