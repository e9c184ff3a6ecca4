"""PCGrad: the projection on hand-made conflicting gradients, and the Gram-space surgery against
a direct implementation."""

from __future__ import annotations

import pytest
import torch
from mtlkit_weighters.pcgrad import pcgrad_coefficients

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
