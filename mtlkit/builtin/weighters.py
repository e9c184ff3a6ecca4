"""Equal and static weighting: the free baselines every comparison starts from."""

from __future__ import annotations

import torch
from pydantic import field_validator

from mtlkit.options import Options
from mtlkit.weighter import Update, Weighter, WeighterInput, weighted_sum


class EqualWeighter(Weighter):
    """Linear scalarisation with w_i = 1: the update is the gradient of ``sum_i L_i``."""

    def combine(self, inp: WeighterInput) -> Update:
        return Update(weights=self.weights, loss=inp.losses.sum())


class StaticOptions(Options):
    weights: dict[str, float]

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v >= 0}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if value and not any(v > 0 for v in value.values()):
            raise ValueError("at least one weight must be > 0")
        return value


class StaticWeighter(Weighter):
    """Fixed user weights per task name; a one-hot weighting trains a single task."""

    Options = StaticOptions
    options: StaticOptions

    def __init__(self, task_names: list[str], options: StaticOptions | None = None) -> None:
        super().__init__(task_names, options)
        given = self.options.weights
        unknown = sorted(set(given) - set(self.task_names))
        missing = [t for t in self.task_names if t not in given]
        if unknown or missing:
            raise ValueError(
                f"static weights must name exactly the tasks {self.task_names};"
                f" unknown: {unknown}, missing: {missing}"
            )
        self.weights.copy_(torch.tensor([given[t] for t in self.task_names]))

    def combine(self, inp: WeighterInput) -> Update:
        return Update(weights=self.weights, loss=weighted_sum(self.weights, inp.losses))
