"""mtlkit-weighters: the multi-task weighting literature as mtlkit weighters.

The methods, their registered names and their one-line summaries are listed once, in
:data:`mtlkit_weighters.plugin.WEIGHTERS` (``mtlkit plugins`` prints them; the README's table gives
each paper and its options). Every weighter class is importable from here by its class name.

Importing the package is cheap (no torch): the entry point ``mtlkit_weighters.plugin`` only names
``"module:Class"`` targets, and each method lives in its own module, imported when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from mtlkit_weighters.plugin import WEIGHTERS

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    target.split(":")[1]: f"mtlkit_weighters.{target.split(':')[0]}"
    for target, _summary in WEIGHTERS.values()
}
"""Class name -> its module, read from :data:`WEIGHTERS`."""

__all__ = ["WEIGHTERS", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
