"""The gradient engine: one forward, then exactly the backward passes the weighter declared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtlkit.data import Batch
from mtlkit.errors import NonFiniteLossError
from mtlkit.model import MultiTaskModel
from mtlkit.task import Task
from mtlkit.weighter import Update, Weighter, WeighterInput


@dataclass
class StepResult:
    """Detached per-task losses and weights of one step (logged without a host sync)."""

    losses: Tensor
    weights: Tensor
    input: WeighterInput


class GradientEngine:
    """Fills ``.grad`` of the model (and weighter) for one batch, per the weighter's ``needs``.

    - ``none``: one forward, one backward of the weighter's loss. Nothing else.
    - ``last_layer``: as ``none`` plus T partial backwards to the last shared layer only.
    - ``representation``: heads run on a detached copy Z of the features; each head's loss is
      differentiated w.r.t. (Z, its head) with no retained graph; the combined gradient then goes
      through the trunk once.
    - ``parameters``: T backwards into one preallocated [T, D] buffer; the trunk graph is retained
      only until the last task.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: Sequence[Task],
        weighter: Weighter,
        targets: Sequence[str] | None = None,
        check_finite: bool = True,
    ) -> None:
        self.model = model
        self.tasks = list(tasks)
        self.targets = list(targets) if targets is not None else [t.name for t in self.tasks]
        self.weighter = weighter
        self.needs = weighter.needs
        self.check_finite = check_finite
        self.shared = model.shared_parameters()
        self.shared_numel = sum(p.numel() for p in self.shared)
        self.last = (
            [p for p in model.backbone.last_shared_parameters() if p.requires_grad]
            if self.needs.grads == "last_layer"
            else []
        )
        self.head_params = [
            [p for p in model.heads[t.name].parameters() if p.requires_grad] for t in self.tasks
        ]
        self._buffer: Tensor | None = None

    # --- pieces ----------------------------------------------------------------------------
    def task_losses(self, outputs: dict[str, Any], batch: Batch) -> list[Tensor]:
        """Each task's scalar loss, in task order (kept apart so each differentiates alone)."""
        targets = batch["targets"]
        return [task.loss(outputs[task.name], targets[key]) for task, key in zip(self.tasks, self.targets)]

    def losses(self, outputs: dict[str, Any], batch: Batch) -> Tensor:
        """The task losses stacked into ``[T]``."""
        return torch.stack(self.task_losses(outputs, batch))

    def _guard(self, losses: Tensor, step: int | None) -> None:
        if not self.check_finite:
            return
        finite = torch.isfinite(losses.detach())
        if not bool(finite.all()):
            bad = [t.name for t, ok in zip(self.tasks, finite.tolist()) if not ok]
            where = f" at step {step}" if step is not None else ""
            raise NonFiniteLossError(f"non-finite loss in task(s) {', '.join(bad)}{where}")

    def _input(
        self,
        losses: Tensor,
        outputs: dict[str, Any],
        batch: Batch,
        features: Tensor | None,
        grads: Tensor | None,
        step: int | None,
        epoch: int | None,
    ) -> WeighterInput:
        needs = self.needs
        metrics = None
        if needs.step_metrics:
            targets = batch["targets"]
            metrics = torch.stack(
                [
                    t.step_metric(outputs[t.name], targets[k]).to(torch.float32)
                    for t, k in zip(self.tasks, self.targets)
                ]
            )
        return WeighterInput(
            losses=losses,
            features=features if needs.features else None,
            grads=grads,
            step=step if needs.counters else None,
            epoch=epoch if needs.counters else None,
            metrics=metrics,
        )

    def _grad_buffer(self, rows: int, numel: int, like: Tensor) -> Tensor:
        buf = self._buffer
        if buf is None or buf.shape != (rows, numel) or buf.device != like.device:
            buf = torch.empty(rows, numel, dtype=torch.float32, device=like.device)
            self._buffer = buf
        return buf

    @staticmethod
    def _flat_into(row: Tensor, grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> None:
        offset = 0
        for g, p in zip(grads, params):
            n = p.numel()
            if g is None:
                row[offset : offset + n].zero_()
            else:
                row[offset : offset + n].copy_(g.reshape(-1))
            offset += n

    @staticmethod
    def _accumulate(params: Sequence[nn.Parameter], grads: Sequence[Tensor | None], scale: Tensor) -> None:
        for p, g in zip(params, grads):
            if g is None:
                continue
            g = g * scale.to(g.dtype)
            p.grad = g if p.grad is None else p.grad + g

    def _apply_flat(self, flat: Tensor) -> None:
        offset = 0
        for p in self.shared:
            n = p.numel()
            g = flat[offset : offset + n].view_as(p).to(p.dtype)
            p.grad = g if p.grad is None else p.grad + g
            offset += n

    # --- the step ----------------------------------------------------------------------------
    def backward(self, batch: Batch, step: int | None = None, epoch: int | None = None) -> StepResult:
        """Forward, combine and backward one batch; ``.grad`` is filled, nothing is stepped."""
        mode = self.needs.grads
        if mode == "representation":
            return self._representation(batch, step, epoch)
        if mode == "parameters":
            return self._parameters(batch, step, epoch)
        return self._loss_path(batch, step, epoch, last_layer=mode == "last_layer")

    def _finish(self, update: Update, losses: Tensor, inp: WeighterInput) -> StepResult:
        return StepResult(losses=losses.detach(), weights=update.weights.detach(), input=inp)

    def _loss_path(self, batch: Batch, step: int | None, epoch: int | None, last_layer: bool) -> StepResult:
        features, outputs = self.model(batch["input"])
        per_task = self.task_losses(outputs, batch)
        losses = torch.stack(per_task)
        self._guard(losses, step)
        grads = None
        if last_layer:
            grads = self._grad_buffer(len(self.tasks), sum(p.numel() for p in self.last), losses)
            for i in range(len(self.tasks)):
                g = torch.autograd.grad(per_task[i], self.last, retain_graph=True, allow_unused=True)
                self._flat_into(grads[i], g, self.last)
        inp = self._input(losses, outputs, batch, features, grads, step, epoch)
        update = self.weighter.combine(inp)
        if update.loss is None:
            raise TypeError(f"weighter {type(self.weighter).__name__} returned no loss")
        update.loss.backward()
        return self._finish(update, losses, inp)

    def _representation(self, batch: Batch, step: int | None, epoch: int | None) -> StepResult:
        features = self.model.backbone(batch["input"])
        z = features.detach().requires_grad_(True)
        outputs = self.model.forward_heads(z)
        per_task = self.task_losses(outputs, batch)
        losses = torch.stack(per_task).detach()
        self._guard(losses, step)
        grads = torch.empty((len(self.tasks), *z.shape), dtype=z.dtype, device=z.device)
        head_grads = []
        for i, params in enumerate(self.head_params):
            g = torch.autograd.grad(per_task[i], [z, *params], allow_unused=True)
            if g[0] is None:
                grads[i].zero_()
            else:
                grads[i].copy_(g[0])
            head_grads.append(g[1:])
        inp = self._input(losses, outputs, batch, z.detach(), grads, step, epoch)
        update = self.weighter.combine(inp)
        if update.grad is None:
            raise TypeError(f"weighter {type(self.weighter).__name__} returned no grad")
        for i, params in enumerate(self.head_params):
            self._accumulate(params, head_grads[i], update.weights[i])
        features.backward(update.grad.to(features.dtype))
        if update.loss is not None:
            update.loss.backward()
        return self._finish(update, losses, inp)

    def _parameters(self, batch: Batch, step: int | None, epoch: int | None) -> StepResult:
        features, outputs = self.model(batch["input"])
        per_task = self.task_losses(outputs, batch)
        losses = torch.stack(per_task).detach()
        self._guard(losses, step)
        num_tasks = len(self.tasks)
        grads = self._grad_buffer(num_tasks, self.shared_numel, losses)
        n_shared = len(self.shared)
        head_grads = []
        for i, params in enumerate(self.head_params):
            g = torch.autograd.grad(
                per_task[i], [*self.shared, *params], retain_graph=i < num_tasks - 1, allow_unused=True
            )
            self._flat_into(grads[i], g[:n_shared], self.shared)
            head_grads.append(g[n_shared:])
        inp = self._input(losses, outputs, batch, features.detach(), grads, step, epoch)
        update = self.weighter.combine(inp)
        if update.grad is None:
            raise TypeError(f"weighter {type(self.weighter).__name__} returned no grad")
        for i, params in enumerate(self.head_params):
            self._accumulate(params, head_grads[i], update.weights[i])
        self._apply_flat(update.grad)
        if update.loss is not None:
            update.loss.backward()
        return self._finish(update, losses, inp)

    def after_step(self, result: StepResult) -> None:
        """Run the weighter's post-step callback if it declared one."""
        if self.needs.after_step:
            inp = result.input
            self.weighter.after_step(
                WeighterInput(losses=result.losses, step=inp.step, epoch=inp.epoch, metrics=inp.metrics)
            )
