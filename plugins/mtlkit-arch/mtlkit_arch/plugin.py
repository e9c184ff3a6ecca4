"""Entry point of mtlkit-arch: light on purpose (no torch), it only names where each class lives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from mtlkit.registry import Registry

ARCHITECTURES: dict[str, tuple[str, str]] = {
    "branch": ("branch:Branch",
               "trunk shared up to a stage, each task owns a copy of the later stages"),
    "mmoe": ("experts:MMoE", "multi-gate mixture of experts on a shared stem (Ma et al. 2018)"),
    "cgc": ("experts:CGC",
            "customized gate control: shared and task experts (Tang et al. 2020)"),
    "ple": ("experts:PLE",
            "progressive layered extraction: stacked CGC levels (Tang et al. 2020)"),
    "cross_stitch": ("cross_stitch:CrossStitch",
                     "one trunk per task, learned linear mixing after stages (Misra et al. 2016)"),
    "mtan": ("mtan:MTAN",
             "shared trunk, per-task attention over every stage (Liu et al. 2019)"),
}


@hookimpl
def register_architectures(registry: Registry) -> None:
    for name, (target, summary) in ARCHITECTURES.items():
        registry.add(name, f"mtlkit_arch.{target}", summary=summary)
