"""Both dynamic weighters through mtlkit's conformance kit (the names come from the registry)."""

from __future__ import annotations

from typing import Any

from mtlkit.testing import WeighterTraits, parametrize_checks, registered, weighter_checks

WEIGHTERS = registered("weighters", "mtlkit-dynamic")

OPTIONS: list[dict[str, Any]] = [
    {},  # the authors' unit: truncated-normal init, TF1 RMSProp, clipping
    {"init": "zero", "optimizer": "sgd", "clip_norm": None},
    {"init": "zero", "detach": False, "momentum": 0.5},
    {"normalize_logits": True, "clamp": (0.01, 0.99), "normalize": False},
]


def traits(options: Any) -> WeighterTraits:
    """A randomly initialised unit gives each task POSITION its own logit row, so relabelling the
    tasks changes the weights; with the zero init the method is exactly equivariant."""
    return WeighterTraits(equivariant_max_tasks=None if options.init == "zero" else 0)


CHECKS = [
    check
    for name, cls in WEIGHTERS.items()
    for check in weighter_checks(cls, OPTIONS, num_tasks=(2, 3), traits=traits, name=name)
]


@parametrize_checks(CHECKS)
def test_conformance(check: Any) -> None:
    check()
