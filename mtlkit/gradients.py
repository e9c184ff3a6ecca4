"""The Trainer's gradient engine: the forward, the task losses, then the one gradient-path call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlkit import distributed
from mtlkit.architecture import Architecture
from mtlkit.data import Batch
from mtlkit.gradient_paths import (
    DIAGNOSTICS,
    GradientPaths,
    StepResult,
    combine_checked,
    conflict_diagnostics,
    flat_into,
    head_weights,
)
from mtlkit.task import Task
from mtlkit.weighter import Weighter, WeighterInput

__all__ = [
    "DIAGNOSTICS",
    "GradientEngine",
    "StepResult",
    "combine_checked",
    "conflict_diagnostics",
    "flat_into",
    "head_weights",
]


class GradientEngine:
    """Fills ``.grad`` of the model (and weighter) for one batch, per the weighter's ``needs``.

    The engine is the Trainer's forward (the whole model; or, on the ``representation`` path, the
    trunk and then the heads on a detached copy Z of the features), the task losses (weighted by
    this rank's share of the labels under torch.distributed), the step metrics, and then one call
    of :class:`~mtlkit.gradient_paths.GradientPaths`, which does every backward. What is shared,
    the representation and the last shared layer all come from the model's architecture
    (:class:`mtlkit.architecture.Architecture`); a "head" here is everything one task owns
    (``task_parameters``), its branch included. After the backward, every task's
    ``update_state`` sees the step's outputs (training only). ``diagnostics_every``: compute the
    conflict diagnostics every N steps; ``batched_backward``: see ``GradientPaths(batched=)``.
    """

    def __init__(
        self,
        model: Architecture,
        tasks: Sequence[Task],
        weighter: Weighter,
        targets: Sequence[str] | None = None,
        *,
        forward_module: nn.Module | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        scaler: torch.amp.GradScaler | None = None,
        check_finite: bool = True,
        diagnostics_every: int = 0,
        batched_backward: bool = False,
    ) -> None:
        self.model = model
        self.forward_module = forward_module or model
        self.tasks = list(tasks)
        self.targets = list(targets) if targets is not None else [t.name for t in self.tasks]
        self.weighter = weighter
        self.needs = weighter.needs
        self.autocast = autocast or contextlib.nullcontext
        self.diagnostics_every = diagnostics_every
        self.head_params = [model.task_parameters(t.name) for t in self.tasks]
        last = (
            [p for p in model.last_shared_parameters() if p.requires_grad]
            if self.needs.grads == "last_layer"
            else []
        )
        self.paths = GradientPaths(
            weighter, model.shared_parameters(), last_shared=last, scaler=scaler,
            batched=batched_backward, check_finite=check_finite,
            task_names=[t.name for t in self.tasks],
        )
        self._shares: Tensor | None = None
        self._all_params = list(model.parameters())  # what the gradient paths all-reduce

    @property
    def batched_backward(self) -> bool:
        """The ``parameters`` rows in one vmapped backward (same values)."""
        return self.paths.batched

    @batched_backward.setter
    def batched_backward(self, value: bool) -> None:
        self.paths.batched = value

    def task_losses(self, outputs: dict[str, Any], batch: Batch) -> list[Tensor]:
        """Each task's scalar loss in float32, in task order (kept apart to differentiate alone).

        Under torch.distributed each is scaled by this rank's share of the task's labelled samples
        (:func:`mtlkit.distributed.label_shares`), so that the mean over ranks, of the values and
        of the gradients, is the mean over every labelled sample of the global batch: 2 ranks
        then step as 1 process on the same batch even when the missing labels fall unevenly.
        """
        targets = batch["targets"]
        losses = [
            task.loss(outputs[task.name], targets[key]).float()
            for task, key in zip(self.tasks, self.targets)
        ]
        self._shares = None
        if distributed.active():
            counts = torch.stack([
                task.labelled_mask(targets[key]).sum()
                for task, key in zip(self.tasks, self.targets)
            ])
            self._shares = distributed.label_shares(counts).to(losses[0].device)
            losses = [loss * share for loss, share in zip(losses, self._shares)]
        return losses

    def losses(self, outputs: dict[str, Any], batch: Batch) -> Tensor:
        """The task losses stacked into ``[T]``."""
        return torch.stack(self.task_losses(outputs, batch))

    def backward(
        self, batch: Batch, step: int | None = None, epoch: int | None = None
    ) -> StepResult:
        """Forward, combine and backward one batch; ``.grad`` is filled, nothing is stepped."""
        self.needs = needs = self.weighter.needs_at(step)
        mode = needs.grads
        heads_input = None
        with self.autocast():
            if mode == "representation":
                # the heads run on a detached copy: per-task gradients never walk the trunk
                features = self.model.forward_shared(batch["input"])
                heads_input = features.detach().requires_grad_(True)
                outputs = self.model.forward_tasks(heads_input)
            else:
                # the gradient paths bypass DDP's reducer (they all-reduce once themselves)
                module = self.model if mode == "parameters" else self.forward_module
                features, outputs = module(batch["input"])
            per_task = self.task_losses(outputs, batch)
        metrics = None
        if needs.step_metrics:
            targets = batch["targets"]
            metrics = torch.stack([
                t.step_metric(outputs[t.name], targets[k]).to(torch.float32)
                for t, k in zip(self.tasks, self.targets)
            ])
        result = self.paths(
            per_task, self.head_params, needs=needs, features=features, heads_input=heads_input,
            metrics=metrics, shares=self._shares, step=step, epoch=epoch,
            diagnose=bool(self.diagnostics_every and step is not None
                          and step % self.diagnostics_every == 0),
            reduce=self._all_params,
        )
        targets = batch["targets"]
        with torch.no_grad():
            for task, key in zip(self.tasks, self.targets):
                task.update_state(outputs[task.name], targets[key])
        return result

    def after_step(self, result: StepResult) -> None:
        """Run the weighter's post-step callback if it declared one."""
        if self.weighter.needs.after_step:
            inp = result.input
            self.weighter.after_step(
                WeighterInput(
                    losses=result.losses, step=inp.step, epoch=inp.epoch, metrics=inp.metrics
                )
            )
