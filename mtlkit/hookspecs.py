"""Plugin hook specifications (pluggy, project name and entry-point group ``mtlkit``).

A plugin module implements any of these with ``@mtlkit.hookimpl``. Each hook receives a typed
registry and adds classes, or ``"module:Class"`` strings so the heavy module is only imported when
the name is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mtlkit.registry import (
        ArchitectureRegistry,
        BackboneRegistry,
        DatasetRegistry,
        TaskRegistry,
        WeighterRegistry,
    )

PROJECT = "mtlkit"
_hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@_hookspec
def register_tasks(registry: TaskRegistry) -> None:
    """Add tasks: ``registry.add("expression", "my_pkg.tasks:ExpressionTask")``."""


@_hookspec
def register_backbones(registry: BackboneRegistry) -> None:
    """Add backbones."""


@_hookspec
def register_weighters(registry: WeighterRegistry) -> None:
    """Add weighting methods."""


@_hookspec
def register_datasets(registry: DatasetRegistry) -> None:
    """Add datasets (data modules)."""


@_hookspec
def register_architectures(registry: ArchitectureRegistry) -> None:
    """Add architectures: how a backbone and the heads form the multi-task model."""
