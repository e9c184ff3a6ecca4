"""Entry point of mtlkit-headpose: light on purpose (no torch), it only names the classes.

``mtlkit plugins`` and ``mtlkit --help`` import this module and nothing else of the package; the
class modules are imported the first time a config uses one of the names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from mtlkit.registry import Registry


@hookimpl
def register_tasks(registry: Registry) -> None:
    registry.add(
        "head_roll",
        "mtlkit_headpose.task:HeadRollTask",
        summary="regression of the head's in-plane rotation (degrees)",
    )


@hookimpl
def register_datasets(registry: Registry) -> None:
    registry.add(
        "synthetic_faces_pose",
        "mtlkit_headpose.data:PoseFacesData",
        summary="synthetic_faces rotated by a known angle: adds the head_roll target",
    )
