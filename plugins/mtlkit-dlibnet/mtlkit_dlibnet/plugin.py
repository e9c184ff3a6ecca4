"""Entry point of mtlkit-dlibnet: light on purpose (no torch), it only names the class."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from mtlkit.registry import Registry


@hookimpl
def register_backbones(registry: Registry) -> None:
    registry.add(
        "dlib_face",
        "mtlkit_dlibnet.backbone:DlibFaceBackbone",
        summary="dlib's pretrained face-recognition ResNet (128-d descriptor, 150 px, offline)",
    )
