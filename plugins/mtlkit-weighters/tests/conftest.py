"""Fixtures for mtlkit-weighters: the registry, and a fake trainer that feeds a weighter exactly
what its ``needs`` declare, the way ``mtlkit.gradients.GradientEngine`` does."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor

from mtlkit.errors import WeighterError
from mtlkit.plugins import PluginHost
from mtlkit.weighter import Update, Weighter, WeighterInput, WeighterSetup

DIST = "mtlkit-weighters"

_HOST: PluginHost | None = None


def host() -> PluginHost:
    """The process-wide host with entry points loaded (our plugin must be installed)."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


NAMES = [e.name for e in host().weighters.entries() if e.dist == DIST]
"""Every weighter this distribution registers, read from the plugin registry (sorted)."""

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    *[(n, {}) for n in NAMES],
    ("mgda", {"rep": True}),
    ("mgda", {"normalize": "loss+"}),
    ("aligned_mtl", {"rep": True}),
    ("imtl", {"rep": True, "loss_balance": False}),
    ("famo", {"update": "sgd"}),
    ("pcgrad", {"order": "fixed"}),
]
"""Registered names with the option sets the shared properties are checked on."""


def variant_id(v: tuple[str, dict[str, Any]]) -> str:
    name, opts = v
    return name + "".join(f"-{k}={val}" for k, val in opts.items())


def make_weighter(name: str, task_names: Sequence[str], **options: Any) -> Weighter:
    cls = host().weighters.resolve(name)
    return cls(list(task_names), cls.Options(**options))


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """Through ``torch.save`` / ``torch.load(weights_only=True)``, as mtlkit checkpoints are."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@dataclass
class StepOut:
    update: Update
    inp: WeighterInput
    losses: Tensor


class FakeTrainer:
    """A tiny deterministic multi-task problem driven like mtlkit's trainer drives a weighter.

    Model: shared ``W`` ([H, F], the backbone and its only, hence last, layer), features
    ``z = tanh(x W^T)``, one linear head ``v_i`` ([H]) per task, loss ``mean((z v_i - y_i)^2)``,
    step metric ``exp(-loss)``. Batch ``s`` is a pure function of ``(seed, s)``, so a resumed run
    sees the batches the uninterrupted one saw. ``perm`` reorders the tasks (and their data).
    One SGD optimizer holds the model and the weighter's param groups; ``steps_per_epoch`` makes
    the epoch counter. As in the real engine, the stacked gradients are handed over as scratch,
    and each head gets its own loss gradient times ``Update.head_weights`` (None: the weights).
    """

    def __init__(
        self,
        weighter: Weighter,
        num_tasks: int,
        *,
        seed: int = 0,
        lr: float = 0.05,
        features: int = 5,
        hidden: int = 4,
        batch: int = 8,
        steps_per_epoch: int = 2,
        perm: Sequence[int] | None = None,
        duplicate: bool = False,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.num_tasks = num_tasks
        self.perm = list(perm) if perm is not None else list(range(num_tasks))
        self.features, self.batch, self.steps_per_epoch = features, batch, steps_per_epoch
        self.W = torch.nn.Parameter(torch.randn(hidden, features, generator=g) * 0.5)
        heads = torch.randn(num_tasks, hidden, generator=g)
        self.targets = torch.randn(num_tasks, features, generator=g)  # y_i = x . t_i
        if duplicate:  # every task identical: singular Gram matrices
            heads[:] = heads[0]
            self.targets[:] = self.targets[0]
        self.heads = [torch.nn.Parameter(heads[i].clone()) for i in self.perm]
        self.targets = self.targets[self.perm]
        self.weighter = weighter
        weighter.setup(WeighterSetup(feature_dim=hidden, shared_numel=self.W.numel(),
                                     device=torch.device("cpu")))
        groups: list[dict[str, Any]] = [{"params": [self.W, *self.heads]}]
        groups += weighter.param_groups()
        self.opt = torch.optim.SGD(groups, lr=lr)
        self.step_index = 0

    # --- state, as a checkpoint would hold it ---------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return roundtrip({
            "W": self.W.detach().clone(),
            "heads": [h.detach().clone() for h in self.heads],
            "opt": self.opt.state_dict(),
            "weighter": self.weighter.state_dict(),
            "step": self.step_index,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.W.copy_(state["W"])
            for h, s in zip(self.heads, state["heads"]):
                h.copy_(s)
        self.opt.load_state_dict(state["opt"])
        self.weighter.load_state_dict(state["weighter"])
        self.step_index = int(state["step"])

    # --- one step -------------------------------------------------------------------------------
    def data(self, step: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(1000 * self.seed + step)
        x = torch.randn(self.batch, self.features, generator=g)
        noise = 0.1 * torch.randn(self.num_tasks, self.batch, generator=g)
        return x, x @ self.targets.T + noise[self.perm].T  # [B, F], [B, T]

    def _losses(self, z: Tensor, y: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Per-task losses kept apart (each differentiated alone), stacked, and step metrics."""
        per_task = [((z @ h - y[:, i]) ** 2).mean() for i, h in enumerate(self.heads)]
        losses = torch.stack(per_task)
        return per_task, losses, torch.exp(-losses.detach())

    def step(self) -> StepOut:
        w = self.weighter
        needs = w.needs
        step = self.step_index
        epoch = step // self.steps_per_epoch
        counters = {"step": step, "epoch": epoch} if needs.counters else {}
        x, y = self.data(step)
        self.opt.zero_grad(set_to_none=True)
        z = torch.tanh(x @ self.W.T)
        mode = needs.grads
        if mode in ("none", "last_layer"):
            per_task, losses, metrics = self._losses(z, y)
            grads = None
            if mode == "last_layer":
                grads = torch.stack([
                    torch.autograd.grad(per_task[i], self.W, retain_graph=True)[0].reshape(-1)
                    for i in range(self.num_tasks)
                ])
            inp = WeighterInput(losses=losses, features=z if needs.features else None,
                                grads=grads, metrics=metrics if needs.step_metrics else None,
                                grads_scratch=grads is not None, **counters)
            update = w.combine(inp)
            assert update.loss is not None and update.grad is None
            update.loss.backward()
        else:
            rep = mode == "representation"
            zz = z.detach().requires_grad_(True) if rep else z
            per_task, losses, metrics = self._losses(zz, y)
            wrt = zz if rep else self.W
            grads_list, head_grads = [], []
            for i in range(self.num_tasks):
                gi = torch.autograd.grad(per_task[i], [wrt, self.heads[i]],
                                         retain_graph=not rep and i < self.num_tasks - 1)
                grads_list.append(gi[0] if rep else gi[0].reshape(-1))
                head_grads.append(gi[1])
            grads = torch.stack(grads_list)
            inp = WeighterInput(losses=losses.detach(),
                                features=z.detach() if needs.features else None, grads=grads,
                                metrics=metrics if needs.step_metrics else None,
                                grads_scratch=True, **counters)
            update = w.combine(inp)
            assert update.grad is not None
            # each head: its own loss gradient times Update.head_weights, as the engine does
            hw = update.weights if update.head_weights is None else update.head_weights
            if not bool((hw >= 0).all()):
                raise WeighterError(f"negative head weights {hw.tolist()}")
            for h, hg, wi in zip(self.heads, head_grads, hw.detach()):
                h.grad = hg * wi
            if rep:
                assert update.grad.shape == z.shape
                z.backward(update.grad)
            else:
                assert update.grad.shape == (self.W.numel(),)
                self.W.grad = update.grad.view_as(self.W).clone()
            if update.loss is not None:
                update.loss.backward()
        self.opt.step()
        if needs.after_step:
            w.after_step(WeighterInput(losses=losses.detach(),
                                       metrics=metrics if needs.step_metrics else None,
                                       **counters))
        self.step_index += 1
        return StepOut(update=update, inp=inp, losses=losses.detach())

    def run(self, steps: int) -> list[StepOut]:
        return [self.step() for _ in range(steps)]

    def params(self) -> list[Tensor]:
        return [self.W.detach().clone(), *[h.detach().clone() for h in self.heads]]


@pytest.fixture
def fake_trainer() -> Callable[..., FakeTrainer]:
    return FakeTrainer


def grads_input(
    losses: Sequence[float], grads: Tensor, *, step: int = 0, epoch: int = 0,
    metrics: Sequence[float] | None = None,
) -> WeighterInput:
    """A hand-made input for a gradient weighter (losses detached)."""
    return WeighterInput(
        losses=torch.tensor(losses, dtype=torch.float32), grads=grads, step=step, epoch=epoch,
        metrics=None if metrics is None else torch.tensor(metrics, dtype=torch.float32),
    )


# --- raw gradients of the kinds the reference checks run on ------------------------------------

GRAD_KINDS = ["random", "small", "conflicting", "parallel"]
"""Raw, unnormalised task gradients: ``random`` N(0, 1); ``small`` the same at 1e-4 scale;
``conflicting`` every pair at a negative dot product (the centred basis vectors ``e_i - 1/t``,
plus noise, unequal norms; needs ``d >= t``); ``parallel`` near-parallel (a common direction plus
2% noise, norms 0.5 to 5)."""


def raw_grads(kind: str, t: int, d: int = 6, seed: int = 0) -> Tensor:
    """``[t, d]`` float64 gradients of one of the :data:`GRAD_KINDS`."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(t, d, generator=g, dtype=torch.float64)
    norms = torch.linspace(0.5, 5.0, t, dtype=torch.float64)[torch.randperm(t, generator=g)]
    if kind == "random":
        return noise
    if kind == "small":
        return 1e-4 * noise
    if kind == "conflicting":  # e_i - 1/t: pairwise cosine -1/(t-1), then noise and norms
        out = 0.05 * noise
        out[:, :t] += torch.eye(t, dtype=torch.float64) - 1.0 / t
        return norms[:, None] * out / out.norm(dim=1, keepdim=True)
    if kind == "parallel":
        base = torch.randn(d, generator=g, dtype=torch.float64)
        out = base / base.norm() + 0.02 * noise / d**0.5
        return norms[:, None] * out
    raise ValueError(kind)
