"""Conformance checks for a Task: missing labels, per-sample losses, metric declarations.

The kit builds the task's head with ``build_head(feature_dim, info)`` and runs it on random
features; targets come from the author's ``targets(n, generator)`` factory (default: class
indices when ``info`` has ``num_classes``, else standard-normal floats). Missing labels are
marked as mtlkit marks them: ``task.missing_label`` for integer targets, NaN for floating ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlkit.errors import CapabilityError
from mtlkit.task import MetricSpec, Task
from mtlkit.testing._checks import Check, SkipCheck, options_id, run_checks

TargetFactory = Callable[[int, torch.Generator], Tensor]
"""``targets(n, generator)``: ``n`` fully labelled targets for the task."""
OptionsLike = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


def default_targets(info: Mapping[str, Any]) -> TargetFactory:
    """Class indices below ``info["num_classes"]``, else standard-normal floats."""
    k = info.get("num_classes")

    def make(n: int, gen: torch.Generator) -> Tensor:
        if k is not None:  # every class present once n >= k, in random order
            return (torch.arange(n) % int(k))[torch.randperm(n, generator=gen)]
        return torch.randn(n, generator=gen)

    return make


def mark_missing(task: Task, target: Tensor, missing: Tensor) -> Tensor:
    """``target`` with the rows where ``missing`` is True marked unlabelled, as datasets do."""
    if target.is_floating_point():
        shape = (-1,) + (1,) * (target.ndim - 1)
        return torch.where(missing.view(shape), torch.full_like(target, float("nan")), target)
    return torch.where(missing, torch.full_like(target, task.missing_label), target)


class _TaskCase:
    """One task under test: a fresh task and head per check, random features, targets."""

    def __init__(self, cls: type[Task], options: OptionsLike, name: str,
                 info: Mapping[str, Any], feature_dim: int, batch_size: int,
                 eval_samples: int, targets: TargetFactory | None, seed: int) -> None:
        self.cls, self.options, self.name = cls, options, name
        self.info, self.feature_dim, self.batch_size = dict(info), feature_dim, batch_size
        self.eval_samples = eval_samples
        self.targets = targets or default_targets(info)
        self.seed = seed

    def make(self) -> tuple[Task, nn.Module]:
        raw = self.options() if callable(self.options) else self.options
        task = self.cls(self.name, self.cls.Options.model_validate(dict(raw)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            head = task.build_head(self.feature_dim, self.info)
        if not isinstance(head, nn.Module):
            raise AssertionError(f"build_head returned {type(head).__name__}, not an nn.Module")
        return task, head

    def batch(self, n: int, salt: int = 0) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1009 + salt)
        features = torch.randn(n, self.feature_dim, generator=gen)
        return features, self.targets(n, gen)

    # --- the checks -----------------------------------------------------------------------------
    def per_sample_loss(self) -> None:
        """``per_sample_loss`` is a finite floating ``[B]`` tensor, and ``loss`` its mean."""
        task, head = self.make()
        x, y = self.batch(self.batch_size)
        out = head(x)
        ps = task.per_sample_loss(out, y)
        b = self.batch_size
        if not isinstance(ps, Tensor) or tuple(ps.shape) != (b,):
            shape = tuple(ps.shape) if isinstance(ps, Tensor) else type(ps).__name__
            raise AssertionError(f"per_sample_loss returned shape {shape}, expected ({b},)")
        if not ps.is_floating_point() or not bool(torch.isfinite(ps).all()):
            raise AssertionError(f"per_sample_loss is not finite floating: {ps.tolist()}")
        loss = task.loss(out, y)
        if loss.numel() != 1 or not torch.allclose(loss.detach(), ps.detach().mean(), rtol=1e-5):
            raise AssertionError(
                f"with every sample labelled, loss {loss.tolist()} is not the mean of"
                f" per_sample_loss {float(ps.mean())}"
            )

    def missing_labels(self) -> None:
        """All-missing batch: loss exactly 0, gradient exactly 0, never NaN (train and eval
        mode). Mixed batch: the mean over labelled samples, and no gradient from the others."""
        b = self.batch_size
        for mode in ("train", "eval"):
            task, head = self.make()
            head.train(mode == "train")
            x, y = self.batch(b)
            x.requires_grad_(True)
            none = mark_missing(task, y, torch.ones(b, dtype=torch.bool))
            loss = task.loss(head(x), none)
            value = loss.detach()
            if value.numel() != 1 or not bool(torch.isfinite(value).all()) or float(value) != 0:
                raise AssertionError(
                    f"{mode} mode: a batch without labels gave loss {loss.tolist()}, expected"
                    " exactly 0 (never NaN)"
                )
            if loss.requires_grad:
                wrt = [x, *(p for p in head.parameters() if p.requires_grad)]
                grads = torch.autograd.grad(loss, wrt, allow_unused=True)
                for g in grads:
                    if g is not None and (not bool(torch.isfinite(g).all()) or bool(g.any())):
                        raise AssertionError(
                            f"{mode} mode: a batch without labels gave a nonzero or non-finite"
                            " gradient"
                        )
        task, head = self.make()
        head.eval()  # per-sample outputs: no batch statistics couple the samples
        x, y = self.batch(b, salt=1)
        x.requires_grad_(True)
        out = head(x)
        full = task.per_sample_loss(out, y)
        missing = torch.arange(b) % 2 == 1
        loss = task.loss(out, mark_missing(task, y, missing))
        expected = full[~missing].mean()
        if not torch.allclose(loss.detach(), expected.detach(), rtol=1e-5, atol=1e-7):
            raise AssertionError(
                f"mixed batch: loss {float(loss)} is not the mean over the labelled samples"
                f" {float(expected)}"
            )
        (gx,) = torch.autograd.grad(loss, [x], allow_unused=True)
        if gx is not None and bool(gx[missing].any()):
            raise AssertionError("mixed batch: unlabelled samples received a gradient")

    def update_state(self) -> None:
        """``update_state`` on an all-missing batch leaves the head's state as it was (and
        finite); on a labelled batch it stays finite."""
        task, head = self.make()
        x, y = self.batch(self.batch_size, salt=2)
        with torch.no_grad():
            out = head(x)
            before = {k: v.clone() for k, v in head.state_dict().items()}
            task.update_state(out, mark_missing(task, y, torch.ones(len(y), dtype=torch.bool)))
            for k, v in head.state_dict().items():
                if not torch.equal(v, before[k]):
                    raise AssertionError(f"update_state on a batch without labels changed {k}")
            task.update_state(out, y)
            for k, v in head.state_dict().items():
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    raise AssertionError(f"update_state made the head's {k} non-finite")

    def metrics(self) -> None:
        """Every metric ``metrics()`` declares is returned, finite, by ``new_meter().compute()``
        after an evaluation pass (extra keys such as counts are allowed)."""
        task, head = self.make()
        specs = task.metrics()
        if not isinstance(specs, list) or not all(isinstance(s, MetricSpec) for s in specs):
            raise AssertionError(f"metrics() must return a list of MetricSpec, got {specs!r}")
        names = [s.name for s in specs]
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise AssertionError(f"metric names must be distinct non-empty strings: {names}")
        if not all(isinstance(s.higher_is_better, bool) for s in specs):
            raise AssertionError("MetricSpec.higher_is_better must be a bool")
        meter = task.new_meter()
        head.eval()
        half = max(1, self.eval_samples // 2)
        with torch.no_grad():
            for part in range(2):
                x, y = self.batch(half, salt=10 + part)
                y = mark_missing(task, y, torch.arange(half) % 7 == 6)
                batch = {"input": x, "targets": {task.name: y}, "meta": {}}
                meter.update(head(x), y, batch)
        result = meter.compute()
        if not isinstance(result, dict):
            raise AssertionError(f"compute() returned {type(result).__name__}, not a dict")
        missing = [n for n in names if n not in result]
        if missing:
            raise AssertionError(
                f"metrics() declares {missing} but new_meter().compute() returned only"
                f" {sorted(result)} after {2 * half} samples"
            )
        bad = {n: result[n] for n in names if not _finite_number(result[n])}
        if bad:
            raise AssertionError(f"compute() returned non-finite or non-numeric metrics {bad}")

    def step_metric(self) -> None:
        """A declared per-step metric is a finite scalar in [0, 1], also on a batch without
        labels (a task without one raises CapabilityError and this check is skipped)."""
        task, head = self.make()
        x, y = self.batch(self.batch_size, salt=3)
        out = head(x)
        try:
            value = task.step_metric(out, y)
        except CapabilityError:
            raise SkipCheck("declares no per-step metric") from None
        none = mark_missing(task, y, torch.ones(len(y), dtype=torch.bool))
        for what, v in (("labelled", value), ("unlabelled", task.step_metric(out, none))):
            if not isinstance(v, Tensor) or v.numel() != 1:
                raise AssertionError(f"step_metric on a {what} batch is not a scalar tensor: {v}")
            if not bool(torch.isfinite(v).all()) or not 0.0 <= float(v) <= 1.0:
                raise AssertionError(f"step_metric on a {what} batch is {float(v)}, not in [0, 1]")


def _finite_number(value: Any) -> bool:
    try:
        return bool(torch.isfinite(torch.tensor(float(value))))
    except (TypeError, ValueError):
        return False


def task_checks(
    cls: type[Task],
    options: Sequence[OptionsLike] = ({},),
    *,
    info: Mapping[str, Any] | None = None,
    feature_dim: int = 8,
    batch_size: int = 8,
    eval_samples: int = 64,
    targets: TargetFactory | None = None,
    name: str | None = None,
    seed: int = 0,
) -> list[Check]:
    """Every conformance check of task class ``cls``, per options set.

    ``info`` is what a dataset would report for the task (default ``{"num_classes": 3}``);
    ``eval_samples`` is the size of the evaluation pass behind the metrics check (metrics such
    as TAR at a FAR need enough pairs). Checks: ``per-sample-loss``, ``missing-labels``,
    ``update-state``, ``metrics``, ``step-metric``.
    """
    info = {"num_classes": 3} if info is None else info
    label = name or cls.__name__
    out: list[Check] = []
    for opts in options:
        case = _TaskCase(cls, opts, label, info, feature_dim, batch_size, eval_samples,
                         targets, seed)
        prefix = f"{label}{options_id(opts)}"
        out += [
            Check(f"{prefix}-per-sample-loss", case.per_sample_loss),
            Check(f"{prefix}-missing-labels", case.missing_labels),
            Check(f"{prefix}-update-state", case.update_state),
            Check(f"{prefix}-metrics", case.metrics),
            Check(f"{prefix}-step-metric", case.step_metric),
        ]
    return out


def check_task(cls: type[Task], options: Sequence[OptionsLike] = ({},), **kwargs: Any) -> None:
    """Run :func:`task_checks`; raise one AssertionError naming every failed check."""
    name = kwargs.get("name") or cls.__qualname__
    run_checks(task_checks(cls, options, **kwargs), f"task {name}")


__all__ = ["check_task", "default_targets", "mark_missing", "task_checks"]
