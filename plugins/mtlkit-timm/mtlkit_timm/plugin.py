"""Entry point of mtlkit-timm: light on purpose (no torch, no timm), it only names the class."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from mtlkit.registry import Registry


@hookimpl
def register_backbones(registry: Registry) -> None:
    registry.add("timm", "mtlkit_timm.backbone:TimmBackbone",
                 summary="any timm model (num_classes=0, pooled features); offline local weights")
