"""The gradient engine: one forward, then exactly the backward passes the weighter declared."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtlkit import distributed as D
from mtlkit.architecture import Architecture
from mtlkit.data import Batch
from mtlkit.errors import NonFiniteLossError, WeighterError
from mtlkit.task import Task
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput

DIAGNOSTICS = ("diag/cos_mean", "diag/cos_min", "diag/norm_ratio")
"""The task-conflict diagnostics: mean and least pairwise cosine between the tasks' gradients
w.r.t. the shared representation, and the smallest over the largest of their norms."""


def conflict_diagnostics(grads: Tensor) -> Tensor:
    """``[3]``: :data:`DIAGNOSTICS` from per-task gradients ``[T, ...]`` (on the device)."""
    flat = grads.reshape(grads.shape[0], -1).float()
    norms = flat.norm(dim=1)
    unit = flat / norms.clamp_min(torch.finfo(flat.dtype).tiny)[:, None]
    t = flat.shape[0]
    if t < 2:
        nan = torch.full((), float("nan"), device=flat.device)
        return torch.stack([nan, nan, norms.new_ones(())])
    cos = unit @ unit.T
    pairs = cos[torch.triu_indices(t, t, offset=1, device=flat.device).unbind()]
    ratio = norms.min() / norms.max().clamp_min(torch.finfo(flat.dtype).tiny)
    return torch.stack([pairs.mean(), pairs.min(), ratio])


def flat_into(row: Tensor, grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> None:
    """Copy per-parameter gradients into one flat row (zeros where a gradient is None)."""
    offset = 0
    for g, p in zip(grads, params):
        n = p.numel()
        if g is None:
            row[offset : offset + n].zero_()
        else:
            row[offset : offset + n].copy_(g.reshape(-1))
        offset += n


def head_weights(weighter: Weighter, update: Update) -> Tensor:
    """Each head's multiplier of its own loss gradient; a negative one is refused.

    Costs one host sync of T values: a head trained against its own loss must never pass
    silently. Shared by the engine and the functional path.
    """
    hw = (update.weights if update.head_weights is None else update.head_weights).detach()
    if not bool((hw >= 0).all()):
        raise WeighterError(
            f"weighter {type(weighter).__name__} returned head weights"
            f" {[round(v, 4) for v in hw.tolist()]}: a negative one would train that task's"
            " head to increase its own loss (return Update.head_weights >= 0)"
        )
    return hw


def combine_checked(weighter: Weighter, needs: Needs, inp: WeighterInput, want: str) -> Update:
    """``weighter.combine(inp)``, refusing an update without the part its needs promise."""
    update = weighter.combine(inp)
    if getattr(update, want) is None:
        raise TypeError(
            f"weighter {type(weighter).__name__} declared grads={needs.grads!r}"
            f" but returned no Update.{want}"
        )
    return update


@dataclass
class StepResult:
    """Detached per-task losses and weights of one step (logged without a host sync);
    ``diagnostics`` holds :data:`DIAGNOSTICS` on the steps they were computed."""

    losses: Tensor
    weights: Tensor
    input: WeighterInput
    diagnostics: Tensor | None = None


class GradientEngine:
    """Fills ``.grad`` of the model (and weighter) for one batch, per the weighter's ``needs``.

    - ``none``: one forward, one backward of the weighter's loss. Nothing else.
    - ``last_layer``: as ``none`` plus T partial backwards to the last shared layer only.
    - ``representation``: heads run on a detached copy Z of the features; each head's loss is
      differentiated w.r.t. (Z, its head) with no retained graph; the combined gradient then goes
      through the trunk once.
    - ``parameters``: T backwards into one preallocated [T, D] buffer; the trunk graph is retained
      only until the last task. ``batched_backward=True`` computes the T rows in one vmapped
      backward instead (same values; faster where the T backwards underuse the device, e.g. a
      GPU with small batches; measured no faster on CPU, see docs/weighting.md).

    On both gradient paths each head gets its own loss gradient times ``Update.head_weights``.
    What is shared, the representation and the last shared layer all come from the model's
    architecture (:class:`mtlkit.architecture.Architecture`); a "head" here is everything one
    task owns (``task_parameters``), its branch included.
    After the backward, every task's ``update_state`` sees the step's outputs (training only).

    Under torch.distributed the weighter sees global values on every rank: loss values are
    averaged over ranks, parameter-gradient matrices are all-reduced, and representation
    gradients are gathered (see ``docs/distributed.md`` for why each is exact).
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
        self.scaler = scaler
        self.check_finite = check_finite
        self.diagnostics_every = diagnostics_every
        self.batched_backward = batched_backward
        self._diagnose = False
        self.shared = model.shared_parameters()
        self.shared_numel = sum(p.numel() for p in self.shared)
        self.last = (
            [p for p in model.last_shared_parameters() if p.requires_grad]
            if self.needs.grads == "last_layer"
            else []
        )
        self.head_params = [model.task_parameters(t.name) for t in self.tasks]
        self._buffer: Tensor | None = None
        self._shares: Tensor | None = None

    # --- pieces ----------------------------------------------------------------------------
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
        if D.active():
            counts = torch.stack([
                task.labelled_mask(targets[key]).sum()
                for task, key in zip(self.tasks, self.targets)
            ])
            self._shares = D.label_shares(counts).to(losses[0].device)
            losses = [loss * share for loss, share in zip(losses, self._shares)]
        return losses

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

    def _scale(self) -> Tensor | None:
        return self.scaler.get_scale() if self.scaler is not None else None  # type: ignore[return-value]

    def _scaled(self, loss: Tensor) -> Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

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
            # a metric over labelled samples: weighted by the labels each rank holds, like the loss
            metrics = D.all_mean(metrics if self._shares is None else metrics * self._shares)
        return WeighterInput(
            losses=losses,
            features=features if needs.features else None,
            grads=grads,
            step=step if needs.counters else None,
            epoch=epoch if needs.counters else None,
            metrics=metrics,
            grads_scratch=grads is not None,
        )

    def _grad_buffer(self, rows: int, numel: int, like: Tensor) -> Tensor:
        buf = self._buffer
        if buf is None or buf.shape != (rows, numel) or buf.device != like.device:
            buf = torch.empty(rows, numel, dtype=torch.float32, device=like.device)
            self._buffer = buf
        return buf

    _flat_into = staticmethod(flat_into)

    @staticmethod
    def _accumulate(
        params: Sequence[nn.Parameter], grads: Sequence[Tensor | None], scale: Tensor
    ) -> None:
        for p, g in zip(params, grads):
            if g is None:
                continue
            g = g * scale.to(g.dtype)
            p.grad = g if p.grad is None else p.grad + g

    def _apply_flat(self, flat: Tensor) -> None:
        offset = 0
        for p in self.shared:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n

    def _unscale_(self, grads: Tensor) -> Tensor:
        scale = self._scale()
        return grads.div_(scale) if scale is not None else grads

    # --- the step ----------------------------------------------------------------------------
    def backward(
        self, batch: Batch, step: int | None = None, epoch: int | None = None
    ) -> StepResult:
        """Forward, combine and backward one batch; ``.grad`` is filled, nothing is stepped."""
        self.needs = self.weighter.needs_at(step)
        mode = self.needs.grads
        self._diagnose = bool(
            self.diagnostics_every and step is not None and step % self.diagnostics_every == 0
        )
        if mode == "representation":
            result, outputs = self._representation(batch, step, epoch)
        elif mode == "parameters":
            result, outputs = self._parameters(batch, step, epoch)
        else:
            result, outputs = self._loss_path(batch, step, epoch, last_layer=mode == "last_layer")
        if mode in ("representation", "parameters"):
            # gradient paths bypass DDP's reducer: one all-reduce of the combined gradient
            D.all_mean_grads(list(self.model.parameters()))
        targets = batch["targets"]
        with torch.no_grad():
            for task, key in zip(self.tasks, self.targets):
                task.update_state(outputs[task.name], targets[key])
        return result

    def _head_weights(self, update: Update) -> Tensor:
        return head_weights(self.weighter, update)

    def _diagnostics(self, per_task: Sequence[Tensor], features: Tensor) -> Tensor | None:
        """Task-conflict diagnostics on this step when asked for: head-only backwards (each
        loss to the features), the trunk's graph kept for the real backward."""
        if not self._diagnose:
            return None
        grads = [
            torch.autograd.grad(self._scaled(loss), features, retain_graph=True,
                                allow_unused=True)[0]
            for loss in per_task
        ]
        stacked = torch.stack([g if g is not None else torch.zeros_like(features) for g in grads])
        return conflict_diagnostics(self._unscale_(stacked.float()))

    def _combine(self, inp: WeighterInput, want: str) -> Update:
        return combine_checked(self.weighter, self.needs, inp, want)

    def _loss_path(
        self, batch: Batch, step: int | None, epoch: int | None, last_layer: bool
    ) -> tuple[StepResult, dict[str, Any]]:
        with self.autocast():
            features, outputs = self.forward_module(batch["input"])
            per_task = self.task_losses(outputs, batch)
        losses = D.global_value(torch.stack(per_task))
        self._guard(losses, step)
        diagnostics = self._diagnostics(per_task, features)
        grads = None
        if last_layer:
            grads = self._grad_buffer(len(self.tasks), sum(p.numel() for p in self.last), losses)
            for i in range(len(self.tasks)):
                g = torch.autograd.grad(
                    self._scaled(per_task[i]), self.last, retain_graph=True, allow_unused=True
                )
                self._flat_into(grads[i], g, self.last)
            D.all_mean_(self._unscale_(grads))
        inp = self._input(losses, outputs, batch, features, grads, step, epoch)
        update = self._combine(inp, "loss")
        assert update.loss is not None
        self._scaled(update.loss).backward()
        result = StepResult(losses=losses.detach(), weights=update.weights.detach(), input=inp,
                            diagnostics=diagnostics)
        return result, outputs

    def _representation(
        self, batch: Batch, step: int | None, epoch: int | None
    ) -> tuple[StepResult, dict[str, Any]]:
        with self.autocast():
            features = self.model.forward_shared(batch["input"])
        z = features.detach().requires_grad_(True)
        with self.autocast():
            outputs = self.model.forward_tasks(z)
            per_task = self.task_losses(outputs, batch)
        losses = D.all_mean(torch.stack(per_task))
        self._guard(losses, step)
        grads = torch.empty((len(self.tasks), *z.shape), dtype=torch.float32, device=z.device)
        head_grads = []
        for i, params in enumerate(self.head_params):
            g = torch.autograd.grad(self._scaled(per_task[i]), [z, *params], allow_unused=True)
            if g[0] is None:
                grads[i].zero_()
            else:
                grads[i].copy_(g[0])
            head_grads.append(g[1:])
        self._unscale_(grads)
        # the weighter may overwrite its scratch gradients: read the diagnostics first
        diagnostics = conflict_diagnostics(grads) if self._diagnose else None
        world = D.env_info().world_size if D.active() else 1
        z_all = z.detach()
        if world > 1:
            # each rank's loss is a mean over its B samples; the global loss is the mean over
            # ranks, so its gradient w.r.t. a sample's features is the local one divided by W
            grads = D.gather_cat(grads / world, dim=1)
            z_all = D.gather_cat(z_all, dim=0)
        inp = self._input(losses, outputs, batch, z_all, grads, step, epoch)
        update = self._combine(inp, "grad")
        assert update.grad is not None
        head_weights = self._head_weights(update)
        for i, params in enumerate(self.head_params):
            self._accumulate(params, head_grads[i], head_weights[i])
        combined = update.grad
        if world > 1:
            b = z.shape[0]
            rank = D.env_info().rank
            # the later all-reduce averages over ranks: pre-multiply by W to get the sum
            combined = combined[rank * b : (rank + 1) * b] * world
        scale = self._scale()
        if scale is not None:
            combined = combined * scale
        features.backward(combined.to(features.dtype))
        if update.loss is not None:
            update.loss.backward()
        result = StepResult(losses=losses, weights=update.weights.detach(), input=inp,
                            diagnostics=diagnostics)
        return result, outputs

    def _parameters(
        self, batch: Batch, step: int | None, epoch: int | None
    ) -> tuple[StepResult, dict[str, Any]]:
        with self.autocast():
            features, outputs = self.model(batch["input"])
            per_task = self.task_losses(outputs, batch)
        losses = D.all_mean(torch.stack(per_task))
        self._guard(losses, step)
        diagnostics = self._diagnostics(per_task, features)
        num_tasks = len(self.tasks)
        grads = self._grad_buffer(num_tasks, self.shared_numel, losses)
        prior = self._set_aside([*self.shared, *(p for ps in self.head_params for p in ps)])
        if self.batched_backward:
            self._batched_task_grads(per_task, grads)
        else:
            for i, params in enumerate(self.head_params):
                # autograd accumulates in place into .grad: point the shared parameters' .grad
                # at views of row i, so task i's gradient lands in the buffer with no copy and no
                # transient D-sized tuple (DDP's reducer hooks stay idle: no DDP forward ran)
                row = grads[i]
                row.zero_()
                self._point_grads_at(row)
                torch.autograd.backward(
                    self._scaled(per_task[i]),
                    inputs=[*self.shared, *params],
                    retain_graph=i < num_tasks - 1,
                )
            for p in self.shared:
                p.grad = None
        # mean over ranks of per-task gradients of local mean losses = gradients of the global loss
        D.all_mean_(self._unscale_(grads))
        inp = self._input(losses, outputs, batch, features.detach(), grads, step, epoch)
        update = self._combine(inp, "grad")
        assert update.grad is not None
        head_weights = self._head_weights(update)
        for i, params in enumerate(self.head_params):
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(head_weights[i].to(p.grad.dtype))
        scale = self._scale()
        self._apply_flat(update.grad * scale if scale is not None else update.grad)
        if update.loss is not None:
            update.loss.backward()
        for param, g in prior:
            param.grad = g if param.grad is None else param.grad.add_(g)
        result = StepResult(losses=losses, weights=update.weights.detach(), input=inp,
                            diagnostics=diagnostics)
        return result, outputs

    def _batched_task_grads(self, per_task: Sequence[Tensor], grads: Tensor) -> None:
        """All T rows of ``grads`` in one vmapped backward (``is_grads_batched``: the graph is
        walked once with a batch of T one-hot output gradients), then every head's own gradient
        from one backward of the summed loss (a head is in no other task's loss)."""
        losses = torch.stack([self._scaled(loss) for loss in per_task])
        eye = torch.eye(len(per_task), dtype=losses.dtype, device=losses.device)
        rows = torch.autograd.grad(
            losses, self.shared, grad_outputs=eye, retain_graph=True, allow_unused=True,
            is_grads_batched=True,
        )
        offset = 0
        for p, g in zip(self.shared, rows):
            n = p.numel()
            if g is None:
                grads[:, offset : offset + n].zero_()
            else:
                grads[:, offset : offset + n].copy_(g.reshape(len(per_task), n))
            offset += n
        heads = [p for ps in self.head_params for p in ps if p.requires_grad]
        if heads:
            torch.autograd.backward(losses.sum(), inputs=heads)

    @staticmethod
    def _set_aside(params: Sequence[nn.Parameter]) -> list[tuple[nn.Parameter, Tensor]]:
        """Take gradients already present (a caller accumulating over batches) off ``params``.

        They are cloned: after an earlier call they may be views of the very buffer this step
        overwrites. Added back at the end of the step; the common (zeroed) case costs nothing.
        """
        prior = [(p, p.grad.clone()) for p in params if p.grad is not None]
        for p, _ in prior:
            p.grad = None
        return prior

    def _point_grads_at(self, row: Tensor) -> None:
        offset = 0
        for p in self.shared:
            n = p.numel()
            p.grad = row[offset : offset + n].view_as(p)
            offset += n

    def after_step(self, result: StepResult) -> None:
        """Run the weighter's post-step callback if it declared one."""
        if self.weighter.needs.after_step:
            inp = result.input
            self.weighter.after_step(
                WeighterInput(
                    losses=result.losses, step=inp.step, epoch=inp.epoch, metrics=inp.metrics
                )
            )
