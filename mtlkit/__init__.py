"""mtlkit: a plugin-based multi-task learning framework for PyTorch.

Importing the package is cheap: the heavy modules (torch, the trainer) load on first attribute use,
so ``mtlkit --help`` and ``mtlkit plugins`` never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Task": "mtlkit.task",
    "MetricSpec": "mtlkit.task",
    "MetricMeter": "mtlkit.task",
    "MISSING_LABEL": "mtlkit.task",
    "Backbone": "mtlkit.backbone",
    "Architecture": "mtlkit.architecture",
    "Weighter": "mtlkit.weighter",
    "Needs": "mtlkit.weighter",
    "WeighterInput": "mtlkit.weighter",
    "Update": "mtlkit.weighter",
    "DataModule": "mtlkit.data",
    "InMemoryDataset": "mtlkit.data",
    "TensorDataset": "mtlkit.data",  # deprecated name of InMemoryDataset (warns)
    "Batch": "mtlkit.data",
    "DataSplits": "mtlkit.data",
    "ReadsInputFiles": "mtlkit.data",
    "UsesDataInfo": "mtlkit.data",
    "InputFile": "mtlkit.data",
    "InputSample": "mtlkit.data",
    "Conversion": "mtlkit.data",
    "MultiTaskModel": "mtlkit.builtin.hps",
    "Trainer": "mtlkit.trainer",
    "RunConfig": "mtlkit.config",
    "load_config": "mtlkit.config",
    "Options": "mtlkit.options",
    "hookimpl": "mtlkit.hookspecs",
    "get_plugin_manager": "mtlkit.plugins",
    "backward": "mtlkit.functional",
    "WeightedStep": "mtlkit.functional",
    "create_weighter": "mtlkit.functional",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover - static re-exports for type checkers
    from mtlkit.architecture import Architecture
    from mtlkit.backbone import Backbone
    from mtlkit.builtin.hps import MultiTaskModel
    from mtlkit.config import RunConfig, load_config
    from mtlkit.data import (
        Batch,
        Conversion,
        DataModule,
        DataSplits,
        InMemoryDataset,
        InputFile,
        InputSample,
        ReadsInputFiles,
        UsesDataInfo,
    )
    from mtlkit.functional import WeightedStep, backward, create_weighter
    from mtlkit.hookspecs import hookimpl
    from mtlkit.options import Options
    from mtlkit.plugins import get_plugin_manager
    from mtlkit.task import MISSING_LABEL, MetricMeter, MetricSpec, Task
    from mtlkit.trainer import Trainer
    from mtlkit.weighter import Needs, Update, Weighter, WeighterInput


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mtlkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
