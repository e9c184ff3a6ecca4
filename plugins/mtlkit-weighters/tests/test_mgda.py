"""MGDA: the two-task closed form, the T > 2 solver, normalisation and the UB variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters._solvers import min_norm_2, min_norm_simplex

from mtlkit.testing import GRAD_KINDS, raw_grads

from .conftest import grads_input, make_weighter


def _brute_force_2(g1: torch.Tensor, g2: torch.Tensor) -> float:
    a = torch.linspace(0, 1, 200001, dtype=torch.float64)[:, None]
    norms = (a * g1.double() + (1 - a) * g2.double()).norm(dim=1)
    return float(a[norms.argmin(), 0])


@pytest.mark.parametrize("seed", range(5))
def test_two_task_closed_form(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(2, 7, generator=g)
    w = make_weighter("mgda", ["a", "b"], sum_to="one").combine(grads_input([1.0, 1.0], grads))
    k = grads @ grads.T
    expected = ((k[1, 1] - k[0, 1]) / (k[0, 0] + k[1, 1] - 2 * k[0, 1])).clamp(0, 1)
    torch.testing.assert_close(w.weights, torch.stack([expected, 1 - expected]))
    assert abs(float(w.weights[0]) - _brute_force_2(grads[0], grads[1])) < 1e-4
    torch.testing.assert_close(w.grad, w.weights @ grads)


def test_two_task_hand_example_and_vertex_cases() -> None:
    # g1 = (1, 0), g2 = (0, 1): a = 1/2, d = (1/2, 1/2)
    out = make_weighter("mgda", ["a", "b"], sum_to="one").combine(
        grads_input([1, 1], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    )
    torch.testing.assert_close(out.weights, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(out.grad, torch.tensor([0.5, 0.5]))
    # g2 = 3 g1: the min-norm point is the shorter vertex g1
    out = make_weighter("mgda", ["a", "b"], sum_to="one").combine(
        grads_input([1, 1], torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    )
    torch.testing.assert_close(out.weights, torch.tensor([1.0, 0.0]))
    # identical gradients: any split; the solver picks 1/2 and stays finite
    torch.testing.assert_close(min_norm_2(torch.ones(2, 2)), torch.tensor([0.5, 0.5]))
    # opposite gradients of equal length: a Pareto-stationary point, the update is zero
    out = make_weighter("mgda", ["a", "b"]).combine(
        grads_input([1, 1], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    )
    torch.testing.assert_close(out.grad, torch.zeros(2))


def test_weights_sum_to_the_number_of_tasks_by_default() -> None:
    grads = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    one = make_weighter("mgda", ["a", "b"], sum_to="one").combine(grads_input([1, 1], grads))
    tasks = make_weighter("mgda", ["a", "b"]).combine(grads_input([1, 1], grads))
    torch.testing.assert_close(tasks.weights, 2 * one.weights)
    assert float(tasks.weights.sum()) == pytest.approx(2.0)


@pytest.mark.parametrize("seed", range(6))
def test_simplex_solver_matches_a_projected_gradient_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = int(rng.integers(3, 7))
    g = rng.normal(size=(t, 4))
    k = g @ g.T
    a = min_norm_simplex(k)
    assert a.min() >= 0 and a.sum() == pytest.approx(1.0)
    # reference: many projected-gradient steps
    from mtlkit_weighters._solvers import project_simplex

    ref = np.full(t, 1.0 / t)
    step = 1.0 / np.linalg.eigvalsh(k).max()
    for _ in range(20000):
        ref = project_simplex(ref - step * (k @ ref))
    assert a @ k @ a == pytest.approx(ref @ k @ ref, abs=1e-7)
    # optimality: every task's directional derivative along -d is at least ||d||^2
    d = a @ g
    assert (g @ d >= d @ d - 1e-6).all()


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_kkt_conditions_on_raw_inputs(kind: str, t: int) -> None:
    """``min_{a in simplex} a^T K a`` on raw small-norm, conflicting and near-parallel gradients:
    with ``m = a^T K a``, ``(K a)_i = m`` where ``a_i > 0`` and ``(K a)_i >= m`` where ``a_i = 0``
    (the KKT conditions, which suffice for this convex problem)."""
    grads = raw_grads(kind, t)
    out = make_weighter("mgda", [str(i) for i in range(t)], sum_to="one").combine(
        grads_input([1.0] * t, grads)
    )
    a = out.weights.double()
    assert float(a.min()) >= 0 and float(a.sum()) == pytest.approx(1.0, abs=1e-6)
    k = grads @ grads.T
    ka = k @ a
    m = float(a @ ka)
    tol = 1e-6 * float(k.diagonal().max())
    active = a > 1e-6
    assert float((ka[active] - m).abs().max()) <= tol, (ka, m)
    assert float((ka - m).min()) >= -tol
    # the update is the min-norm point itself (the heads get a_i times their own gradient)
    assert out.head_weights is None
    assert float(out.grad.double().norm() ** 2) == pytest.approx(m, rel=1e-4, abs=tol)


def test_ub_uses_the_full_representation_gradients() -> None:
    """MGDA-UB here solves on the ``[B, F]`` representation gradients: per-sample differences
    count. Summed over the batch first (LibMTL's ``rep_grad``), these two tasks look parallel."""
    grads = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]])  # [T, B, F]
    out = make_weighter("mgda", ["a", "b"], rep=True, sum_to="one").combine(
        grads_input([1, 1], grads)
    )
    torch.testing.assert_close(out.weights, torch.tensor([0.2, 0.8]))  # K = diag(4, 1)
    summed = make_weighter("mgda", ["a", "b"], sum_to="one").combine(
        grads_input([1, 1], grads.sum(1))
    )
    torch.testing.assert_close(summed.weights, torch.tensor([0.0, 1.0]))


def test_normalisation_gives_a_convex_combination_of_raw_gradients() -> None:
    grads = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    out = make_weighter("mgda", ["a", "b"], normalize="l2", sum_to="one").combine(
        grads_input([2.0, 1.0], grads)
    )
    # unit gradients (1,0), (0,1): equal weights on the normalised ones -> d ∝ (1, 1)
    assert float(out.weights.sum()) == pytest.approx(1.0)
    assert float(out.grad[0]) == pytest.approx(float(out.grad[1]))


def test_rep_variant_returns_a_feature_shaped_gradient() -> None:
    w = make_weighter("mgda", ["a", "b", "c"], rep=True)
    assert w.needs.grads == "representation"
    grads = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1))
    out = w.combine(grads_input([1, 1, 1], grads))
    assert out.grad.shape == (4, 6)
    torch.testing.assert_close(out.grad, torch.einsum("t,tbf->bf", out.weights, grads))
