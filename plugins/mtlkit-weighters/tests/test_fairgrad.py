"""FairGrad: the residual of K w = w^(-1/alpha) on raw inputs, and the reference's equation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters.fairgrad import FairGradWeighter, fairgrad_weights

from mtlkit.testing import GRAD_KINDS, raw_grads

from .conftest import grads_input


def _make(names: list[str], **options: object) -> FairGradWeighter:
    return FairGradWeighter(names, FairGradWeighter.Options(**options))


def _reference_solve(k: np.ndarray, alpha: float, iters: int = 200) -> np.ndarray:
    """The reference's residual ``F(x) = K x - (1/x)^(1/alpha)`` driven to zero by plain damped
    Newton on F itself (the reference uses scipy's least_squares from x = 1/T, bounds x >= 0)."""
    t = k.shape[0]
    x = np.full(t, 1.0 / t)
    for _ in range(iters):
        r = k @ x - (1.0 / x) ** (1.0 / alpha)
        jac = k + np.diag((1.0 / alpha) * x ** (-1.0 / alpha - 1.0))
        step = np.linalg.solve(jac, r)
        size = 1.0
        while np.any(x - size * step <= 0) or (
            np.linalg.norm(k @ (x - size * step) - (x - size * step) ** (-1.0 / alpha))
            > np.linalg.norm(r) * (1 - 1e-4 * size)
        ):
            size /= 2
            if size < 1e-12:
                return x
        x = x - size * step
    return x


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(4))
def test_matches_the_reference_equation_on_random_cases(alpha: float, seed: int) -> None:
    t = 2 + seed % 3
    grads = torch.randn(t, 7, generator=torch.Generator().manual_seed(seed)).double()
    out = _make(list("abcd")[:t], alpha=alpha, reg=0.0).combine(grads_input([1.0] * t, grads))
    ref = _reference_solve((grads @ grads.T).numpy(), alpha)
    np.testing.assert_allclose(out.weights.double().numpy(), ref, rtol=1e-5)
    torch.testing.assert_close(out.grad, out.weights.double() @ grads, rtol=1e-5, atol=1e-9)
    assert out.head_weights is None  # heads: w_i times their own gradient, as the reference


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_residual_is_small_on_raw_inputs(kind: str, t: int, alpha: float) -> None:
    grads = raw_grads(kind, t, d=8)
    k = grads @ grads.T
    out = _make([str(i) for i in range(t)], alpha=alpha).combine(grads_input([1.0] * t, grads))
    w = out.weights.double()
    assert bool((w > 0).all())
    rhs = w.pow(-1.0 / alpha)
    # the solved equation, ridge included (relative: reg ||K||_F)
    lhs = (k + 1e-6 * torch.linalg.norm(k) * torch.eye(t, dtype=k.dtype)) @ w
    # (the weights come back in float32: the residual is judged against the terms it sums)
    scale = rhs.abs() + k.abs() @ w.abs()
    assert bool(((lhs - rhs).abs() <= 1e-5 * scale).all()), (lhs, rhs)
    # every task descends: g_i . d = w_i^(-1/alpha) up to the ridge
    dots = grads @ (w @ grads)
    assert bool((dots > -1e-6 * torch.linalg.norm(k) * w).all())


def test_alpha_one_is_the_nash_equation_and_scales_like_it() -> None:
    grads = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    out = _make(["a", "b"], reg=0.0).combine(grads_input([1, 1], grads))
    # diagonal K: w_i^2 K_ii = 1 -> w = (1, 1/4)
    torch.testing.assert_close(out.weights.double(), torch.tensor([1.0, 0.25],
                                                                  dtype=torch.float64))
    # gradients scaled by s: w scales by s^(-2 alpha / (1 + alpha))
    for alpha in (0.5, 2.0):
        a = _make(["a", "b"], alpha=alpha).combine(grads_input([1, 1], grads)).weights
        b = _make(["a", "b"], alpha=alpha).combine(grads_input([1, 1], 1e-3 * grads)).weights
        torch.testing.assert_close(b, a * 1e-3 ** (-2 * alpha / (1 + alpha)), rtol=1e-5, atol=0)


def test_degenerate_inputs_stay_finite() -> None:
    zero = _make(["a", "b"]).combine(grads_input([1, 1], torch.zeros(2, 3)))
    torch.testing.assert_close(zero.weights, torch.ones(2))
    opposite = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    out = _make(["a", "b"]).combine(grads_input([1, 1], opposite))
    assert torch.isfinite(out.weights).all() and bool((out.weights > 0).all())
    np.testing.assert_allclose(fairgrad_weights(np.eye(3), 2.0, reg=0.0), np.ones(3), rtol=1e-10)
