"""Shared pieces: the base of the gradient-combining weighters and option helpers."""

from __future__ import annotations

import zlib
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput
from mtlkit_weighters._solvers import combine_input_rows, gram


class UpdateEveryOptions(Options):
    """Options of a gradient method that can compute its weights only every few steps."""

    update_every: int = Field(1, ge=1)
    """Compute the gradient-based weights every k steps (the Nash-MTL paper's trick). In between,
    the last weights combine the gradients w.r.t. the shared representation: one trunk backward
    plus T head backwards, the cost of equal weighting, and since ``g_i = J^T dL_i/dz`` the shared
    update is exactly ``sum_i w_i g_i`` with those weights; heads get what the method gives them."""


class RepOptions(UpdateEveryOptions):
    """Options of a weighter that can read representation gradients instead of parameter ones."""

    rep: bool = False
    """Use the gradients w.r.t. the shared representation (the "UB" variant: one trunk backward,
    T head backwards) instead of the gradients w.r.t. the shared parameters (T trunk backwards)."""
    rep_batch: Literal["flatten", "sum"] = "flatten"
    """With ``rep``: the weights come from the whole ``[B, ...]`` representation gradients
    (``flatten``: the MGDA-UB bound, the Aligned-MTL authors' code) or from their sum over the
    batch (``sum``: LibMTL's ``rep_grad``, which drops every per-sample difference between the
    tasks). The update combines the full per-sample gradients either way."""

    @model_validator(mode="after")
    def _rep_batch_needs_rep(self) -> RepOptions:
        if self.rep_batch != "flatten" and not self.rep:
            raise ValueError("rep_batch applies to representation gradients: set rep: true")
        return self


class LRGroupOptions(Options):
    """Options of a weighter that owns parameters stepped by the main optimizer."""

    lr: float | None = Field(None, gt=0.0)
    """Learning rate of the weighter's own parameter group; None: the main optimizer's."""


def own_param_groups(weighter: Weighter, lr: float | None) -> list[dict[str, Any]]:
    """One param group for the weighter's parameters, never weight-decayed, with its own lr."""
    params = [p for p in weighter.parameters() if p.requires_grad]
    if not params:
        return []
    group: dict[str, Any] = {"params": params, "weight_decay": 0.0}
    if lr is not None:
        group["lr"] = lr
    return [group]


def visit_orders(num_tasks: int, random: bool, tag: str, seed: int, step: int | None) -> Tensor:
    """``[T, T-1]``: the other tasks in the order each task visits them (index order, or drawn
    from ``(tag, seed, step)`` so a resumed run draws the same orders)."""
    t = num_tasks
    if not random or step is None:
        keys = torch.arange(t, dtype=torch.float32).repeat(t, 1)
    else:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(stable_seed(tag, seed, step))
        keys = torch.rand(t, t, generator=gen)
    keys.fill_diagonal_(float("inf"))
    return keys.argsort(dim=1)[:, : t - 1]


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from its parts, identical across processes (unlike ``hash``)."""
    text = "/".join(str(p) for p in parts).encode()
    return (zlib.crc32(text) << 31 | zlib.crc32(text[::-1])) & (2**63 - 1)


HeadGradients = Literal["weighted", "own"]
"""How a gradient method trains the task heads (``GramWeighter.head_gradients``)."""


class PeriodicWeights(Weighter):
    """``update_every: k`` for a method whose shared update is ``sum_i w_i g_i`` with the weights
    it records: weights computed every k steps, and in between the last ones combine the
    representation gradients (one trunk backward, the cost of equal weighting; exact, since
    ``g_i = J^T dL_i/dz``). A subclass calls :meth:`reuse_weights` first in ``combine``."""

    @property
    def update_every(self) -> int:
        return int(getattr(self.options, "update_every", 1))

    def _between_updates(self, step: int | None) -> bool:
        return self.update_every > 1 and step is not None and step % self.update_every != 0

    def needs_at(self, step: int | None) -> Needs:
        """Between weight updates (``update_every``): representation gradients, with counters."""
        if not self._between_updates(step):
            return self.needs
        base = self.needs
        return Needs(grads="representation", features=base.features, after_step=base.after_step,
                     counters=True, step_metrics=base.step_metrics)

    def reuse_weights(self, inp: WeighterInput) -> Update | None:
        """The update with the last weights on a step between updates, else None."""
        if not self._between_updates(inp.step) or inp.grads is None:
            return None
        w = self.record(self.weights.to(inp.grads.device))
        return Update(weights=w, grad=combine_input_rows(w, inp.grads, inp.grads_scratch),
                      head_weights=self.head_weights_for(w))

    def head_weights_for(self, w: Tensor) -> Tensor | None:
        """``Update.head_weights`` for the shared coefficients ``w`` (None: ``w`` itself)."""
        return None


class GramWeighter(PeriodicWeights):
    """Base of the methods whose update is a linear combination ``sum_i w_i g_i`` of the task
    gradients, with ``w`` computed from the T x T Gram matrix ``K = G G^T`` only.

    ``combine`` is: one ``[T, T]`` Gram product and one ``[T] @ [T, D]`` product on the device,
    around a subclass's ``solve(K, inp) -> w``. ``Update.weights = w`` are the coefficients of the
    shared update. What the task heads get is declared once per method in ``head_gradients`` and
    turned into ``Update.head_weights`` by :meth:`head_weights_for`. The ``rep`` option (where
    offered) switches ``needs`` to representation gradients. The combined gradient is written over
    row 0 of the trainer's gradient buffer when it is handed over as scratch, so it costs no
    D-sized allocation.
    """

    needs = Needs(grads="parameters")
    head_gradients: ClassVar[HeadGradients] = "weighted"
    """``"weighted"``: head i gets ``w_i`` times its own loss gradient, as when the reference code
    back-propagates ``sum_i w_i L_i`` through every parameter (the method's ``w`` must be >= 0).
    ``"own"``: head i gets its own loss gradient unscaled, as when the reference code accumulates
    each task's plain backward into its decoder and only replaces the shared gradient; a negative
    or tiny shared coefficient then never reaches a head. A method that needs something else
    overrides :meth:`head_weights_for` (IMTL-L: ``exp(s_i)``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.head_gradients not in ("weighted", "own"):
            raise TypeError(f"{cls.__name__}.head_gradients must be 'weighted' or 'own',"
                            f" not {cls.head_gradients!r}")

    def __init__(self, task_names: Sequence[str], options: Options | None = None) -> None:
        super().__init__(task_names, options)
        if getattr(self.options, "rep", False):
            base = type(self).needs
            self.needs = Needs(
                grads="representation", features=base.features, after_step=base.after_step,
                counters=base.counters, step_metrics=base.step_metrics,
            )

    @abstractmethod
    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        """Task weights ``[T]`` (on ``k``'s device) from the Gram matrix ``k``."""

    def gram_of(self, grads: Tensor) -> Tensor:
        """The Gram matrix the solver reads: of the batch-summed representation gradients
        ``[T, B, ...] -> [T, ...]`` with ``rep_batch: sum`` (LibMTL), of ``grads`` otherwise."""
        if getattr(self.options, "rep_batch", "flatten") == "sum":
            return gram(grads.sum(dim=1))
        return gram(grads)

    def head_weights_for(self, w: Tensor) -> Tensor | None:
        """``Update.head_weights`` for the shared coefficients ``w``, per ``head_gradients``:
        None (the engine then uses ``w``) for ``"weighted"``, ones for ``"own"``."""
        return torch.ones_like(w) if self.head_gradients == "own" else None

    def combine(self, inp: WeighterInput) -> Update:
        reused = self.reuse_weights(inp)
        if reused is not None:
            return reused
        grads = inp.grads
        if grads is None:
            raise ValueError(f"{type(self).__name__} needs per-task gradients (needs.grads)")
        if self.num_tasks == 1:
            w = self.record(torch.ones(1, device=grads.device))
        else:
            w = self.record(self.solve(self.gram_of(grads), inp))
        return Update(weights=w, grad=combine_input_rows(w, grads, inp.grads_scratch),
                      head_weights=self.head_weights_for(w))
