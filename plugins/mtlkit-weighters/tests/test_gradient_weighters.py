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

from mtlkit.testing import GRAD_KINDS, raw_grads
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


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_imtl_g_equal_projections_on_raw_inputs(kind: str, t: int) -> None:
    """The same on raw small-norm, conflicting and near-parallel gradients (float64 input)."""
    grads = raw_grads(kind, t)
    out = make_weighter("imtl", [str(i) for i in range(t)], loss_balance=False).combine(
        grads_input([1.0] * t, grads)
    )
    assert float(out.weights.sum()) == pytest.approx(1.0, abs=1e-5)
    proj = grads / grads.norm(dim=1, keepdim=True) @ (out.weights.double() @ grads)
    assert float(proj.min()) > 0
    torch.testing.assert_close(proj, proj.mean().expand(t), rtol=5e-5, atol=0)


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


def _aligned_by_svd(grads: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The paper's construction from the SVD ``G = U S V^T`` (not the Gram eigenbasis): the
    aligned rows ``sigma U_r V_r^T`` (rank r) and ``sigma^2`` for ``scale: min``."""
    u, sv, vt = torch.linalg.svd(grads, full_matrices=False)
    keep = sv**2 > float(sv.max()) ** 2 * grads.shape[0] * float(np.finfo(np.float32).eps)
    sigma = float(sv[keep].min())
    return sigma * u[:, keep] @ vt[keep], sigma**2


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", [*GRAD_KINDS, "rank-deficient"])
def test_aligned_mtl_matches_the_svd_construction_on_raw_inputs(kind: str, t: int) -> None:
    """Raw small-norm, conflicting, near-parallel and rank-deficient gradients: the update is the
    sum of the SVD-aligned rows, which are orthogonal with equal norms on the rank, so the update
    projects equally onto every aligned gradient."""
    if kind == "rank-deficient":
        grads = raw_grads("small", t)
        grads[-1] = grads[0] - 2 * grads[1] if t > 2 else -3 * grads[0]
    else:
        grads = raw_grads(kind, t)
    out = make_weighter("aligned_mtl", [str(i) for i in range(t)]).combine(
        grads_input([1.0] * t, grads)
    )
    assert out.head_weights is not None and torch.equal(out.head_weights, torch.ones(t))
    aligned, sigma2 = _aligned_by_svd(grads)
    d = out.grad.double()
    scale = float(grads.norm(dim=1).max())
    torch.testing.assert_close(d, aligned.sum(0), rtol=0, atol=1e-5 * scale)
    gram = aligned @ aligned.T  # sigma^2 times the projector onto the rank (identity if full)
    rank = int(torch.linalg.matrix_rank(gram / sigma2, tol=1e-6))
    torch.testing.assert_close(gram @ gram, sigma2 * gram, rtol=0, atol=1e-9 * sigma2)
    if rank == t:
        torch.testing.assert_close(gram, sigma2 * torch.eye(t, dtype=gram.dtype),
                                   rtol=0, atol=1e-9 * sigma2)
        torch.testing.assert_close(aligned @ d, torch.full((t,), sigma2, dtype=d.dtype),
                                   rtol=1e-4, atol=0)
    else:
        assert kind == "rank-deficient" and rank == t - 1


def test_aligned_mtl_shared_coefficients_go_negative_even_for_two_tasks() -> None:
    out = make_weighter("aligned_mtl", ["a", "b"]).combine(
        grads_input([1, 1], torch.tensor([[1.0, 0.0], [10.0, 1.0]]))
    )
    torch.testing.assert_close(out.weights, torch.tensor([0.8933, -0.0777]), rtol=0, atol=1e-4)
    assert out.head_weights is not None and torch.equal(out.head_weights, torch.ones(2))


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


def test_nash_mtl_step_solves_the_raw_equation_and_clips() -> None:
    grads = _random_grads(3, t=3, d=5) * 10
    w = make_weighter("nash_mtl", list("abc"), max_norm=None, reg=0.0)
    out = w.combine(grads_input([1, 1, 1], grads))
    k = (grads @ grads.T).double()
    a = out.weights.double()
    torch.testing.assert_close(k @ a, 1 / a, rtol=1e-4, atol=0)  # the RAW Gram matrix
    torch.testing.assert_close(w.alpha, out.weights)  # warm start kept for the next step
    # every task improves along the update: g_i . d = 1 / a_i > 0, and ||d||^2 = a^T K a = T
    torch.testing.assert_close(grads.double() @ out.grad.double(), 1 / a, rtol=1e-4, atol=0)
    assert float(out.grad.norm()) == pytest.approx(3**0.5, rel=1e-5)
    assert out.head_weights is None  # heads: a_i times their own gradient, as the reference
    clipped = make_weighter("nash_mtl", list("abc"), max_norm=0.5).combine(
        grads_input([1, 1, 1], grads)
    )
    assert float(clipped.grad.norm()) == pytest.approx(0.5, rel=1e-4)
    torch.testing.assert_close(clipped.grad / clipped.grad.norm(), out.grad / out.grad.norm())
    torch.testing.assert_close(clipped.weights, out.weights, rtol=1e-4, atol=0)  # heads unclipped


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_nash_mtl_solves_the_raw_equation_on_raw_inputs(kind: str, t: int) -> None:
    """``K a = 1/a`` on the raw (not normalised) Gram matrix, for small-norm, conflicting and
    near-parallel gradients; with the default ridge, ``(K + reg ||K||_F I) a = 1/a``; before the
    clip the update has norm ``sqrt(a^T K a) = sqrt(T)``, and the reference's clip makes it 1."""
    grads = raw_grads(kind, t)
    k = grads @ grads.T
    names = [str(i) for i in range(t)]
    for reg in (0.0, 1e-6):
        out = make_weighter("nash_mtl", names, max_norm=None, reg=reg).combine(
            grads_input([1.0] * t, grads)
        )
        a = out.weights.double()
        assert (a > 0).all()
        ridge = k + reg * float(torch.linalg.matrix_norm(k)) * torch.eye(t, dtype=k.dtype)
        residual = (a * (ridge @ a) - 1).abs().max()
        assert float(residual) < 2e-5, (reg, residual)
        if reg == 0.0:
            assert float(out.grad.norm()) == pytest.approx(t**0.5, rel=1e-5)
    clipped = make_weighter("nash_mtl", names).combine(grads_input([1.0] * t, grads))
    assert float(clipped.grad.norm()) == pytest.approx(1.0, rel=1e-5)


def test_nash_mtl_weights_scale_like_one_over_the_gradients() -> None:
    """Scaling every gradient by s scales the weights by 1/s (a relative ridge) and leaves the
    update unchanged; the old normalised-only solve returned the same weights for every s, off by
    ``sqrt(||K||_F)`` (a factor of about 3e-4 at gradients of 1e-4)."""
    grads = raw_grads("random", 3)
    base = make_weighter("nash_mtl", list("abc"), max_norm=None).combine(
        grads_input([1.0] * 3, grads)
    )
    for s in (1e-4, 1e3):
        w = make_weighter("nash_mtl", list("abc"), max_norm=None)
        for _ in range(2):  # the second step starts from the buffer of raw weights
            out = w.combine(grads_input([1.0] * 3, s * grads))
            torch.testing.assert_close(out.weights * s, base.weights, rtol=1e-5, atol=0)
            torch.testing.assert_close(out.grad, base.grad, rtol=1e-5, atol=1e-7)
    k = (grads @ grads.T).numpy() * 1e-8
    norm = float(np.linalg.norm(k))
    old = nash_weights(k / norm)
    new = make_weighter("nash_mtl", list("abc"), max_norm=None).combine(
        grads_input([1.0] * 3, 1e-4 * grads)).weights.double().numpy()
    np.testing.assert_allclose(old / new, np.full(3, np.sqrt(norm)), rtol=1e-5)


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


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_cagrad_update_is_optimal_for_its_primal_on_raw_inputs(kind: str, t: int) -> None:
    """``max_d min_i g_i . d`` s.t. ``||d - g_0|| <= c ||g_0||``, on raw small-norm, conflicting and
    near-parallel gradients. Our update is ``T d / (1 + c^2)`` (the x T scale of the summed loss
    and the reference's ``rescale=1``); undone, ``d`` is feasible (on the sphere) and its value
    equals the dual objective at the simplex point read back from the weights: a certificate of
    optimality (every dual value bounds every primal value). A random search does no better."""
    c = 0.4
    grads = raw_grads(kind, t)
    out = make_weighter("cagrad", [str(i) for i in range(t)], c=c).combine(
        grads_input([1.0] * t, grads)
    )
    assert out.head_weights is not None and torch.equal(out.head_weights, torch.ones(t))
    d = out.grad.double() * (1 + c * c) / t
    g0 = grads.mean(0)
    rho = c * float(g0.norm())
    assert float((d - g0).norm()) == pytest.approx(rho, rel=1e-5)
    primal = float((grads @ d).min())
    # weights = T (1/T + lambda w) / (1 + c^2): the dual point w, back on the simplex
    lw = out.weights.double() * (1 + c * c) / t - 1.0 / t
    w = lw / lw.sum()
    assert float(w.min()) > -1e-6
    gw = w @ grads
    dual = float(gw @ g0 + rho * gw.norm())
    scale = float((grads.norm(dim=1) ** 2).max())
    assert primal == pytest.approx(dual, abs=1e-6 * scale)
    # random feasible directions in the span of the gradients (other components only cost norm)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(4000, t, generator=gen, dtype=torch.float64) @ grads
    cand = g0 + rho * dirs / dirs.norm(dim=1, keepdim=True)
    assert float((cand @ grads.T).min(dim=1).values.max()) <= primal + 1e-6 * scale
    assert primal >= float((grads @ g0).min()) - 1e-9 * scale  # beats the average gradient


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
