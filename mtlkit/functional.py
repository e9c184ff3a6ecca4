"""Drop a weighting method into any training loop: ``mtlkit.backward`` and ``WeightedStep``.

The Trainer's :class:`~mtlkit.gradients.GradientEngine` runs the forward itself; these take the
losses (and the shared features) your own loop already computed, and fill ``.grad`` through the
same :class:`~mtlkit.gradient_paths.GradientPaths` the engine calls, per the weighter's ``needs``:

- ``none``: one backward of the weighter's loss;
- ``last_layer``: T partial gradients of the last shared layer (``last_shared=``), then the
  weighter's loss;
- ``representation``: T gradients w.r.t. the features, the combined one through the trunk once;
- ``parameters``: T gradients w.r.t. the shared parameters in one ``[T, D]`` buffer.

On the gradient paths each task's own parameters (its head) get their own loss gradient times
``Update.head_weights``; they are found by walking each loss's autograd graph (stopping at the
features when given), so no model class or task object is needed. Gradients already in ``.grad``
are kept and added to (gradient accumulation).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlkit import distributed
from mtlkit.errors import ConfigError, WeighterError
from mtlkit.gradient_paths import GradientPaths
from mtlkit.weighter import Weighter, WeighterInput, WeighterSetup

Losses = Sequence[Tensor] | Mapping[str, Tensor]


def create_weighter(
    name: str, tasks: Sequence[str], *, host: Any = None, **options: Any
) -> Weighter:
    """A registered weighter by name, its options validated by the plugin's own model (as
    ``timm.create_model``): ``create_weighter("nash_mtl", ["seg", "depth"], max_norm=None)``."""
    from mtlkit.config import Component, _resolve
    from mtlkit.plugins import get_plugin_manager

    if not tasks:
        raise ConfigError("create_weighter: give the task names (at least one)")
    resolved = _resolve(host or get_plugin_manager(), "weighters",
                        Component(name=name, **options), "weighter")
    try:
        return resolved.cls(list(tasks), resolved.options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"weighter {name!r} ({resolved.entry_dist}): {exc}") from None


def task_parameters(loss: Tensor, stop: Tensor | None, exclude: set[int]) -> list[Tensor]:
    """The trainable leaves ``loss`` depends on, by a walk of its autograd graph that does not
    pass ``stop`` (the shared features) and skips ``exclude`` (ids of shared parameters)."""
    root = loss.grad_fn
    if root is None:
        return []
    stop_fn = stop.grad_fn if stop is not None else None
    seen: set[Any] = set()
    found: dict[int, Tensor] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if stop_fn is not None and node is stop_fn:
            continue
        var = getattr(node, "variable", None)  # AccumulateGrad: a leaf
        if var is not None:
            if id(var) not in exclude and var.requires_grad:
                found.setdefault(id(var), var)
            continue
        stack.extend(child for child, _ in node.next_functions)
    return list(found.values())


class WeightedStep:
    """A weighter bound to a model's shared parameters, for your own training loop.

    ::

        step = mtlkit.WeightedStep(mtlkit.create_weighter("pcgrad", ["a", "b"]),
                                   shared=encoder.parameters())
        for batch in loader:
            opt.zero_grad()
            z = encoder(batch.x)
            losses = [loss_a(head_a(z), batch.a), loss_b(head_b(z), batch.b)]
            step.backward(losses, features=z)
            opt.step()
            step.after_step()

    ``weighter.parameters()`` (UW's log-variances, GradNorm's weights...) must be in your optimizer:
    add ``weighter.param_groups()`` to it. ``scaler``: a ``torch.amp.GradScaler`` for fp16 (call
    ``scaler.step(opt)`` as usual). ``steps_per_epoch``: for weighters that count epochs (DWA),
    unless you pass ``epoch=`` to :meth:`backward`. ``distributed``: average losses and gradients
    over ranks as the Trainer does (default: when torch.distributed is initialised); run the
    forward of a DDP-wrapped model under ``no_sync()`` (see docs/own-loop.md). ``setup=False``
    for a weighter that is set up already (``Weighter.setup`` sizes it from the first batch).
    ``batched``: the ``parameters`` path's T rows in one vmapped backward (same values).
    """

    def __init__(
        self,
        weighter: Weighter,
        shared: Iterable[nn.Parameter] | None = None,
        *,
        last_shared: Iterable[nn.Parameter] | None = None,
        scaler: torch.amp.GradScaler | None = None,
        steps_per_epoch: int | None = None,
        check_finite: bool = True,
        distributed: bool | None = None,
        setup: bool = True,
        batched: bool = False,
    ) -> None:
        self.weighter = weighter
        self.needs = weighter.needs
        self.shared = [p for p in (shared or []) if p.requires_grad]
        self.last_shared = [p for p in (last_shared or []) if p.requires_grad]
        self.paths = GradientPaths(weighter, self.shared, last_shared=self.last_shared,
                                   scaler=scaler, batched=batched, check_finite=check_finite,
                                   require_features=True)
        self.steps_per_epoch = steps_per_epoch
        self.distributed = distributed
        self.step = 0
        self._is_setup = not setup
        self._pending: WeighterInput | None = None
        self._validate()

    def _validate(self) -> None:
        grads, name = self.needs.grads, type(self.weighter).__name__
        if grads == "parameters" and not self.shared:
            raise ConfigError(f"{name} needs the shared parameters' gradients: pass shared=...")
        if grads == "last_layer" and not self.last_shared:
            raise ConfigError(
                f"{name} needs the last shared layer's gradients: pass last_shared=..."
                " (e.g. the parameters of the encoder's final layer)"
            )

    @property
    def _dist(self) -> bool:
        return distributed.active() if self.distributed is None else self.distributed

    def _setup(self, features: Tensor | None, device: torch.device) -> None:
        if self._is_setup:
            return
        feature_dim = int(features.flatten(1).shape[1]) if features is not None else 0
        shared_numel = sum(p.numel() for p in self.shared)
        self.weighter.setup(WeighterSetup(feature_dim, shared_numel, device))
        self.weighter.to(device)
        self._is_setup = True

    # --- the step ------------------------------------------------------------------------------
    def backward(
        self,
        losses: Losses,
        features: Tensor | None = None,
        *,
        epoch: int | None = None,
        metrics: Tensor | Sequence[float] | None = None,
        labelled: Tensor | Sequence[int] | None = None,
    ) -> Tensor:
        """Combine the task losses (order: ``weighter.task_names``) and fill ``.grad``.

        Returns the task weights ``[T]`` (detached). ``metrics``: per-task scores in [0, 1] for
        weighters that declare ``step_metrics`` (DTP). ``labelled``: this rank's number of
        labelled samples behind each loss (pass it on every rank or on none); under
        torch.distributed each rank's losses and metrics are then weighted by its share of the
        labels, so ranks holding different numbers of labels give the gradients of one process
        on the global batch (without it, ranks count equally).
        """
        per_task = self._as_list(losses)
        dist = self._dist
        shares = None
        if labelled is not None and dist:
            counts = torch.as_tensor(labelled, device=per_task[0].device)
            shares = distributed.label_shares(counts)
            per_task = [loss * share for loss, share in zip(per_task, shares)]
        if not any(t.requires_grad for t in per_task):
            raise ValueError("the losses carry no graph: compute them with gradients enabled")
        device = per_task[0].device
        needs = self.needs = self.weighter.needs_at(self.step)
        if (needs.features or needs.grads == "representation") and features is None:
            raise ConfigError(
                f"{type(self.weighter).__name__} reads the shared features: pass features="
            )
        self._setup(features, device)
        if needs.after_step and self._pending is not None:
            raise WeighterError(
                f"{type(self.weighter).__name__} updates itself after each optimizer step: call"
                " after_step() after optimizer.step() before the next backward()"
            )
        per_task = [t.float() for t in per_task]
        heads = self._heads(per_task, features) if needs.grads in (
            "representation", "parameters") else [[] for _ in per_task]
        result = self.paths(
            per_task, heads, needs=needs, features=features,
            metrics=self._metrics(metrics, device) if needs.step_metrics else None,
            shares=shares, step=self.step, epoch=self._epoch(epoch), distributed_=dist,
        )
        self.step += 1
        if needs.after_step:
            inp = result.input
            self._pending = WeighterInput(
                losses=result.losses.detach(), step=inp.step, epoch=inp.epoch,
                metrics=inp.metrics,
            )
        return result.weights

    def after_step(self) -> None:
        """The weighter's post-step update (FAMO, GradNorm, the dynamic unit...), after
        ``optimizer.step()``; a no-op for weighters that need none."""
        if self.needs.after_step and self._pending is not None:
            self.weighter.after_step(self._pending)
        self._pending = None

    # --- pieces ----------------------------------------------------------------------------------
    def _as_list(self, losses: Losses) -> list[Tensor]:
        names = self.weighter.task_names
        if isinstance(losses, Mapping):
            missing = [n for n in names if n not in losses]
            extra = [k for k in losses if k not in names]
            if missing or extra:
                raise ValueError(
                    f"losses by name must match the weighter's tasks {names}: missing {missing},"
                    f" unknown {extra}"
                )
            out = [losses[n] for n in names]
        else:
            out = list(losses)
        if len(out) != len(names):
            raise ValueError(f"expected {len(names)} losses ({names}), got {len(out)}")
        for name, t in zip(names, out):
            if t.dim() != 0:
                raise ValueError(f"loss {name!r} must be a scalar, got shape {tuple(t.shape)}")
        return out

    def _heads(self, per_task: list[Tensor], features: Tensor | None) -> list[list[Tensor]]:
        """Each task's own parameters, by a walk of its loss's graph (not past the features on
        the representation path)."""
        stop = features if self.needs.grads == "representation" else None
        exclude = {id(p) for p in self.shared}
        return [task_parameters(loss, stop, exclude) for loss in per_task]

    def _epoch(self, epoch: int | None) -> int | None:
        """The epoch given, or counted from ``steps_per_epoch``; None otherwise (a weighter that
        needs it, such as DWA, then says so)."""
        if epoch is not None:
            return epoch
        if self.steps_per_epoch:
            return self.step // self.steps_per_epoch
        return None

    def _metrics(self, metrics: Tensor | Sequence[float] | None, device: torch.device) -> Tensor:
        if metrics is None:
            raise ConfigError(
                f"{type(self.weighter).__name__} reads a per-task score in [0, 1] each step"
                " (e.g. batch accuracy): pass metrics=[...] to backward()"
            )
        return torch.as_tensor(metrics, dtype=torch.float32, device=device)


_STEPS: weakref.WeakKeyDictionary[Weighter, WeightedStep] = weakref.WeakKeyDictionary()


def backward(
    losses: Losses,
    weighter: Weighter,
    *,
    shared: Iterable[nn.Parameter] | None = None,
    features: Tensor | None = None,
    last_shared: Iterable[nn.Parameter] | None = None,
    epoch: int | None = None,
    metrics: Tensor | Sequence[float] | None = None,
    labelled: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """One call: combine ``losses`` with ``weighter`` and fill ``.grad``; returns the weights.

    Keeps one :class:`WeightedStep` per weighter (its step counter and gradient buffer). Weighters
    that update themselves after the optimizer step (``needs.after_step``) need
    ``WeightedStep.after_step()``: use a :class:`WeightedStep` for those.
    """
    if weighter.needs.after_step:
        raise ConfigError(
            f"{type(weighter).__name__} updates itself after each optimizer step: use"
            " step = mtlkit.WeightedStep(weighter, shared=...), then step.backward(...) and"
            " step.after_step() after optimizer.step()"
        )
    step = _STEPS.get(weighter)
    if step is None:
        step = WeightedStep(weighter, shared, last_shared=last_shared)
        _STEPS[weighter] = step
    return step.backward(losses, features, epoch=epoch, metrics=metrics, labelled=labelled)
