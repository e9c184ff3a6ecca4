"""UPGrad: the dual-cone property on raw inputs and TorchJD's formula solved by brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from mtlkit_weighters.upgrad import (
    UPGradWeighter,
    dual_cone_weights,
    nonneg_quadratic,
    upgrad_weights,
)

from mtlkit.testing import GRAD_KINDS, raw_grads

from .conftest import grads_input


def make_weighter(name: str, names: list[str], **options: object) -> UPGradWeighter:
    assert name == "upgrad"
    return UPGradWeighter(names, UPGradWeighter.Options(**options))


def _brute_dual_cone(k: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``argmin_{v >= u} v^T K v`` by enumerating the sets of active constraints (KKT check)."""
    t = k.shape[0]
    best = None
    for free in itertools.product([False, True], repeat=t):
        f = np.array(free)
        v = u.astype(np.float64).copy()
        if f.any():
            # free coordinates: stationary, (K v)_f = 0 with v fixed at u elsewhere
            kff = k[np.ix_(f, f)]
            v[f] = np.linalg.solve(kff, -k[np.ix_(f, ~f)] @ u[~f])
        mu = k @ v
        if np.all(v >= u - 1e-10) and np.all(mu[~f] >= -1e-10) and np.allclose(mu[f], 0,
                                                                                 atol=1e-10):
            val = float(v @ k @ v)
            if best is None or val < best[0]:
                best = (val, v)
    assert best is not None
    return best[1]


def _reference_weights(grads: np.ndarray, pref: np.ndarray, norm_eps: float = 1e-4,
                       reg_eps: float = 1e-4) -> np.ndarray:
    """TorchJD's / LibMTL's UPGrad weighting, re-written in numpy with a brute-force QP."""
    k = grads @ grads.T
    tr = np.trace(k)
    g = np.zeros_like(k) if tr < norm_eps else k / tr
    g = g + reg_eps * np.eye(k.shape[0])
    return np.sum([_brute_dual_cone(g, np.diag(pref)[i]) for i in range(k.shape[0])], axis=0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("t", [2, 3, 4])
def test_matches_the_reference_formula_solved_by_brute_force(seed: int, t: int) -> None:
    grads = torch.randn(t, 5, generator=torch.Generator().manual_seed(100 * t + seed)).double()
    w = make_weighter("upgrad", list("abcd")[:t], sum_to="one", norm_eps=1e-4).combine(
        grads_input([1.0] * t, grads)
    )
    ref = _reference_weights(grads.numpy(), np.full(t, 1.0 / t))
    np.testing.assert_allclose(w.weights.double().numpy(), ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(w.grad, w.weights.double() @ grads, rtol=1e-5, atol=1e-7)
    # default preference u = 1: exactly T times the mean's update
    tasks = make_weighter("upgrad", list("abcd")[:t]).combine(grads_input([1.0] * t, grads))
    np.testing.assert_allclose(tasks.weights.double().numpy(), t * ref, rtol=1e-5, atol=1e-7)


def test_torchjd_docstring_example() -> None:
    """TorchJD's documented example: UPGrad()([[-4, 1, 1], [6, 1, 1]]) = [0.29, 1.90, 1.90]."""
    j = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    out = make_weighter("upgrad", ["a", "b"], sum_to="one").combine(grads_input([1, 1], j))
    torch.testing.assert_close(out.grad, torch.tensor([0.2929, 1.9004, 1.9004]), atol=1e-4,
                               rtol=0)


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_update_does_not_conflict_with_any_task_on_raw_inputs(kind: str, t: int) -> None:
    grads = raw_grads(kind, t, d=8)
    for reg in (1e-4, 0.0):
        out = make_weighter("upgrad", [str(i) for i in range(t)], reg_eps=reg).combine(
            grads_input([1.0] * t, grads)
        )
        w = out.weights.double()
        assert float(w.min()) >= 1.0 - 1e-6  # v >= u = 1
        d = w @ grads
        dots = grads @ d
        tr = float(grads.pow(2).sum())
        # KKT of min v^T (K/tr + reg I) v, v >= u: g_j . d >= -reg tr v_j (exactly >= 0 at reg 0)
        slack = reg * tr * w + 1e-5 * tr * float(w.abs().max())
        assert bool((dots >= -slack).all()), (kind, reg, dots, slack)
        assert torch.allclose(out.grad.double(), d, rtol=1e-5, atol=1e-12 * float(d.norm()) + 0)


def test_small_gradients_are_still_projected_by_default() -> None:
    """The reference's absolute norm_eps would return the plain mean for 1e-4-sized gradients."""
    grads = 1e-4 * torch.tensor([[1.0, 0.0], [-0.9, 0.1]])
    own = make_weighter("upgrad", ["a", "b"], sum_to="one").combine(grads_input([1, 1], grads))
    ref = make_weighter("upgrad", ["a", "b"], sum_to="one", norm_eps=1e-4).combine(
        grads_input([1, 1], grads)
    )
    torch.testing.assert_close(ref.weights, torch.tensor([0.5, 0.5]))
    assert float((grads @ own.grad).min()) > 0
    assert float((grads @ ref.grad).min()) < 0  # the mean conflicts


def test_non_conflicting_gradients_are_equal_weighting_and_heads_get_ones() -> None:
    grads = torch.tensor([[1.0, 0.0, 0.2], [0.5, 1.0, 0.0], [0.1, 0.2, 1.0]])
    out = make_weighter("upgrad", list("abc"), reg_eps=0.0).combine(grads_input([1] * 3, grads))
    torch.testing.assert_close(out.weights, torch.ones(3))
    torch.testing.assert_close(out.head_weights, torch.ones(3))


@pytest.mark.parametrize("seed", range(10))
def test_active_set_solver_against_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = int(rng.integers(2, 6))
    a = rng.normal(size=(t, t + int(rng.integers(0, 3))))
    k = a @ a.T + 1e-3 * np.eye(t)
    u = np.abs(rng.normal(size=t)) * (rng.random(t) < 0.6)
    np.testing.assert_allclose(dual_cone_weights(k, u), _brute_dual_cone(k, u), rtol=1e-8,
                               atol=1e-10)
    c = rng.normal(size=t)
    s = nonneg_quadratic(k, c)
    r = c - k @ s
    assert np.all(s >= 0) and np.all(r <= 1e-9) and abs(float(s @ r)) <= 1e-9


def test_zero_gradients_give_the_preference() -> None:
    np.testing.assert_allclose(upgrad_weights(np.zeros((3, 3)), np.ones(3)), np.ones(3))
