"""The functional path (``mtlkit.WeightedStep`` / ``mtlkit.backward``) fills ``.grad`` exactly as
the Trainer's engine does, for every registered weighter, on any module."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import mtlkit
from mtlkit.config import load_config
from mtlkit.data import batch_generator
from mtlkit.errors import ConfigError, WeighterError
from mtlkit.functional import WeightedStep, task_parameters
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import tiny_config

REQUIRED_OPTIONS: dict[str, dict[str, Any]] = {"static": {"weights": {"a": 1.0, "b": 0.5}}}
"""Options a weighter cannot do without (everything else runs on its defaults)."""


def _registered() -> list[str]:
    host = PluginHost()
    return sorted(host.weighters.names())


def _trainer(tmp_path: Path, name: str) -> Trainer:
    cfg = tiny_config(tmp_path, weighter={"name": name, **REQUIRED_OPTIONS.get(name, {})},
                      trainer__batch_size=32)
    return Trainer(load_config(data=cfg), PluginHost())


def _batch(trainer: Trainer):
    return trainer.data.train.batch(torch.arange(32), train=True,
                                    generator=batch_generator(0, 0, 0))


def _grads(params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in params]


@pytest.mark.parametrize("name", _registered())
def test_functional_path_matches_the_trainer(tmp_path: Path, name: str) -> None:
    trainer = _trainer(tmp_path, name)
    batch = _batch(trainer)
    model, weighter = trainer.model, trainer.weighter
    start_model = copy.deepcopy(model.state_dict())
    own = copy.deepcopy(weighter)  # set up, in the same state as the trainer's
    params = [*model.parameters(), *weighter.parameters()]

    torch.manual_seed(0)
    trainer.optimizer.zero_grad(set_to_none=True)
    engine_weights = trainer.engine.backward(batch, 0, 0).weights
    expected = _grads(params)

    model.load_state_dict(start_model)
    trainer.optimizer.zero_grad(set_to_none=True)
    for p in weighter.parameters():
        p.grad = None
    step = WeightedStep(own, shared=model.shared_parameters(),
                        last_shared=model.backbone.last_shared_parameters(),
                        steps_per_epoch=1000, setup=False)
    torch.manual_seed(0)
    features, outputs = model(batch["input"])
    losses = trainer.engine.task_losses(outputs, batch)
    metrics = torch.stack([
        t.step_metric(outputs[t.name], batch["targets"][k])
        for t, k in zip(trainer.tasks, trainer.target_keys)
    ])
    weights = step.backward(losses, features=features,
                            metrics=metrics if own.needs.step_metrics else None)
    got = _grads([*model.parameters(), *own.parameters()])
    torch.testing.assert_close(weights, engine_weights, rtol=1e-5, atol=1e-6)
    for i, (a, b) in enumerate(zip(expected, got)):
        if a is None or b is None:
            present = a if a is not None else b
            assert present is None or float(present.abs().sum()) == 0, i
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"{name}: tensor {i}")


class _Net(nn.Module):
    """Any module: an encoder and two heads, no mtlkit class anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
        self.head_a = nn.Linear(8, 1)
        self.head_b = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.head_a(z).squeeze(1), self.head_b(z)


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.randn(n, generator=g), torch.randint(0, 3, (n,),
                                                                                     generator=g)


def _losses(net: _Net, x, ya, yb) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    z, a, b = net(x)
    return z, {"a": nn.functional.mse_loss(a, ya), "b": nn.functional.cross_entropy(b, yb)}


@pytest.mark.parametrize("name", ["equal", "pcgrad", "mgda", "nash_mtl"])
def test_plain_module_and_gradient_accumulation(name: str) -> None:
    """Two half batches accumulate into .grad as autograd would (the shared update of each half
    is the method's own, so the sum equals two separate steps' gradients added)."""
    torch.manual_seed(0)
    net = _Net()
    x, ya, yb = _data()
    w = mtlkit.create_weighter(name, ["a", "b"])
    step = WeightedStep(w, shared=net.encoder.parameters(), steps_per_epoch=10)
    singles = []
    for half in (slice(0, 12), slice(12, 24)):
        net.zero_grad(set_to_none=True)
        z, losses = _losses(net, x[half], ya[half], yb[half])
        step.step = 0
        step.backward(losses, features=z)
        singles.append([p.grad.clone() for p in net.parameters()])
    net.zero_grad(set_to_none=True)
    for half in (slice(0, 12), slice(12, 24)):
        z, losses = _losses(net, x[half], ya[half], yb[half])
        step.step = 0
        step.backward(losses, features=z)
    for p, a, b in zip(net.parameters(), *singles):
        torch.testing.assert_close(p.grad, a + b)


def test_heads_are_found_from_the_graph() -> None:
    net = _Net()
    x, ya, yb = _data()
    z, losses = _losses(net, x, ya, yb)
    shared = {id(p) for p in net.encoder.parameters()}
    found = task_parameters(losses["a"], z, shared)
    assert {id(p) for p in found} == {id(p) for p in net.head_a.parameters()}
    # without the features as a stop, the walk still skips the shared parameters
    assert {id(p) for p in task_parameters(losses["b"], None, shared)} == {
        id(p) for p in net.head_b.parameters()
    }


def test_amp_grad_scaler_gives_the_unscaled_gradients() -> None:
    torch.manual_seed(0)
    net = _Net()
    x, ya, yb = _data()
    plain = WeightedStep(mtlkit.create_weighter("pcgrad", ["a", "b"]),
                         shared=net.encoder.parameters(), steps_per_epoch=10)
    z, losses = _losses(net, x, ya, yb)
    plain.backward(losses, features=z)
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    scaled = WeightedStep(mtlkit.create_weighter("pcgrad", ["a", "b"]),
                          shared=net.encoder.parameters(), scaler=scaler, steps_per_epoch=10)
    z, losses = _losses(net, x, ya, yb)
    scaled.backward(losses, features=z)
    scaler.unscale_(opt)
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("name", "whole"), [("pcgrad", True), ("mgda", False)])
def test_torch_compile_of_the_model(name: str, whole: bool) -> None:
    """Parameter gradients work through a model compiled as one graph; representation gradients
    need the encoder compiled alone (its output is then the features) and say so otherwise."""
    torch.manual_seed(0)
    net = _Net()
    x, ya, yb = _data()
    opts = {"rep": True} if name == "mgda" else {}
    step = WeightedStep(mtlkit.create_weighter(name, ["a", "b"], **opts),
                        shared=net.encoder.parameters(), steps_per_epoch=10)
    z, losses = _losses(net, x, ya, yb)
    step.backward(losses, features=z)
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    if whole:
        z, a, b = torch.compile(net, backend="aot_eager")(x)
    else:
        z = torch.compile(net.encoder, backend="aot_eager")(x)
        a, b = net.head_a(z).squeeze(1), net.head_b(z)
    losses = {"a": nn.functional.mse_loss(a, ya), "b": nn.functional.cross_entropy(b, yb)}
    step.step = 0
    step.backward(losses, features=z)
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)


def test_features_hidden_inside_a_compiled_graph_are_named() -> None:
    net = _Net()
    x, ya, yb = _data()
    z, a, b = torch.compile(net, backend="aot_eager")(x)
    losses = {"a": nn.functional.mse_loss(a, ya), "b": nn.functional.cross_entropy(b, yb)}
    step = WeightedStep(mtlkit.create_weighter("mgda", ["a", "b"], rep=True))
    with pytest.raises(ConfigError, match="compile the encoder alone"):
        step.backward(losses, features=z)


def test_clear_errors_for_what_a_weighter_needs() -> None:
    net = _Net()
    x, ya, yb = _data()
    with pytest.raises(ConfigError, match="shared="):
        WeightedStep(mtlkit.create_weighter("pcgrad", ["a", "b"]))
    with pytest.raises(ConfigError, match="last_shared="):
        WeightedStep(mtlkit.create_weighter("gradnorm", ["a", "b"]))
    dwa = WeightedStep(mtlkit.create_weighter("dwa", ["a", "b"]))
    z, losses = _losses(net, x, ya, yb)
    with pytest.raises(ValueError, match="epoch"):
        dwa.backward(losses)
    with pytest.raises(ConfigError, match="after_step"):
        mtlkit.backward(losses, mtlkit.create_weighter("dynamic", ["a", "b"]), features=z)
    dynamic = WeightedStep(mtlkit.create_weighter("dynamic", ["a", "b"]))
    dynamic.backward(losses, features=z)
    z, losses = _losses(net, x, ya, yb)
    with pytest.raises(WeighterError, match="after_step"):
        dynamic.backward(losses, features=z)
    dynamic.after_step()
    dynamic.backward(losses, features=z)
    with pytest.raises(ValueError, match="missing"):
        mtlkit.backward({"a": losses["a"]}, mtlkit.create_weighter("equal", ["a", "b"]))
    with pytest.raises(ConfigError, match="unknown field"):
        mtlkit.create_weighter("nash_mtl", ["a", "b"], max_nrom=1.0)


def test_one_call_backward_returns_the_weights() -> None:
    net = _Net()
    x, ya, yb = _data()
    _, losses = _losses(net, x, ya, yb)
    w = mtlkit.backward(losses, mtlkit.create_weighter("uncertainty", ["a", "b"]))
    assert w.shape == (2,) and all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(("name", "rep", "partial"),
                         [("pcgrad", "0", "0"), ("mgda", "1", "0"), ("pcgrad", "0", "1"),
                          ("mgda", "1", "1")])
def test_two_ranks_give_the_single_process_gradients(
    tmp_path: Path, name: str, rep: str, partial: str
) -> None:
    """Under torchrun (gloo, 2 ranks, half a batch each) WeightedStep averages losses, per-task
    gradients and the final .grad itself: rank 0 ends with the gradients of one process that
    saw the whole batch. ``partial``: labels missing unevenly over the ranks (5 of task a's on
    rank 0, 3 of b's on rank 1), with ``labelled=`` counts: still the single-process gradients."""
    import os
    import subprocess
    import sys

    runner = Path(__file__).parent / "helpers" / "ddp_functional_runner.py"
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"grads{nproc}.pt"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(runner), str(out), name, rep, partial]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        outs[nproc] = torch.load(out, weights_only=True)
    for a, b in zip(outs[1], outs[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
