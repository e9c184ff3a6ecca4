"""Entry point of mtlkit-dynamic: light on purpose (no torch), it only names the classes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from mtlkit.registry import Registry


@hookimpl
def register_weighters(registry: Registry) -> None:
    registry.add("dynamic", "mtlkit_dynamic.weighters:DynamicWeighter",
                 summary="dynamic-weight unit trained on sum w_i/(L_i+sigma): favours harder tasks")
    registry.add("dynamic-naive", "mtlkit_dynamic.weighters:NaiveDynamicWeighter",
                 summary="same unit trained on sum w_i L_i: favours easier tasks (paper's control)")
