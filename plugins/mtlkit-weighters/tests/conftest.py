"""Shared helpers of the mtlkit-weighters tests: the registry, every weighter's option sets, and
hand-made inputs for the reference checks. The generic properties (and the fake trainer) live in
the conformance kit, :mod:`mtlkit.testing`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtlkit.plugins import PluginHost
from mtlkit.testing import registered
from mtlkit.weighter import Weighter, WeighterInput

DIST = "mtlkit-weighters"

_HOST: PluginHost | None = None


def host() -> PluginHost:
    """The process-wide host with entry points loaded (our plugin must be installed)."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


CLASSES: dict[str, type[Weighter]] = registered("weighters", DIST, host=host())
"""Every weighter this distribution registers, read from the plugin registry."""

NAMES = sorted(CLASSES)

EXTRA_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "mgda": [{"normalize": "loss+"}],
    "imtl": [{"rep": True, "loss_balance": False}],
    "famo": [{"update": "sgd"}],
    "pcgrad": [{"order": "fixed"}],
}
"""Option sets worth checking beyond the defaults and the derived ones below."""


def options_of(name: str) -> list[dict[str, Any]]:
    """Defaults, each gradient path a weighter offers (``rep``), IMTL's loss scales off (any
    weighter with ``loss_balance``), then :data:`EXTRA_OPTIONS`; derived from the options
    models, so a new weighter is checked on its variants without being listed here."""
    fields = CLASSES[name].Options.model_fields
    out: list[dict[str, Any]] = [{}]
    if "rep" in fields:
        out.append({"rep": True})
    if "loss_balance" in fields:
        out.append({"loss_balance": False})
    return out + [o for o in EXTRA_OPTIONS.get(name, []) if o not in out]


VARIANTS: list[tuple[str, dict[str, Any]]] = [(n, o) for n in NAMES for o in options_of(n)]
"""Registered names with every option set the shared properties are checked on."""


def variant_id(v: tuple[str, dict[str, Any]]) -> str:
    name, opts = v
    return name + "".join(f"-{k}={val}" for k, val in opts.items())


def make_weighter(name: str, task_names: Sequence[str], **options: Any) -> Weighter:
    cls = CLASSES[name]
    return cls(list(task_names), cls.Options(**options))


def grads_input(
    losses: Sequence[float], grads: torch.Tensor, *, step: int = 0, epoch: int = 0,
    metrics: Sequence[float] | None = None,
) -> WeighterInput:
    """A hand-made input for a gradient weighter (losses detached)."""
    return WeighterInput(
        losses=torch.tensor(losses, dtype=torch.float32), grads=grads, step=step, epoch=epoch,
        metrics=None if metrics is None else torch.tensor(metrics, dtype=torch.float32),
    )
