"""MoDo: LibMTL's update re-implemented in numpy (single-sample: the three samples coincide)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters.modo import MoDoWeighter

from mtlkit.testing import GRAD_KINDS, raw_grads

from .conftest import grads_input


def _make(names: list[str], **options: object) -> MoDoWeighter:
    return MoDoWeighter(names, MoDoWeighter.Options(**options))


def _proj_libmtl(y: np.ndarray) -> np.ndarray:
    """LibMTL's ``MoDo._projection2simplex``, transcribed (a different algorithm than ours)."""
    m = len(y)
    s = np.sort(y)[::-1]
    tmpsum = 0.0
    tmax_f = (np.sum(y) - 1.0) / m
    for i in range(m - 1):
        tmpsum += s[i]
        tmax = (tmpsum - 1) / (i + 1.0)
        if tmax > s[i + 1]:
            tmax_f = tmax
            break
    return np.maximum(y - tmax_f, 0.0)


def _reference(g1, g2, g3, lam, gamma=1e-3, rho=0.1):
    lam = _proj_libmtl(lam - gamma * (g1 @ (g2.T @ lam) + rho * lam))
    return lam, g3.T @ lam


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_reference_with_one_sample(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t, d = 2 + seed % 3, 6
    w = _make(list("abcd")[:t], gamma=0.05, rho=0.1, sum_to="one")
    wt = _make(list("abcd")[:t], gamma=0.05, rho=0.1)
    lam = np.full(t, 1.0 / t)
    for _ in range(5):
        g = rng.normal(size=(t, d)) * 2
        lam, upd = _reference(g, g, g, lam, gamma=0.05, rho=0.1)
        out = w.combine(grads_input([1.0] * t, torch.tensor(g, dtype=torch.float32)))
        np.testing.assert_allclose(out.weights.numpy(), lam, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.grad.numpy(), upd, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.head_weights, torch.ones(t))
        tasks = wt.combine(grads_input([1.0] * t, torch.tensor(g, dtype=torch.float32)))
        torch.testing.assert_close(tasks.weights, t * out.weights)


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_lambda_on_the_simplex_descends_the_min_norm_objective(kind: str, t: int) -> None:
    """Projected gradient on lambda^T K lambda / 2 (rho = 0) with a step under 1 / L: lambda stays
    on the simplex and the objective never increases (the single-sample lambda step)."""
    grads = raw_grads(kind, t, d=8)
    k = grads @ grads.T
    gamma = 0.5 / float(torch.linalg.eigvalsh(k).max())
    w = _make([str(i) for i in range(t)], gamma=gamma, rho=0.0, sum_to="one")
    prev = float(k.sum()) / t**2
    for _ in range(5):
        out = w.combine(grads_input([1.0] * t, grads))
        lam = out.weights.double()
        assert float(lam.min()) >= 0 and float(lam.sum()) == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(out.grad.double(), lam @ grads, rtol=1e-5, atol=1e-12)
        now = float(lam @ k @ lam)
        assert now <= prev * (1 + 1e-5)
        prev = now
