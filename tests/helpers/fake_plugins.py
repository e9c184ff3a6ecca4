"""In-repo test plugins registered with ``pm.register`` (no installation needed)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from mtlkit.hookspecs import hookimpl
from mtlkit.registry import Registry
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput


class RecordingRepWeighter(Weighter):
    """Declares representation gradients and records what it receives."""

    needs = Needs(grads="representation")

    def __init__(self, task_names, options=None) -> None:
        super().__init__(task_names, options)
        self.seen: list[WeighterInput] = []

    def combine(self, inp: WeighterInput) -> Update:
        self.seen.append(inp)
        assert inp.grads is not None
        return Update(weights=self.record(torch.ones(self.num_tasks)), grad=inp.grads.sum(0))


class RecordingParamWeighter(Weighter):
    """Declares parameter gradients; sums them (so it must equal equal weighting)."""

    needs = Needs(grads="parameters", counters=True, step_metrics=True, after_step=True)

    def __init__(self, task_names, options=None) -> None:
        super().__init__(task_names, options)
        self.seen: list[WeighterInput] = []
        self.after: list[WeighterInput] = []

    def combine(self, inp: WeighterInput) -> Update:
        self.seen.append(inp)
        assert inp.grads is not None
        return Update(weights=self.record(torch.ones(self.num_tasks)), grad=inp.grads.sum(0))

    def after_step(self, inp: WeighterInput) -> None:
        self.after.append(inp)


class NaNWeighter(Weighter):
    """Returns the sum of losses; used with a task that goes non-finite."""

    def combine(self, inp: WeighterInput) -> Update:
        return Update(weights=self.weights, loss=inp.losses.sum())


class TestPlugin:
    """Registers the recording weighters."""

    @hookimpl
    def register_weighters(self, registry: Registry) -> None:
        registry.add("rec-rep", RecordingRepWeighter)
        registry.add("rec-param", RecordingParamWeighter)


class ClashPlugin:
    """Registers a weighter name the built-ins already use."""

    @hookimpl
    def register_weighters(self, registry: Registry) -> None:
        registry.add("equal", RecordingRepWeighter)
        registry.add("clash-only", RecordingRepWeighter)


class RaisingPlugin:
    """Its hook raises half-way through registering."""

    @hookimpl
    def register_weighters(self, registry: Registry) -> None:
        registry.add("half-done", RecordingRepWeighter)
        raise RuntimeError("boom in hook")


def make_fake_distribution(
    root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str] | None = None
) -> Path:
    """Write an installed-looking distribution (dist-info + modules) under ``root``."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[mtlkit]\n{eps}\n")
    for name, source in (modules or {}).items():
        (root / f"{name}.py").write_text(source)
    return root


def all_none(grads: list[Tensor | None]) -> bool:
    return all(g is None or bool((g == 0).all()) for g in grads)
