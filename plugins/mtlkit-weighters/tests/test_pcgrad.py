"""PCGrad: the projection on hand-made conflicting gradients, and the Gram-space surgery against
a direct implementation."""

from __future__ import annotations

import pytest
import torch
from mtlkit_weighters.pcgrad import pcgrad_coefficients

from mtlkit.testing import GRAD_KINDS, raw_grads

from .conftest import grads_input, make_weighter


def _direct(grads: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The paper's algorithm on explicit vectors."""
    out = []
    for i in range(grads.shape[0]):
        gi = grads[i].clone()
        for j in order[i].tolist():
            dot = gi @ grads[j]
            if dot < 0:
                gi = gi - dot / (grads[j] @ grads[j]) * grads[j]
        out.append(gi)
    return torch.stack(out).sum(0)


def test_hand_made_conflict() -> None:
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    out = make_weighter("pcgrad", ["a", "b"]).combine(grads_input([1, 1], grads))
    # g1 . g2 = -1 < 0: g1' = g1 + g2 / 2 = (0.5, 0.5); g2' = g2 + g1 = (0, 1); sum (0.5, 1.5)
    torch.testing.assert_close(out.grad, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(out.weights, torch.tensor([2.0, 1.5]))
    # the projected gradients no longer conflict with the other task's gradient
    assert float(torch.tensor([0.5, 0.5]) @ grads[1]) == pytest.approx(0.0)
    assert float(torch.tensor([0.0, 1.0]) @ grads[0]) == pytest.approx(0.0)


def test_no_conflict_is_the_plain_sum() -> None:
    grads = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1], [0.3, 0.0, 1.0]])
    for order in ("random", "fixed"):
        out = make_weighter("pcgrad", ["a", "b", "c"], order=order).combine(
            grads_input([1, 1, 1], grads, step=3)
        )
        torch.testing.assert_close(out.grad, grads.sum(0))
        torch.testing.assert_close(out.weights, torch.ones(3))


@pytest.mark.parametrize("seed", range(8))
def test_gram_surgery_matches_the_direct_algorithm(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    t = 4
    grads = torch.randn(t, 9, generator=g, dtype=torch.float64)
    keys = torch.rand(t, t, generator=g)
    keys.fill_diagonal_(float("inf"))
    order = keys.argsort(dim=1)[:, : t - 1]
    coef = pcgrad_coefficients(grads @ grads.T, order)
    torch.testing.assert_close(coef.sum(0) @ grads, _direct(grads, order))


def test_random_order_is_a_function_of_the_step() -> None:
    w = make_weighter("pcgrad", list("abcde"))
    assert torch.equal(w.orders(7), w.orders(7))
    assert any(not torch.equal(w.orders(0), w.orders(s)) for s in range(1, 5))
    other_seed = make_weighter("pcgrad", list("abcde"), seed=1)
    assert any(not torch.equal(w.orders(s), other_seed.orders(s)) for s in range(5))
    for row, i in zip(w.orders(3).tolist(), range(5)):
        assert sorted(row) == [j for j in range(5) if j != i]


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_projected_gradients_on_raw_inputs(kind: str, t: int) -> None:
    """Raw small-norm, conflicting and near-parallel gradients: each projected gradient does not
    conflict with the ORIGINAL gradient it was projected against last (for T = 2 the only one:
    exactly orthogonal after a projection); the Gram surgery equals the direct algorithm; the
    update is the sum of the projected gradients and the heads keep their own gradients."""
    grads = raw_grads(kind, t)
    w = make_weighter("pcgrad", [str(i) for i in range(t)])
    order = w.orders(5)
    coef = pcgrad_coefficients(grads @ grads.T, order)
    projected = coef @ grads
    torch.testing.assert_close(coef.sum(0) @ grads, _direct(grads, order))
    last = order[:, -1]
    dots = (projected * grads[last]).sum(1)
    tol = 1e-12 * float(grads.norm(dim=1).max()) ** 2
    assert float(dots.min()) >= -tol, dots
    if t == 2:
        conflict = float(grads[0] @ grads[1]) < 0
        if conflict:
            torch.testing.assert_close(dots, torch.zeros(2, dtype=dots.dtype), rtol=0, atol=tol)
        else:
            torch.testing.assert_close(projected, grads)
    out = w.combine(grads_input([1.0] * t, grads, step=5))
    torch.testing.assert_close(out.grad.double(), projected.sum(0), rtol=1e-5,
                               atol=1e-6 * float(grads.norm(dim=1).max()))
    assert out.head_weights is not None and torch.equal(out.head_weights, torch.ones(t))


SMALL = 1e-4 * torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]])
"""Gradients of scale 1e-4 in conflict (``||g_j||^2 = 3e-8``, ``g_1 . g_2 = -1e-8``)."""


def test_small_gradients_are_projected_exactly_by_default() -> None:
    """The paper's projection (authors' TF code, torchjd): 1/3 of each, no conflict left."""
    out = make_weighter("pcgrad", ["a", "b"]).combine(grads_input([1, 1], SMALL))
    torch.testing.assert_close(out.grad / 1e-4, torch.tensor([0.0, 8 / 3, 0.0]))
    torch.testing.assert_close(out.weights, torch.full((2,), 4 / 3))


def test_eps_reproduces_libmtl_on_small_gradients() -> None:
    """LibMTL's ``+ 1e-8`` on ``||g_j||^2`` projects a quarter less at this scale."""
    out = make_weighter("pcgrad", ["a", "b"], eps=1e-8).combine(grads_input([1, 1], SMALL))
    torch.testing.assert_close(out.grad / 1e-4, torch.tensor([0.0, 2.5, 0.0]))
    torch.testing.assert_close(out.weights, torch.full((2,), 1.25))
