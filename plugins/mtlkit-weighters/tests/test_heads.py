"""What the task heads get, through the real ``mtlkit.gradients.GradientEngine``.

Every registered weighter, on every gradient path it offers: each head's accumulated gradient has
a non-negative dot product with the gradient of that head's own loss, also where the method's
SHARED coefficients are negative (IMTL at T = 3, Aligned-MTL on near-parallel gradients); and
each method gives its heads exactly what its reference code does (``Heads:`` in its docstring).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mtlkit.backbone import Backbone
from mtlkit.gradients import GradientEngine
from mtlkit.model import MultiTaskModel
from mtlkit.task import MetricMeter, MetricSpec, Task
from mtlkit.weighter import Weighter, WeighterSetup

from .conftest import NAMES, host, make_weighter

H = 4  # feature width


class _Linear(Backbone):
    """``z = x W^T``: one shared layer (also the "last shared layer" GradNorm reads)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(weight)

    @property
    def feature_dim(self) -> int:
        return self.lin.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)


class _Meter(MetricMeter):
    def update(self, output: Any, target: Tensor, batch: Mapping[str, Any]) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {}


class _Regression(Task):
    """A linear head ``z . a`` and the loss ``(z . a - y)^2 / 2``."""

    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        return nn.Linear(feature_dim, 1, bias=False)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return 0.5 * (output.squeeze(-1) - target) ** 2

    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec("mse", higher_is_better=False)]

    def new_meter(self) -> MetricMeter:
        return _Meter()

    def step_metric(self, output: Tensor, target: Tensor) -> Tensor:
        return torch.exp(-self.loss(output, target).detach())


def _problem(case: str) -> tuple[MultiTaskModel, list[Task], dict[str, Any]]:
    """A tiny model and one batch.

    The crafted cases use one sample ``x = 1`` and targets with residual 1, so the shared
    gradient of task i (w.r.t. W and w.r.t. the features alike) is exactly its head vector
    ``a_i``, and its own head gradient is the feature vector ``z = W``: the head vectors choose
    the Gram matrix. ``random3`` gives IMTL a negative coefficient, ``parallel2`` (``[1, 0]`` and
    ``[10, 1]``) gives Aligned-MTL one; ``batch`` is an ordinary random regression.
    """
    gen = torch.Generator().manual_seed(7)
    if case == "batch":
        t, f, b = 3, 3, 5
        weight = torch.randn(H, f, generator=gen)
        heads = torch.randn(t, H, generator=gen)
        x = torch.randn(b, f, generator=gen)
        y = torch.randn(b, t, generator=gen)
    else:
        if case == "random3":
            heads = torch.randn(3, H, generator=torch.Generator().manual_seed(1))
        elif case == "parallel2":
            heads = torch.tensor([[1.0, 0.0, 0.0, 0.0], [10.0, 1.0, 0.0, 0.0]])
        elif case == "conflict2":
            heads = torch.tensor([[1.0, 0.2, 0.0, 0.0], [-1.0, 0.3, 0.1, 0.0]])
        else:
            raise ValueError(case)
        t = heads.shape[0]
        weight = torch.tensor([[0.5], [-0.3], [0.8], [0.2]])
        x = torch.ones(1, 1)
        y = (heads @ weight[:, 0] - 1.0)[None, :]  # residual z . a_i - y_i = 1
    names = [f"t{i}" for i in range(t)]
    tasks: list[Task] = [_Regression(n) for n in names]
    model = MultiTaskModel(_Linear(weight), {n: task.build_head(H, {})
                                             for n, task in zip(names, tasks)})
    with torch.no_grad():
        for n, a in zip(names, heads):
            model.heads[n].weight.copy_(a[None, :])
    batch = {"input": x, "targets": {n: y[:, i] for i, n in enumerate(names)}, "meta": {}}
    return model, tasks, batch


CASES = ["random3", "parallel2", "conflict2", "batch"]


def _own_head_grads(model: MultiTaskModel, tasks: Sequence[Task], batch: dict[str, Any]
                    ) -> list[Tensor]:
    """The gradient of each task's own loss w.r.t. its head (computed apart, from scratch)."""
    _, outputs = model(batch["input"])
    out = []
    for task in tasks:
        loss = task.loss(outputs[task.name], batch["targets"][task.name])
        (g,) = torch.autograd.grad(loss, list(model.heads[task.name].parameters()))
        out.append(g.reshape(-1))
    return out


def _engine(name: str, opts: dict[str, Any], case: str) -> tuple[
        GradientEngine, Weighter, MultiTaskModel, list[Task], dict[str, Any]]:
    model, tasks, batch = _problem(case)
    weighter = make_weighter(name, [t.name for t in tasks], **opts)
    shared = sum(p.numel() for p in model.shared_parameters())
    weighter.setup(WeighterSetup(feature_dim=H, shared_numel=shared, device=torch.device("cpu")))
    with torch.no_grad():  # the weighter's own parameters away from their (trivial) start
        gen = torch.Generator().manual_seed(3)
        for p in weighter.parameters():
            p.add_(0.4 * torch.rand(p.shape, generator=gen) - 0.2)
    return GradientEngine(model, tasks, weighter), weighter, model, tasks, batch


def _path_variants() -> list[tuple[str, dict[str, Any]]]:
    """Every registered name, on each gradient path it offers (``rep`` false and true), and IMTL
    with and without its loss scales."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name in NAMES:
        fields = host().weighters.resolve(name).Options.model_fields
        reps = [{}, {"rep": True}] if "rep" in fields else [{}]
        extra = [{}, {"loss_balance": False}] if "loss_balance" in fields else [{}]
        out += [(name, {**r, **e}) for r in reps for e in extra]
    return out


NEGATIVE_SHARED = {"imtl", "aligned_mtl"}
"""Methods whose shared coefficients go negative on the crafted cases (checked, so the property
below is not vacuous)."""


@pytest.mark.parametrize(
    "variant", _path_variants(),
    ids=lambda v: v[0] + "".join(f"-{k}={val}" for k, val in v[1].items()),
)
def test_every_head_descends_its_own_loss(variant: tuple[str, dict[str, Any]]) -> None:
    name, opts = variant
    negative = False
    for case in CASES:
        engine, _, model, tasks, batch = _engine(name, opts, case)
        own = _own_head_grads(model, tasks, batch)
        model.zero_grad(set_to_none=True)
        result = engine.backward(batch, step=0, epoch=0)
        negative |= bool((result.weights < 0).any())
        for task, g in zip(tasks, own):
            (p,) = model.heads[task.name].parameters()
            assert p.grad is not None
            dot = float(p.grad.reshape(-1) @ g)
            bound = 1e-6 * float(p.grad.norm() * g.norm())
            assert dot >= -bound, (case, task.name, result.weights.tolist(), dot)
    if name in NEGATIVE_SHARED:
        assert negative, f"{name}: no negative shared coefficient, the check above is vacuous"


HEADS: dict[str, str] = {
    "pcgrad": "own", "cagrad": "own", "aligned_mtl": "own", "imtl": "loss_scale",
}
"""Each method's head contract from its reference code, where it is not ``weights`` (the
weights times the head's own loss gradient, as a backward of ``sum_i w_i L_i`` gives)."""


@pytest.mark.parametrize("name", NAMES)
def test_heads_get_what_the_reference_code_gives_them(name: str) -> None:
    engine, weighter, model, tasks, batch = _engine(name, {}, "batch")
    own = _own_head_grads(model, tasks, batch)
    model.zero_grad(set_to_none=True)
    result = engine.backward(batch, step=0, epoch=0)
    contract = HEADS.get(name, "weights")
    if contract == "own":
        scale = torch.ones(len(tasks))
    elif contract == "loss_scale":
        scale = weighter.loss_scale.detach().exp()  # type: ignore[operator]
    else:
        scale = result.weights
    for task, g, s in zip(tasks, own, scale):
        (p,) = model.heads[task.name].parameters()
        torch.testing.assert_close(p.grad.reshape(-1), s * g, rtol=1e-5, atol=1e-7)
    module = importlib.import_module(type(weighter).__module__)
    assert "\nHeads: " in (module.__doc__ or ""), f"{name}: document the head contract"


def test_imtl_g_alone_trains_heads_on_their_own_losses() -> None:
    engine, _, model, tasks, batch = _engine("imtl", {"loss_balance": False}, "random3")
    own = _own_head_grads(model, tasks, batch)
    model.zero_grad(set_to_none=True)
    result = engine.backward(batch, step=0, epoch=0)
    assert bool((result.weights < 0).any())  # a negative shared coefficient ...
    for task, g in zip(tasks, own):  # ... and every head on its own, unscaled gradient
        (p,) = model.heads[task.name].parameters()
        torch.testing.assert_close(p.grad.reshape(-1), g, rtol=1e-5, atol=1e-7)
