"""What the task heads get, through the real ``mtlkit.gradients.GradientEngine``.

That every head descends its own loss is a conformance-kit check (``-heads`` in
test_weighters_common.py); here: it is not vacuous (IMTL at T = 3 and Aligned-MTL on
near-parallel gradients do produce negative SHARED coefficients on the kit's head problems), and
each method gives its heads exactly what its reference code does (``Heads:`` in its docstring).
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch

from mtlkit.testing.weighters import HEAD_CASES, head_engine, head_grad, own_head_gradients

from .conftest import CLASSES, NAMES, options_of

NEGATIVE_SHARED = {"imtl", "aligned_mtl"}
"""Methods whose shared coefficients go negative on the crafted cases."""


@pytest.mark.parametrize(
    ("name", "opts"),
    [(n, o) for n in sorted(NEGATIVE_SHARED) for o in options_of(n)],
    ids=lambda v: v if isinstance(v, str) else "".join(f"-{k}={x}" for k, x in v.items()) or "-",
)
def test_negative_shared_coefficients_occur(name: str, opts: dict[str, Any]) -> None:
    negative = False
    for case in HEAD_CASES:
        engine, _, model, _, batch = head_engine(CLASSES[name], opts, case)
        model.zero_grad(set_to_none=True)
        negative |= bool((engine.backward(batch, step=0, epoch=0).weights < 0).any())
    assert negative, f"{name}: no negative shared coefficient, the kit's head check is vacuous"


HEADS: dict[str, str] = {
    "pcgrad": "own", "cagrad": "own", "aligned_mtl": "own", "imtl": "loss_scale",
    # 0.2: LibMTL / torchjd / the ConFIG authors accumulate each task's plain backward into its
    # decoder and replace only the shared gradient
    "graddrop": "own", "gradvac": "own", "config": "own", "upgrad": "own", "moco": "own",
    "modo": "own", "sdmgrad": "own",
}
"""Each method's head contract from its reference code, where it is not ``weights`` (the
weights times the head's own loss gradient, as a backward of ``sum_i w_i L_i`` gives)."""


@pytest.mark.parametrize("name", NAMES)
def test_heads_get_what_the_reference_code_gives_them(name: str) -> None:
    engine, weighter, model, tasks, batch = head_engine(CLASSES[name], {}, "batch")
    own = own_head_gradients(model, tasks, batch)
    model.zero_grad(set_to_none=True)
    result = engine.backward(batch, step=0, epoch=0)
    contract = HEADS.get(name, "weights")
    if contract == "own":
        scale = torch.ones(len(tasks))
    elif contract == "loss_scale":
        scale = weighter.loss_scale.detach().exp()  # type: ignore[operator]
    else:
        scale = result.weights
    for task, g, s in zip(tasks, own, scale):
        got = head_grad(model, task.name)
        assert got is not None
        torch.testing.assert_close(got, s * g, rtol=1e-5, atol=1e-7)
    module = importlib.import_module(type(weighter).__module__)
    assert "\nHeads: " in (module.__doc__ or ""), f"{name}: document the head contract"


def test_imtl_g_alone_trains_heads_on_their_own_losses() -> None:
    engine, _, model, tasks, batch = head_engine(CLASSES["imtl"], {"loss_balance": False},
                                                 "random3")
    own = own_head_gradients(model, tasks, batch)
    model.zero_grad(set_to_none=True)
    result = engine.backward(batch, step=0, epoch=0)
    assert bool((result.weights < 0).any())  # a negative shared coefficient ...
    for task, g in zip(tasks, own):  # ... and every head on its own, unscaled gradient
        got = head_grad(model, task.name)
        assert got is not None
        torch.testing.assert_close(got, g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_batched_backward_changes_nothing(name: str) -> None:
    """``batched_backward`` (one vmapped backward for the T rows) gives every method exactly
    the loop's weights and gradients, on the trunk and on every head."""
    got = []
    for batched in (False, True):
        engine, _, model, _, batch = head_engine(CLASSES[name], {}, "batch")
        engine.batched_backward = batched
        model.zero_grad(set_to_none=True)
        result = engine.backward(batch, step=0, epoch=0)
        got.append((result.weights, [p.grad for p in model.parameters()]))
    (w0, g0), (w1, g1) = got
    torch.testing.assert_close(w1, w0, rtol=1e-5, atol=1e-7)
    for a, b in zip(g1, g0):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
