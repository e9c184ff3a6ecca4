"""The four gradient paths, written once: from per-task losses to ``.grad``, per a weighter's needs.

:class:`GradientPaths` is the single implementation behind the Trainer's
:class:`~mtlkit.gradients.GradientEngine`, the functional API (:func:`mtlkit.backward`,
:class:`mtlkit.WeightedStep`) and the conformance kit's fake trainer. As torchjd's
``mtl_backward``, it is handed what a forward produced (the per-task losses, the shared features,
the shared parameters and each task's own parameters) and does the backward:

- ``none``: one backward of the weighter's loss;
- ``last_layer``: T partial gradients w.r.t. the last shared layer, then the weighter's loss;
- ``representation``: T gradients w.r.t. the tensor the heads read (a detached copy Z of the
  features, or the features themselves), the combined one sent through the trunk once;
- ``parameters``: T backwards into one preallocated ``[T, D]`` buffer (each lands in it through
  ``.grad`` views, with no copy), or one vmapped backward with ``batched=True``.

On the gradient paths each task's own parameters get their own loss gradient times
``Update.head_weights``. Under torch.distributed the weighter sees global values on every rank:
loss values are averaged over ranks, parameter-gradient matrices are all-reduced, representation
gradients are gathered (``docs/distributed.md`` says why each is exact). Gradients already in
``.grad`` are kept and added to (gradient accumulation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mtlkit import distributed
from mtlkit.errors import ConfigError, NonFiniteLossError, WeighterError
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

    Costs one host sync of T values: a head trained against its own loss must never pass silently.
    """
    hw = (update.weights if update.head_weights is None else update.head_weights).detach()
    if not bool((hw >= 0).all()):
        raise WeighterError(
            f"weighter {type(weighter).__name__} returned head weights"
            f" {[round(v, 4) for v in hw.tolist()]}: a negative one would train that task's"
            " head to increase its own loss (return Update.head_weights >= 0)"
        )
    return hw


def combine_checked(
    weighter: Weighter, needs: Needs, inp: WeighterInput, want: str,
    grad_shape: tuple[int, ...] | None = None,
) -> Update:
    """``weighter.combine(inp)``, refusing an update without the part its needs promise, or a
    combined gradient of the wrong shape."""
    update = weighter.combine(inp)
    if getattr(update, want) is None:
        raise TypeError(
            f"weighter {type(weighter).__name__} declared grads={needs.grads!r}"
            f" but returned no Update.{want}"
        )
    if grad_shape is not None and update.grad is not None:
        if tuple(update.grad.shape) != grad_shape:
            raise WeighterError(
                f"weighter {type(weighter).__name__} returned Update.grad of shape"
                f" {tuple(update.grad.shape)}; grads={needs.grads!r} expects {grad_shape}"
            )
    return update


@dataclass
class StepResult:
    """Detached per-task losses and weights of one step (logged without a host sync);
    ``diagnostics`` holds :data:`DIAGNOSTICS` on the steps they were computed."""

    losses: Tensor
    weights: Tensor
    input: WeighterInput
    update: Update | None = None
    diagnostics: Tensor | None = None


class GradientPaths:
    """One weighter bound to the shared parameters: call it with a step's losses to fill ``.grad``.

    ``shared``: the shared parameters (the rows of the ``parameters`` path); ``last_shared``: the
    last shared layer (``last_layer``); ``scaler``: a ``torch.amp.GradScaler`` whose scale the
    losses carry; ``batched``: the ``parameters`` rows in one vmapped backward (same values;
    faster where the T backwards underuse the device); ``task_names`` name tasks in errors;
    ``require_features``: refuse a loss that does not reach the features on the representation
    path (instead of giving it a zero gradient). The instance keeps the ``[T, D]`` buffer.
    """

    def __init__(
        self,
        weighter: Weighter,
        shared: Sequence[nn.Parameter],
        *,
        last_shared: Sequence[nn.Parameter] = (),
        scaler: torch.amp.GradScaler | None = None,
        batched: bool = False,
        check_finite: bool = True,
        task_names: Sequence[str] | None = None,
        require_features: bool = False,
    ) -> None:
        self.weighter = weighter
        self.require_features = require_features
        self.shared = list(shared)
        self.shared_numel = sum(p.numel() for p in self.shared)
        self.last_shared = [p for p in last_shared if p.requires_grad]
        self.scaler = scaler
        self.batched = batched
        self.check_finite = check_finite
        self.task_names = list(task_names if task_names is not None else weighter.task_names)
        self._buffer: Tensor | None = None

    # --- the call ------------------------------------------------------------------------------
    def __call__(
        self,
        losses: Sequence[Tensor],
        heads: Sequence[Sequence[nn.Parameter]],
        *,
        needs: Needs,
        features: Tensor | None = None,
        heads_input: Tensor | None = None,
        metrics: Tensor | None = None,
        shares: Tensor | None = None,
        step: int | None = None,
        epoch: int | None = None,
        distributed_: bool | None = None,
        diagnose: bool = False,
        reduce: Sequence[nn.Parameter] | None = None,
    ) -> StepResult:
        """Combine the step's ``losses`` (float32 scalars, task order) and fill ``.grad``.

        ``heads``: each task's own parameters (a parameter in two lists gets both tasks'
        weighted gradients; ``batched`` needs them disjoint). ``features``: the shared
        representation, in the trunk's graph. ``heads_input``: the tensor the heads read when it
        is not ``features`` (a detached copy, so that per-task gradients never walk the trunk).
        ``metrics``: this rank's per-task step metrics; ``shares``: this rank's share of each
        task's labels, which the losses already carry (metrics are weighted the same way before
        the mean over ranks). ``distributed_``: reduce over ranks (default: when
        torch.distributed is initialised). ``diagnose``: compute :data:`DIAGNOSTICS`.
        ``reduce``: the parameters whose gradients are averaged over ranks after a gradient path
        (default: the shared and head parameters).
        """
        dist = distributed.active() if distributed_ is None else distributed_
        mode = needs.grads
        per_task = list(losses)
        if mode == "representation":
            z = heads_input if heads_input is not None else features
            if features is None or z is None:
                raise ValueError("the representation path needs the shared features")
            result = self._representation(per_task, heads, features, z, needs, dist, diagnose,
                                          metrics, shares, step, epoch)
        elif mode == "parameters":
            result = self._parameters(per_task, heads, features, needs, dist, diagnose,
                                      metrics, shares, step, epoch)
        else:
            result = self._loss_path(per_task, features, needs, dist, diagnose, metrics, shares,
                                     step, epoch, last_layer=mode == "last_layer")
        if mode in ("representation", "parameters") and dist:
            # gradient paths bypass DDP's reducer: one all-reduce of the combined gradient
            params = reduce if reduce is not None else [*self.shared, *_unique(heads)]
            distributed.all_mean_grads(list(params))
        return result

    # --- pieces ----------------------------------------------------------------------------------
    def _guard(self, losses: Tensor, step: int | None) -> None:
        if not self.check_finite:
            return
        finite = torch.isfinite(losses.detach())
        if not bool(finite.all()):
            bad = [n for n, ok in zip(self.task_names, finite.tolist()) if not ok]
            where = f" at step {step}" if step is not None else ""
            raise NonFiniteLossError(f"non-finite loss in task(s) {', '.join(bad)}{where}")

    def _scale(self) -> Tensor | None:
        return self.scaler.get_scale() if self.scaler is not None else None  # type: ignore[return-value]

    def _scaled(self, loss: Tensor) -> Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def _unscale_(self, grads: Tensor) -> Tensor:
        scale = self._scale()
        return grads.div_(scale) if scale is not None else grads

    def _grad_buffer(self, rows: int, numel: int, like: Tensor) -> Tensor:
        buf = self._buffer
        if buf is None or buf.shape != (rows, numel) or buf.device != like.device:
            buf = torch.empty(rows, numel, dtype=torch.float32, device=like.device)
            self._buffer = buf
        return buf

    def _input(
        self, needs: Needs, losses: Tensor, features: Tensor | None, grads: Tensor | None,
        metrics: Tensor | None, shares: Tensor | None, dist: bool, step: int | None,
        epoch: int | None,
    ) -> WeighterInput:
        if needs.step_metrics and metrics is not None and dist:
            # a metric over labelled samples: weighted by the labels each rank holds, like the loss
            metrics = distributed.all_mean(metrics if shares is None else metrics * shares)
        return WeighterInput(
            losses=losses,
            features=features if needs.features else None,
            grads=grads,
            step=step if needs.counters else None,
            epoch=epoch if needs.counters else None,
            metrics=metrics if needs.step_metrics else None,
            grads_scratch=grads is not None,
        )

    def _diagnostics(self, per_task: Sequence[Tensor], features: Tensor | None) -> Tensor | None:
        """Head-only backwards (each loss to the features), the trunk's graph kept."""
        if features is None:
            return None
        grads = [
            torch.autograd.grad(self._scaled(loss), features, retain_graph=True,
                                allow_unused=True)[0]
            for loss in per_task
        ]
        stacked = torch.stack([g if g is not None else torch.zeros_like(features) for g in grads])
        return conflict_diagnostics(self._unscale_(stacked.float()))

    # --- the paths -------------------------------------------------------------------------------
    def _loss_path(
        self, per_task: list[Tensor], features: Tensor | None, needs: Needs, dist: bool,
        diagnose: bool, metrics: Tensor | None, shares: Tensor | None, step: int | None,
        epoch: int | None, last_layer: bool,
    ) -> StepResult:
        stacked = torch.stack(per_task)
        losses = distributed.global_value(stacked) if dist else stacked
        self._guard(losses, step)
        diagnostics = self._diagnostics(per_task, features) if diagnose else None
        grads = None
        if last_layer:
            last = self.last_shared
            grads = self._grad_buffer(len(per_task), sum(p.numel() for p in last), losses)
            for i, loss in enumerate(per_task):
                g = torch.autograd.grad(self._scaled(loss), last, retain_graph=True,
                                        allow_unused=True)
                flat_into(grads[i], g, last)
            self._unscale_(grads)
            if dist:
                distributed.all_mean_(grads)
        inp = self._input(needs, losses, features, grads, metrics, shares, dist, step, epoch)
        update = combine_checked(self.weighter, needs, inp, "loss")
        assert update.loss is not None
        self._scaled(update.loss).backward()
        return StepResult(losses=losses.detach(), weights=update.weights.detach(), input=inp,
                          update=update, diagnostics=diagnostics)

    def _representation(
        self, per_task: list[Tensor], heads: Sequence[Sequence[nn.Parameter]], features: Tensor,
        z: Tensor, needs: Needs, dist: bool, diagnose: bool, metrics: Tensor | None,
        shares: Tensor | None, step: int | None, epoch: int | None,
    ) -> StepResult:
        losses = distributed.all_mean(torch.stack(per_task)) if dist else torch.stack(
            per_task).detach()
        self._guard(losses, step)
        grads = torch.empty((len(per_task), *z.shape), dtype=torch.float32, device=z.device)
        head_grads: list[tuple[Tensor | None, ...]] = []
        last = max((i for i, loss in enumerate(per_task) if loss.grad_fn is not None), default=-1)
        for i, params in enumerate(heads):
            if per_task[i].grad_fn is None:  # no graph (no labelled sample): a zero gradient
                grads[i].zero_()
                head_grads.append(tuple(None for _ in params))
                continue
            # heads may share graph nodes above z: kept until the last task (never the trunk's)
            g = torch.autograd.grad(self._scaled(per_task[i]), [z, *params],
                                    retain_graph=i < last, allow_unused=True)
            if g[0] is None:
                if self.require_features:
                    raise ConfigError(
                        f"loss {self.task_names[i]!r} does not depend on the features given: pass"
                        " the shared representation the heads read (with torch.compile, compile"
                        " the encoder alone: a model compiled as one graph hides its features)"
                    )
                grads[i].zero_()
            else:
                grads[i].copy_(g[0])
            head_grads.append(g[1:])
        self._unscale_(grads)
        # the weighter may overwrite its scratch gradients: read the diagnostics first
        diagnostics = conflict_diagnostics(grads) if diagnose else None
        world = distributed.env_info().world_size if dist else 1
        z_all = z.detach()
        if world > 1:
            # each rank's loss is a mean over its B samples; the global loss is the mean over
            # ranks, so its gradient w.r.t. a sample's features is the local one divided by W
            grads = distributed.gather_cat(grads / world, dim=1)
            z_all = distributed.gather_cat(z_all, dim=0)
        inp = self._input(needs, losses, z_all, grads, metrics, shares, dist, step, epoch)
        update = combine_checked(self.weighter, needs, inp, "grad", tuple(z_all.shape))
        assert update.grad is not None
        hw = head_weights(self.weighter, update)
        for i, params in enumerate(heads):
            _accumulate(params, head_grads[i], hw[i])
        combined = update.grad
        if world > 1:
            b = z.shape[0]
            rank = distributed.env_info().rank
            # the later all-reduce averages over ranks: pre-multiply by W to get the sum
            combined = combined[rank * b : (rank + 1) * b] * world
        scale = self._scale()
        if scale is not None:
            combined = combined * scale
        features.backward(combined.to(features.dtype))
        if update.loss is not None:
            update.loss.backward()
        return StepResult(losses=losses, weights=update.weights.detach(), input=inp,
                          update=update, diagnostics=diagnostics)

    def _parameters(
        self, per_task: list[Tensor], heads: Sequence[Sequence[nn.Parameter]],
        features: Tensor | None, needs: Needs, dist: bool, diagnose: bool,
        metrics: Tensor | None, shares: Tensor | None, step: int | None, epoch: int | None,
    ) -> StepResult:
        losses = distributed.all_mean(torch.stack(per_task)) if dist else torch.stack(
            per_task).detach()
        self._guard(losses, step)
        diagnostics = self._diagnostics(per_task, features) if diagnose else None
        num_tasks = len(per_task)
        grads = self._grad_buffer(num_tasks, self.shared_numel, losses)
        prior = _set_aside([*self.shared, *_unique(heads)])
        head_grads: list[list[Tensor | None]] = []
        if self.batched:
            self._batched_task_grads(per_task, heads, grads)
        else:
            last = max((i for i, loss in enumerate(per_task) if loss.grad_fn is not None),
                       default=-1)
            for i, params in enumerate(heads):
                # autograd accumulates in place into .grad: point the shared parameters' .grad
                # at views of row i, so task i's gradient lands in the buffer with no copy and no
                # transient D-sized tuple (DDP's reducer hooks stay idle: no DDP forward ran)
                row = grads[i]
                row.zero_()
                if per_task[i].grad_fn is None:  # no graph (no labelled sample): a zero row
                    head_grads.append([None for _ in params])
                    continue
                self._point_grads_at(row)
                torch.autograd.backward(
                    self._scaled(per_task[i]),
                    inputs=[*self.shared, *params],
                    retain_graph=i < last,
                )
                # each task's own gradient is taken off its heads: a parameter two tasks' losses
                # both reach (a model compiled as one graph) then gets both, each weighted
                head_grads.append([p.grad for p in params])
                for p in params:
                    p.grad = None
            for p in self.shared:
                p.grad = None
        # mean over ranks of per-task gradients of local mean losses = gradients of the global loss
        self._unscale_(grads)
        if dist:
            distributed.all_mean_(grads)
        detached = features.detach() if features is not None else None
        inp = self._input(needs, losses, detached, grads, metrics, shares, dist, step, epoch)
        update = combine_checked(self.weighter, needs, inp, "grad", (self.shared_numel,))
        assert update.grad is not None
        hw = head_weights(self.weighter, update)
        if self.batched:  # heads disjoint: the summed loss's gradient is each task's own
            for i, params in enumerate(heads):
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(hw[i].to(p.grad.dtype))
        else:
            for i, params in enumerate(heads):
                _accumulate(params, head_grads[i], hw[i])
        scale = self._scale()
        self._apply_flat(update.grad * scale if scale is not None else update.grad)
        if update.loss is not None:
            update.loss.backward()
        for param, g in prior:
            param.grad = g if param.grad is None else param.grad.add_(g)
        return StepResult(losses=losses, weights=update.weights.detach(), input=inp,
                          update=update, diagnostics=diagnostics)

    def _batched_task_grads(
        self, per_task: Sequence[Tensor], heads: Sequence[Sequence[nn.Parameter]], grads: Tensor
    ) -> None:
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
        own = [p for p in _unique(heads) if p.requires_grad]
        if len(own) < sum(len(ps) for ps in heads):
            raise ValueError("batched backward needs each task's own parameters to be disjoint")
        if own:
            torch.autograd.backward(losses.sum(), inputs=own)

    def _point_grads_at(self, row: Tensor) -> None:
        offset = 0
        for p in self.shared:
            n = p.numel()
            p.grad = row[offset : offset + n].view_as(p)
            offset += n

    def _apply_flat(self, flat: Tensor) -> None:
        offset = 0
        for p in self.shared:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n


def _accumulate(
    params: Sequence[nn.Parameter], grads: Sequence[Tensor | None], scale: Tensor
) -> None:
    for p, g in zip(params, grads):
        if g is None:
            continue
        g = g * scale.to(g.dtype)
        p.grad = g if p.grad is None else p.grad + g


def _set_aside(params: Sequence[nn.Parameter]) -> list[tuple[nn.Parameter, Tensor]]:
    """Take gradients already present (a caller accumulating over batches) off ``params``.

    They are cloned: after an earlier call they may be views of the very buffer this step
    overwrites. Added back at the end of the step; the common (zeroed) case costs nothing.
    """
    prior = [(p, p.grad.clone()) for p in params if p.grad is not None]
    for p, _ in prior:
        p.grad = None
    return prior


def _unique(heads: Sequence[Sequence[nn.Parameter]]) -> list[nn.Parameter]:
    """Every task's own parameters, each once, in first-seen order."""
    return list({id(p): p for ps in heads for p in ps}.values())
