"""``update_every: k``: gradient methods compute their weights every k steps; in between, the last
weights combine the representation gradients (the cost of equal weighting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mtlkit.config import load_config
from mtlkit.data import batch_generator
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer
from mtlkit.weighter import Needs


def _registered() -> dict[str, type]:
    host = PluginHost()
    return {e.name: host.weighters.resolve(e.name) for e in host.weighters.entries()}


def _takes_update_every(cls: type) -> bool:
    return "update_every" in getattr(getattr(cls, "Options", None), "model_fields", {})


GRAM_METHODS = sorted(n for n, c in _registered().items() if _takes_update_every(c))
"""Every registered method with ``update_every`` (from the registry, not a hand-kept list)."""

NO_UPDATE_EVERY = {"db_mtl", "moco"}
"""Parameter-gradient methods without ``update_every``: their update combines running averages
of past gradients, not ``sum_i w_i g_i`` of this step's, so "the last weights on this step's
gradients" would be another method (docs/weighting.md)."""


def test_every_parameter_gradient_method_has_update_every_or_a_reason() -> None:
    param = {
        n for n, c in _registered().items()
        if getattr(c, "needs", None) is not None and c.needs.grads == "parameters"
    }
    assert param - NO_UPDATE_EVERY <= set(GRAM_METHODS)
    assert {"fairgrad", "upgrad", "excess_mtl", "modo", "sdmgrad", "pcgrad"} <= set(GRAM_METHODS)


def _trainer(tmp_path: Path, weighter: dict[str, Any]) -> Trainer:
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "seed": 3,
        "trainer": {"epochs": 1, "batch_size": 16, "progress": "off", "plot": False},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "backbone": {"name": "mlp", "in_features": 16, "hidden": [32]},
        "tasks": [{"name": "classification", "id": "a"}, {"name": "classification", "id": "b"},
                  {"name": "classification", "id": "c"}],
        "weighter": weighter,
        "data": {"name": "synthetic", "num_samples": 160, "num_features": 16},
    }
    return Trainer(load_config(data=cfg), PluginHost())


@pytest.mark.parametrize("name", GRAM_METHODS)
def test_needs_between_updates_are_representation_gradients(name: str, tmp_path: Path) -> None:
    w = _trainer(tmp_path, {"name": name, "update_every": 3}).weighter
    assert w.needs_at(0) == w.needs and w.needs_at(3) == w.needs
    between = w.needs_at(4)
    assert isinstance(between, Needs) and between.grads == "representation" and between.counters
    assert _trainer(tmp_path, {"name": name}).weighter.needs_at(4) == w.needs


@pytest.mark.parametrize("name", GRAM_METHODS)
def test_between_updates_the_last_weights_give_the_exact_shared_gradient(
    name: str, tmp_path: Path
) -> None:
    """On a reuse step the shared gradient equals sum_i w_i g_i with the weights of the last
    update (computed here on the parameter path with the weighter frozen at those weights)."""
    trainer = _trainer(tmp_path, {"name": name, "update_every": 2})
    idx = torch.arange(16)
    batch = trainer.data.train.batch(idx, train=True, generator=batch_generator(0, 0, 0))
    trainer.optimizer.zero_grad(set_to_none=True)
    first = trainer.engine.backward(batch, 0, 0).weights.clone()
    trainer.optimizer.zero_grad(set_to_none=True)
    result = trainer.engine.backward(batch, 1, 0)  # a reuse step
    torch.testing.assert_close(result.weights, first)
    shared = trainer.model.shared_parameters()
    got = [p.grad.clone() for p in shared]
    # the same gradient by hand: per-task parameter gradients combined with the reused weights
    _, outputs = trainer.model(batch["input"])
    losses = trainer.engine.task_losses(outputs, batch)
    expected = [torch.zeros_like(p) for p in shared]
    for w, loss in zip(first, losses):
        for e, g in zip(expected, torch.autograd.grad(loss, shared, retain_graph=True)):
            e.add_(w * g)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_reuse_steps_cost_one_trunk_backward(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, {"name": "pcgrad", "update_every": 4})
    first = trainer.model.shared_parameters()[0]
    calls = [0]
    first.register_hook(lambda g: calls.__setitem__(0, calls[0] + 1))
    batch = trainer.data.train.batch(torch.arange(16), train=True,
                                     generator=batch_generator(0, 0, 0))
    counts = []
    for step in range(4):
        calls[0] = 0
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.engine.backward(batch, step, 0)
        counts.append(calls[0])
    assert counts == [3, 1, 1, 1]  # T trunk backwards on an update step, one in between


def test_resume_across_reuse_steps_is_bit_identical(tmp_path: Path) -> None:
    full = _trainer(tmp_path / "full", {"name": "nash_mtl", "update_every": 3})
    full.fit()
    part = _trainer(tmp_path / "part", {"name": "nash_mtl", "update_every": 3})
    part.config.trainer.max_steps = 4
    part.fit()
    resumed = _trainer(tmp_path / "part", {"name": "nash_mtl", "update_every": 3})
    resumed.fit(resume=True, allow_config_change=True)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
