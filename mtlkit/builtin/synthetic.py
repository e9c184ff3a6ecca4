"""Synthetic multi-task data: each task's label is a separate factor of a Gaussian mixture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field

from mtlkit.data import DataModule, DataSplits, InMemoryDataset
from mtlkit.options import Options
from mtlkit.task import MISSING_LABEL


class SyntheticOptions(Options):
    num_samples: int = Field(512, ge=8)
    num_features: int = Field(16, gt=0)
    num_classes: int = Field(4, ge=2)
    noise: float = Field(0.5, ge=0.0)
    missing_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of training samples whose label is dropped, per task (partial labelling)."""
    val_fraction: float = Field(0.15, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.15, ge=0.0, lt=0.5)
    seed: int = 0


class SyntheticData(DataModule):
    """Input = sum over tasks of a class prototype per task, plus noise; deterministic in seed."""

    Options = SyntheticOptions
    options: SyntheticOptions

    def setup(self, tasks: Sequence[str], data_config: Mapping[str, Any]) -> DataSplits:
        o = self.options
        size = data_config.get("input_size")
        dim = int(torch.tensor(size).prod()) if size else o.num_features
        gen = torch.Generator().manual_seed(o.seed)
        n = o.num_samples
        x = torch.randn(n, dim, generator=gen) * o.noise
        targets: dict[str, torch.Tensor] = {}
        for task in tasks:
            protos = torch.randn(o.num_classes, dim, generator=gen)
            y = torch.randint(0, o.num_classes, (n,), generator=gen)
            x += protos[y]
            targets[task] = y
        if size:
            x = x.reshape(n, *size)
        full = InMemoryDataset(inputs=x, targets=targets)
        order = torch.randperm(n, generator=gen)
        n_test = int(n * o.test_fraction)
        n_val = int(n * o.val_fraction)
        test = full.subset(order[:n_test]) if n_test else None
        val = full.subset(order[n_test : n_test + n_val]) if n_val else None
        train = full.subset(order[n_test + n_val :])
        if o.missing_fraction:
            for y in train.targets.values():
                drop = torch.rand(len(y), generator=gen) < o.missing_fraction
                y[drop] = MISSING_LABEL
        info = {t: {"num_classes": o.num_classes} for t in tasks}
        summary = {"dataset": "synthetic", "train": len(train)}
        summary.update({"val": len(val) if val else 0, "test": len(test) if test else 0})
        return DataSplits(train=train, val=val, test=test, info=info, summary=summary)
