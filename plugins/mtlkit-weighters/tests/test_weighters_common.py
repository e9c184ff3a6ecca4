"""Every registered weighter, on every option set of :func:`conftest.options_of`, through mtlkit's
conformance kit (finite output, permutation equivariance, exact resume, untouched inputs, heads
that descend their own losses, the DDP-safe declaration), plus this distribution's own promises."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from mtlkit.testing import FakeTrainer, parametrize_checks, weighter_checks
from mtlkit.testing.weighters import build_weighter, task_names
from mtlkit.weighter import Weighter, WeighterInput

from .conftest import CLASSES, NAMES, VARIANTS, make_weighter, options_of, variant_id

CHECKS = [
    check
    for name in NAMES
    for check in weighter_checks(CLASSES[name], options_of(name), num_tasks=(2, 3), name=name)
]
"""Declarations such as PCGrad's order dependence live on the classes (``conformance_traits``)."""


@parametrize_checks(CHECKS)
def test_conformance(check: Any) -> None:
    check()


def test_every_registered_weighter_is_checked() -> None:
    assert NAMES
    for name in NAMES:
        assert any(c.id == f"{name}-heads" for c in CHECKS), name


@pytest.mark.parametrize("name", NAMES)
def test_needs_are_declared_and_options_have_defaults(name: str) -> None:
    w = make_weighter(name, task_names(3))
    assert isinstance(w, Weighter)
    assert type(w).__doc__ and type(w).__module__.startswith("mtlkit_weighters.")
    module_doc = __import__(type(w).__module__, fromlist=["x"]).__doc__ or ""
    assert re.search(r"\b(19|20)\d\d\b", module_doc), "each module cites its paper and year"
    w.Options()  # every option has a default


@pytest.mark.parametrize(("name", "grads"), [("mgda", "representation"),
                                             ("aligned_mtl", "representation"),
                                             ("imtl", "representation")])
def test_rep_option_switches_to_representation_gradients(name: str, grads: str) -> None:
    names = task_names(3)
    assert make_weighter(name, names).needs.grads == "parameters"
    assert make_weighter(name, names, rep=True).needs.grads == grads
    assert type(make_weighter(name, names)).needs.grads == "parameters"  # class default intact


GRADIENT_VARIANTS = [
    v for v in VARIANTS
    if make_weighter(v[0], task_names(3), **v[1]).needs.grads in ("parameters", "representation")
]
"""The variants that return a combined gradient (the others return a loss)."""


@pytest.mark.parametrize("variant", GRADIENT_VARIANTS, ids=variant_id)
def test_scratch_gradients_are_reused(variant: tuple[str, dict[str, Any]]) -> None:
    """Given the trainer's buffer as scratch, the combined gradient is written over its row 0 and
    costs no new D-sized tensor (the kit checks that a caller's own tensor stays untouched)."""
    name, opts = variant
    names = task_names(3)
    out = FakeTrainer(build_weighter(CLASSES[name], opts, names), 3).step()
    assert out.inp.grads is not None
    w = build_weighter(CLASSES[name], opts, names)
    FakeTrainer(w, 3)  # setup() as the trainer would call it
    grads = out.inp.grads.clone()
    inp = WeighterInput(losses=out.inp.losses, features=out.inp.features, grads=grads,
                        step=out.inp.step, epoch=out.inp.epoch, metrics=out.inp.metrics,
                        grads_scratch=True)
    update = w.combine(inp)
    assert update.grad is not None
    assert update.grad.data_ptr() == grads.data_ptr(), "result not written over row 0"
    assert torch.isfinite(update.grad).all()
