"""Every registered weighter x every architecture x each gradient path the weighter offers: the
real gradient engine trains the tiny CNN for a few steps with finite losses and gradients, each
task's own parameters and the shared ones all receive a gradient. The weighters come from the
registry (every installed plugin), so a new one cannot be left out."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mtlkit.gradients import GradientEngine
from mtlkit.testing.weighters import RegressionTask, build_weighter
from mtlkit.weighter import Weighter, WeighterSetup

from .conftest import ARCHS, HOST, VARIANTS, TinyCNN

REQUIRED: dict[str, Any] = {"static": lambda names: {"weights": {n: 1.0 for n in names}}}
"""Options for weighters that have no valid defaults (a factory of the task names)."""


def _weighter_variants() -> list[tuple[str, dict[str, Any] | Any]]:
    registry = HOST.weighters
    out: list[tuple[str, Any]] = []
    for name in registry.names():
        cls = registry.resolve(name)
        base = REQUIRED.get(name, {})
        out.append((name, base))
        if "rep" in cls.Options.model_fields:  # the representation path of a parameter method
            out.append((name, {"rep": True}))
    return out


WEIGHTERS = _weighter_variants()
TASKS = ["a", "b", "c"]


def _id(v: tuple[str, Any]) -> str:
    name, opts = v
    return name + ("-rep" if isinstance(opts, dict) and opts.get("rep") else "")


def _batch(step: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(6, 1, 8, 8, generator=g)
    return {"input": x, "targets": {t: torch.randn(6, generator=g) for t in TASKS}, "meta": {}}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("weighter", WEIGHTERS, ids=_id)
def test_weighter_on_architecture(weighter: tuple[str, Any], arch: str) -> None:
    torch.manual_seed(0)
    tasks = [RegressionTask(t) for t in TASKS]
    cls = ARCHS[arch]
    heads = {t.name: (lambda w, t=t: t.build_head(w, {})) for t in tasks}
    model = cls(TinyCNN(), heads, cls.Options.model_validate(VARIANTS[arch][0]))
    name, opts = weighter
    wcls: type[Weighter] = HOST.weighters.resolve(name)
    setup = WeighterSetup(feature_dim=model.representation_dim(_batch(0)["input"]),
                          shared_numel=sum(p.numel() for p in model.shared_parameters()),
                          device=torch.device("cpu"))
    w = build_weighter(wcls, opts, TASKS, setup=setup)
    engine = GradientEngine(model, tasks, w)
    opt = torch.optim.SGD([{"params": list(model.parameters())}, *w.param_groups()], lr=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        result = engine.backward(_batch(step), step=step, epoch=0)
        assert torch.isfinite(result.losses).all() and torch.isfinite(result.weights).all()
        for p in model.parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), names[id(p)]
        shared = [p.grad for p in model.shared_parameters() if p.grad is not None]
        assert shared and any(bool(g.abs().sum() > 0) for g in shared), "no shared gradient"
        for t in TASKS:
            own = [p.grad for p in model.task_parameters(t)]
            assert any(g is not None for g in own), f"task {t} got no gradient"
        opt.step()
        engine.after_step(result)


def test_the_product_covers_every_path() -> None:
    paths = set()
    for name, opts in WEIGHTERS:
        cls = HOST.weighters.resolve(name)
        raw = opts(TASKS) if callable(opts) else opts
        paths.add(cls(TASKS, cls.Options.model_validate(raw)).needs.grads)
    assert paths == {"none", "last_layer", "representation", "parameters"}
