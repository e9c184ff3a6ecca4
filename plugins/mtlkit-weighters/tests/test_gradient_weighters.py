"""Exact checks of IMTL, Aligned-MTL, Nash-MTL, CAGrad and DB-MTL on hand-made gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters._solvers import (
    cagrad_weights,
    cagrad_weights_2,
    nash_weights,
    project_simplex,
)

from mtlkit.weighter import WeighterSetup

from .conftest import grads_input, make_weighter


def _random_grads(seed: int, t: int = 3, d: int = 8) -> torch.Tensor:
    return torch.randn(t, d, generator=torch.Generator().manual_seed(seed))


# --- IMTL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_imtl_g_projections_onto_every_unit_gradient_are_equal(seed: int) -> None:
    grads = _random_grads(seed, t=4).double()
    w = make_weighter("imtl", list("abcd"), loss_balance=False)
    out = w.combine(grads_input([1, 1, 1, 1], grads.float()))
    assert float(out.weights.sum()) == pytest.approx(1.0, abs=1e-5)
    d = out.weights.double() @ grads
    units = grads / grads.norm(dim=1, keepdim=True)
    proj = units @ d
    torch.testing.assert_close(proj, proj.mean().expand(4), rtol=1e-4, atol=1e-6)


def test_imtl_l_scales_and_their_loss() -> None:
    w = make_weighter("imtl", ["a", "b"], lr=0.5)
    assert w.param_groups()[0]["lr"] == 0.5
    with torch.no_grad():
        w.loss_scale.copy_(torch.tensor([0.5, -0.2]))
    grads = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    out = w.combine(grads_input([2.0, 3.0], grads))
    e = torch.tensor([0.5, -0.2]).exp()
    # IMTL-G on the scaled gradients, then expressed on the raw ones
    ref = make_weighter("imtl", ["a", "b"], loss_balance=False).combine(
        grads_input([2.0, 3.0], grads * e[:, None])
    )
    torch.testing.assert_close(out.weights, ref.weights * e)
    # the scales' own loss sum_i e^{s_i} L_i - s_i: gradient e^{s_i} L_i - 1
    out.loss.backward()
    torch.testing.assert_close(w.loss_scale.grad, e * torch.tensor([2.0, 3.0]) - 1)


def test_imtl_singular_system_falls_back_to_uniform() -> None:
    out = make_weighter("imtl", ["a", "b"], loss_balance=False).combine(
        grads_input([1, 1], torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    )
    torch.testing.assert_close(out.weights, torch.tensor([0.5, 0.5]))


# --- Aligned-MTL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_aligned_mtl_aligns_to_an_orthogonal_equal_norm_system(seed: int) -> None:
    grads = _random_grads(seed, t=3, d=6).double()
    w = make_weighter("aligned_mtl", ["a", "b", "c"])
    out = w.combine(grads_input([1, 1, 1], grads.float()))
    k = grads @ grads.T
    lam, v = torch.linalg.eigh(k)
    b = lam.min().sqrt() * (v / lam.sqrt()) @ v.T
    aligned = b @ grads  # rows: the aligned gradients
    torch.testing.assert_close(aligned @ aligned.T, lam.min() * torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(out.weights.double(), b.sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.grad.double(), aligned.sum(0), rtol=1e-4, atol=1e-5)


def test_aligned_mtl_rank_deficient_and_scales() -> None:
    grads = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # rank 2
    for scale in ("min", "median", "rmse"):
        out = make_weighter("aligned_mtl", list("abc"), scale=scale).combine(
            grads_input([1, 1, 1], grads)
        )
        assert torch.isfinite(out.weights).all() and torch.isfinite(out.grad).all()


# --- Nash-MTL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_nash_weights_solve_the_bargaining_equation(seed: int) -> None:
    g = np.random.default_rng(seed).normal(size=(4, 10))
    k = g @ g.T
    k = k / np.linalg.norm(k)
    a = nash_weights(k, max_iter=50, reg=0.0)
    assert (a > 0).all()
    np.testing.assert_allclose(k @ a, 1 / a, rtol=1e-6)


def test_nash_mtl_step_uses_the_normalised_gram_and_clips() -> None:
    grads = _random_grads(3, t=3, d=5) * 10
    w = make_weighter("nash_mtl", list("abc"), max_norm=None)
    out = w.combine(grads_input([1, 1, 1], grads))
    k = (grads @ grads.T).double()
    kn = k / k.norm()
    a = out.weights.double()
    torch.testing.assert_close(kn @ a, 1 / a, rtol=1e-3, atol=0)
    torch.testing.assert_close(w.alpha, out.weights)  # warm start kept for the next step
    # every task improves along the update: g_i . d > 0
    assert (grads @ out.grad > 0).all()
    clipped = make_weighter("nash_mtl", list("abc"), max_norm=0.5).combine(
        grads_input([1, 1, 1], grads)
    )
    assert float(clipped.grad.norm()) == pytest.approx(0.5, rel=1e-4)
    torch.testing.assert_close(clipped.grad / clipped.grad.norm(), out.grad / out.grad.norm())


# --- CAGrad --------------------------------------------------------------------------------------


def test_cagrad_with_c_zero_is_equal_weighting() -> None:
    grads = _random_grads(0)
    out = make_weighter("cagrad", list("abc"), c=0.0).combine(grads_input([1, 1, 1], grads))
    torch.testing.assert_close(out.weights, torch.ones(3))
    torch.testing.assert_close(out.grad, grads.sum(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_cagrad_dual_matches_brute_force_and_improves_the_worst_task(seed: int) -> None:
    grads = _random_grads(seed, t=2, d=5).double()
    k = (grads @ grads.T).numpy()
    c = 0.4
    w = cagrad_weights(k, c)
    grid = np.linspace(0, 1, 100001)
    ws = np.stack([grid, 1 - grid], axis=1)
    b = np.full(2, 0.5)
    g0n = np.sqrt(b @ k @ b)
    obj = ws @ k @ b + c * g0n * np.sqrt(np.einsum("ni,ij,nj->n", ws, k, ws))
    assert w @ k @ b + c * g0n * np.sqrt(w @ k @ w) <= obj.min() + 1e-9
    out = make_weighter("cagrad", ["a", "b"], c=c, rescale=0).combine(
        grads_input([1, 1], grads.float())
    )
    d = out.grad.double() / 2  # undo the x T scaling
    g0 = grads.mean(0)
    assert float((d - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-4)  # inside the ball
    # the worst task's improvement beats the average gradient's
    assert float((grads @ d).min()) >= float((grads @ g0).min()) - 1e-6


@pytest.mark.parametrize("seed", range(12))
def test_cagrad_two_task_closed_form_equals_the_general_solver(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(2, int(rng.integers(1, 6))))
    if seed == 0:
        g[1] = -2 * g[0]  # opposite gradients
    if seed == 1:
        g[1] = g[0]  # identical
    if seed == 2:
        g[1] = 5 * g[0]  # parallel, very different norms
    k = g @ g.T
    for c in (0.1, 0.4, 1.0, 3.0):
        closed = cagrad_weights_2(torch.tensor(k), c).numpy()
        general = cagrad_weights(k, c)
        b = np.full(2, 0.5)
        rho = c * np.sqrt(b @ k @ b)

        def f(w: np.ndarray, k: np.ndarray = k, b: np.ndarray = b, rho: float = rho) -> float:
            return float(w @ k @ b + rho * np.sqrt(max(w @ k @ w, 0.0)))

        # sqrt(w^T K w) near 0 (opposite gradients) amplifies rounding: an absolute tolerance
        assert f(closed) <= f(general) + 1e-7 * max(1.0, float(np.trace(k)))


@pytest.mark.parametrize("seed", range(4))
def test_cagrad_general_solver_matches_projected_gradient(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = 3 + seed
    g = rng.normal(size=(t, 6))
    k = g @ g.T
    c = 0.4
    b = np.full(t, 1 / t)
    q = k @ b
    rho = c * np.sqrt(b @ q)
    ref = b.copy()
    step = 0.2 / (np.linalg.eigvalsh(k).max() * (1 + rho))
    for _ in range(20000):
        kw = k @ ref
        ref = project_simplex(ref - step * (q + rho * kw / np.sqrt(ref @ kw)))
    w = cagrad_weights(k, c)

    def f(w: np.ndarray) -> float:
        return float(w @ q + rho * np.sqrt(w @ k @ w))

    assert f(w) <= f(ref) + 1e-9
    out = make_weighter("cagrad", [str(i) for i in range(t)]).combine(
        grads_input([1.0] * t, torch.tensor(g, dtype=torch.float32))
    )
    assert torch.isfinite(out.weights).all()


# --- DB-MTL --------------------------------------------------------------------------------------


def test_db_mtl_first_steps_by_hand() -> None:
    w = make_weighter("db_mtl", ["a", "b"])
    w.setup(WeighterSetup(feature_dim=1, shared_numel=2, device=torch.device("cpu")))
    grads = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = w.combine(grads_input([2.0, 0.5], grads))
    # step 1: b = 0.9; ema = 0.1 * g / L = (0.1, 0) and (0, 0.2); alpha = max norm / norm
    ema = torch.tensor([[0.1, 0.0], [0.0, 0.2]])
    torch.testing.assert_close(w.ema, ema)
    torch.testing.assert_close(w.alpha, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(out.grad, torch.tensor([0.2, 0.2]))
    torch.testing.assert_close(out.weights, 1 / torch.tensor([2.0, 0.5]), rtol=1e-6, atol=0)
    out = w.combine(grads_input([1.0, 1.0], grads))
    b = 0.9 / 2**0.5
    ema = b * ema + (1 - b) * grads
    torch.testing.assert_close(w.ema, ema)
    norms = ema.norm(dim=1)
    torch.testing.assert_close(out.grad, (norms.max() / norms) @ ema)
