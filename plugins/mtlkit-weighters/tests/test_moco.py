"""MoCo: LibMTL's update re-implemented in numpy over several steps, tracking and the simplex."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters._solvers import project_simplex
from mtlkit_weighters.moco import MoCoWeighter, project_simplex_torch

from mtlkit.testing import GRAD_KINDS, raw_grads
from mtlkit.weighter import WeighterSetup

from .conftest import grads_input


def _make(names: list[str], d: int, **options: object) -> MoCoWeighter:
    w = MoCoWeighter(names, MoCoWeighter.Options(**options))
    w.setup(WeighterSetup(feature_dim=4, shared_numel=d, device=torch.device("cpu")))
    return w


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _reference(grads: list[np.ndarray], losses: list[np.ndarray], beta=0.5, beta_sigma=0.5,
               gamma=0.1, gamma_sigma=0.5, rho=0.0, simplex=False):
    """LibMTL's MoCo.backward, step by step (y = 0, lambda = 1/T at the start)."""
    t, d = grads[0].shape
    y = np.zeros((t, d))
    lam = np.full(t, 1.0 / t)
    out = []
    for step, (g, loss) in enumerate(zip(grads, losses), start=1):
        h = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8) * loss[:, None]
        y = y - beta / step**beta_sigma * (y - h)
        moved = lam - gamma / step**gamma_sigma * (y @ y.T + rho * np.eye(t)) @ lam
        lam = project_simplex(moved) if simplex else _softmax(moved)
        out.append((lam.copy(), y.T @ lam, y.copy()))
    return out


@pytest.mark.parametrize("simplex", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_matches_the_reference_over_several_steps(seed: int, simplex: bool) -> None:
    rng = np.random.default_rng(seed)
    t, d = 3, 7
    grads = [rng.normal(size=(t, d)) * 3 for _ in range(5)]
    losses = [rng.uniform(0.2, 2.0, size=t) for _ in range(5)]
    opts = dict(gamma=0.7, rho=0.1, projection="simplex" if simplex else "softmax")
    ref = _reference(grads, losses, gamma=0.7, rho=0.1, simplex=simplex)
    w = _make(list("abc"), d, sum_to="one", **opts)
    wt = _make(list("abc"), d, **opts)
    for g, loss, (lam, upd, y) in zip(grads, losses, ref):
        out = w.combine(grads_input(loss.tolist(), torch.tensor(g, dtype=torch.float32)))
        np.testing.assert_allclose(out.weights.numpy(), lam, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.grad.numpy(), upd, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(w.y.numpy(), y, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.head_weights, torch.ones(3))
        tasks = wt.combine(grads_input(loss.tolist(), torch.tensor(g, dtype=torch.float32)))
        torch.testing.assert_close(tasks.weights, 3 * out.weights)
        torch.testing.assert_close(tasks.grad, 3 * out.grad, rtol=1e-5, atol=1e-5)


def test_tracking_is_the_decaying_moving_average() -> None:
    g1 = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    g2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    w = _make(["a", "b"], 2, beta=0.5, beta_sigma=1.0)
    w.combine(grads_input([2.0, 1.0], g1.clone()))
    # step 1: beta_1 = 0.5, y = 0.5 h, h_i = L_i g_i / ||g_i||
    h1 = torch.tensor([[1.2, 1.6], [0.0, 1.0]])
    torch.testing.assert_close(w.y, 0.5 * h1, rtol=1e-6, atol=1e-6)
    w.combine(grads_input([1.0, 3.0], g2.clone()))
    h2 = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    torch.testing.assert_close(w.y, 0.75 * (0.5 * h1) + 0.25 * h2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("projection", ["softmax", "simplex"])
@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_lambda_stays_on_the_simplex_on_raw_inputs(kind: str, t: int, projection: str) -> None:
    w = _make([str(i) for i in range(t)], 8, sum_to="one", projection=projection, gamma=5.0)
    for step in range(4):
        grads = raw_grads(kind, t, d=8, seed=step)
        out = w.combine(grads_input([1.0] * t, grads.float()))
        lam = out.weights.double()
        assert float(lam.min()) >= 0 and float(lam.sum()) == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(out.grad.double(), lam @ w.y.double(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(w.lambd, out.weights)


@pytest.mark.parametrize("seed", range(5))
def test_torch_simplex_projection_matches_numpy(seed: int) -> None:
    v = np.random.default_rng(seed).normal(size=5) * 3
    np.testing.assert_allclose(project_simplex_torch(torch.tensor(v)).numpy(),
                               project_simplex(v), atol=1e-12)


def test_state_resizes_on_load() -> None:
    a = _make(["a", "b"], 6)
    a.combine(grads_input([1.0, 1.0], torch.randn(2, 6)))
    b = MoCoWeighter(["a", "b"])
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.y, a.y)
