"""mtlkit-weighters: the multi-task weighting literature as mtlkit weighters.

Importing the package is cheap (no torch): the entry point ``mtlkit_weighters.plugin`` only names
``"module:Class"`` targets, and each method lives in its own module, imported when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "UncertaintyWeighter": "mtlkit_weighters.uncertainty",
    "DWAWeighter": "mtlkit_weighters.dwa",
    "RLWWeighter": "mtlkit_weighters.rlw",
    "DTPWeighter": "mtlkit_weighters.dtp",
    "FAMOWeighter": "mtlkit_weighters.famo",
    "GradNormWeighter": "mtlkit_weighters.gradnorm",
    "MGDAWeighter": "mtlkit_weighters.mgda",
    "PCGradWeighter": "mtlkit_weighters.pcgrad",
    "CAGradWeighter": "mtlkit_weighters.cagrad",
    "IMTLWeighter": "mtlkit_weighters.imtl",
    "NashMTLWeighter": "mtlkit_weighters.nash_mtl",
    "AlignedMTLWeighter": "mtlkit_weighters.aligned_mtl",
    "DBMTLWeighter": "mtlkit_weighters.db_mtl",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
