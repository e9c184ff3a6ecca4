"""Conformance checks for architectures: the cut is a real cut, ownership is a partition, and
every gradient path of the engine gives the plain gradient of the summed losses."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlkit.architecture import Architecture
from mtlkit.testing._checks import Check, run_checks
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput

ArchitectureFactory = Callable[[], Architecture]
"""Builds a fresh model (same seed, same weights) for one check."""

PATHS = ("none", "last_layer", "representation", "parameters", "parameters-batched")
"""The engine's gradient paths; ``parameters-batched`` is the parameter path with its T rows
from one vmapped backward (``GradientEngine(batched_backward=True)``)."""


def _loss(output: Any) -> Tensor:
    """A task loss that depends on every output value (outputs may be tensors or tuples)."""
    if isinstance(output, Tensor):
        return output.float().square().mean()
    return sum(_loss(o) for o in output)  # type: ignore[return-value]


class SumWeighter(Weighter):
    """Weights 1 on the declared gradient path: the engine's update must then be the gradient
    of the summed losses, whatever the path."""

    def __init__(self, task_names: Sequence[str], grads: str) -> None:
        super().__init__(task_names)
        self.needs = Needs(grads=grads, features=True)  # type: ignore[arg-type]

    def combine(self, inp: WeighterInput) -> Update:
        w = self.record(torch.ones(self.num_tasks))
        if self.needs.grads in ("none", "last_layer"):
            return Update(weights=w, loss=inp.losses.sum())
        assert inp.grads is not None
        return Update(weights=w, grad=inp.grads.sum(0))


class _LossTask:
    """The minimum of a Task the engine calls: ``name``, ``loss``, ``update_state``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def loss(self, output: Any, target: Tensor) -> Tensor:
        return _loss(output)

    def update_state(self, output: Any, target: Tensor) -> None:
        pass


def _ids(params: Sequence[Tensor]) -> set[int]:
    return {id(p) for p in params}


def _ownership(make: ArchitectureFactory) -> None:
    model = make()
    trainable = [p for p in model.parameters() if p.requires_grad]
    shared = model.shared_parameters()
    owned = {n: model.task_parameters(n) for n in model.task_names}
    seen = _ids(shared)
    if len(seen) != len(shared):
        raise AssertionError("shared_parameters() lists a parameter twice")
    for name, params in owned.items():
        if not params:
            raise AssertionError(f"task {name!r} owns no parameter (its head at least)")
        clash = seen & _ids(params)
        if clash:
            raise AssertionError(f"task {name!r} owns {len(clash)} parameter(s) that are also"
                                 " shared or another task's")
        seen |= _ids(params)
    if seen != _ids(trainable):
        raise AssertionError("shared and task parameters do not cover every trainable parameter")
    last = model.last_shared_parameters()
    if not last or not _ids(last) <= _ids(shared):
        raise AssertionError("last_shared_parameters() must be a non-empty subset of the shared")


def _cut(make: ArchitectureFactory, x: Tensor) -> None:
    """On a detached representation, task i's output reaches its own parameters only."""
    model = make()
    z = model.forward_shared(x)
    if z.ndim != 2 or z.shape[0] != x.shape[0]:
        raise AssertionError(f"forward_shared gives {tuple(z.shape)}, not [B, N]")
    if model.representation_dim(x) != z.shape[1]:
        raise AssertionError("representation_dim() differs from forward_shared's width")
    outputs = model.forward_tasks(z.detach().requires_grad_(True))
    if list(outputs) != model.task_names:
        raise AssertionError(f"outputs for {list(outputs)}, tasks {model.task_names}")
    names = {id(p): n for n, p in model.named_parameters()}
    for name in model.task_names:
        model.zero_grad(set_to_none=True)
        _loss(outputs[name]).backward(retain_graph=True)
        mine = _ids(model.task_parameters(name))
        leaks = [names[id(p)] for p in model.parameters()
                 if p.grad is not None and id(p) not in mine and bool(p.grad.abs().sum() > 0)]
        if leaks:
            raise AssertionError(
                f"task {name!r}'s output, computed from a detached representation, reaches"
                f" parameters it does not own: {leaks[:4]} (the cut must hold everything shared)"
            )


def _paths(make: ArchitectureFactory, x: Tensor, path: str) -> None:
    """The engine on ``path`` with unit weights fills exactly the summed-loss gradient."""
    from mtlkit.gradients import GradientEngine

    model = make()
    model.train()
    tasks = [_LossTask(n) for n in model.task_names]
    batch = {"input": x, "targets": {n: torch.zeros(x.shape[0]) for n in model.task_names},
             "meta": {}}
    grads, _, batched = path.partition("-")
    engine = GradientEngine(model, tasks, SumWeighter(model.task_names, grads),  # type: ignore[arg-type]
                            batched_backward=bool(batched))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    engine.backward(batch)  # type: ignore[arg-type]
    got = {n: p.grad for n, p in model.named_parameters()}
    model.load_state_dict(state)  # batch-norm statistics as before the engine's forward
    model.zero_grad(set_to_none=True)
    _, outputs = model(x)
    sum(_loss(outputs[n]) for n in model.task_names).backward()
    for n, p in model.named_parameters():
        want, have = p.grad, got[n]
        if want is None and have is None:
            continue
        want = torch.zeros_like(p) if want is None else want
        have = torch.zeros_like(p) if have is None else have
        if not torch.allclose(have, want, rtol=1e-4, atol=1e-6):
            err = float((have - want).abs().max())
            raise AssertionError(f"path {path!r}: gradient of {n} differs by {err:.3g} from the"
                                 " summed losses' gradient")


def _state_roundtrip(make: ArchitectureFactory, x: Tensor) -> None:
    model = make().eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = make().eval()
    other.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        a, b = model(x)[1], other(x)[1]
    for n in model.task_names:
        if not torch.equal(_loss(a[n]), _loss(b[n])):
            raise AssertionError(f"task {n!r}: output differs after a state_dict round trip")


def architecture_checks(make: ArchitectureFactory, x: Tensor, label: str = "") -> list[Check]:
    """The checks of the model ``make()`` builds, on input batch ``x`` (a few samples)."""
    pre = f"{label}/" if label else ""
    checks = [
        Check(f"{pre}ownership", lambda: _ownership(make)),
        Check(f"{pre}cut", lambda: _cut(make, x)),
        Check(f"{pre}state_roundtrip", lambda: _state_roundtrip(make, x)),
    ]
    checks += [Check(f"{pre}path-{p}", lambda p=p: _paths(make, x, p)) for p in PATHS]
    return checks


def check_architecture(make: ArchitectureFactory, x: Tensor, label: str = "") -> None:
    """Run :func:`architecture_checks`, raising one AssertionError listing every failure."""
    run_checks(architecture_checks(make, x, label), label or "architecture")
