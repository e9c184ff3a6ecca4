"""SDMGrad: LibMTL's update re-implemented in numpy (single-sample: the three samples coincide)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters import sdmgrad
from mtlkit_weighters.sdmgrad import SDMGradWeighter, sdmgrad_inner

from mtlkit.testing import GRAD_KINDS, raw_grads

from .conftest import grads_input


def _make(names: list[str], **options: object) -> SDMGradWeighter:
    return SDMGradWeighter(names, SDMGradWeighter.Options(**options))


def _proj(v: np.ndarray, s: float = 1.0) -> np.ndarray:
    """LibMTL's ``euclidean_proj_simplex``, transcribed."""
    n = v.shape[0]
    if v.sum() == s and np.all(v >= 0):
        return v
    u = np.sort(v)[::-1]
    cssv = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, n + 1) > (cssv - s))[0][-1]
    theta = float(cssv[rho] - s) / (rho + 1)
    return (v - theta).clip(min=0)


def _reference(zeta, xi1, xi2, w, lamda=0.3, niter=20):
    """LibMTL's ``SDMGrad.backward`` in numpy: torch SGD(lr=5, momentum=0.5) made explicit."""
    gg = xi1 @ xi2.T
    diag = np.where(np.diag(gg) < 0, 0.0, np.diag(gg))
    scale = np.mean(np.sqrt(diag))
    gg = gg / (scale**2 + 1e-8)
    gmean = gg.mean(axis=1)
    buf = None
    for _ in range(niter):
        grad = gg @ w + lamda * gmean
        buf = grad.copy() if buf is None else 0.5 * buf + grad  # torch SGD, dampening 0
        w = _proj(w - 5 * buf)
    g0 = zeta.mean(axis=0)
    gw = (zeta * w[:, None]).sum(0)
    return w, (gw + lamda * g0) / (1 + lamda)


@pytest.mark.parametrize("lamda", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("seed", range(4))
def test_inner_solver_is_the_reference_in_float64(seed: int, lamda: float) -> None:
    rng = np.random.default_rng(seed)
    t = 2 + seed % 3
    g = rng.normal(size=(t, 6))
    w = np.full(t, 1.0 / t)
    for _ in range(3):
        ref, _ = _reference(g, g, g, w, lamda=lamda)
        w = sdmgrad_inner(g @ g.T, w, lamda, 20)
        np.testing.assert_allclose(w, ref, rtol=1e-12, atol=1e-13)
        g = rng.normal(size=(t, 6))


@pytest.mark.parametrize("lamda", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("seed", range(3))
def test_matches_the_reference_with_one_sample(seed: int, lamda: float) -> None:
    """Each step against the reference started from the weighter's own (float32) state: the
    reference's inner steps (learning rate 5) do not contract, so rounding is amplified."""
    rng = np.random.default_rng(seed)
    t, d = 2 + seed % 3, 6
    w = _make(list("abcd")[:t], lamda=lamda, sum_to="one")
    wt = _make(list("abcd")[:t], lamda=lamda)
    for _ in range(4):
        g = rng.normal(size=(t, d)) * 2
        state, upd = _reference(g, g, g, w.w.double().numpy(), lamda=lamda)
        wt.w.copy_(w.w)
        out = w.combine(grads_input([1.0] * t, torch.tensor(g)))
        np.testing.assert_allclose(w.w.numpy(), state, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.grad.numpy(), upd, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.weights.numpy(), (state + lamda / t) / (1 + lamda),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.head_weights, torch.ones(t))
        tasks = wt.combine(grads_input([1.0] * t, torch.tensor(g)))
        torch.testing.assert_close(tasks.weights, t * out.weights)


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_weights_on_the_simplex_on_raw_inputs(kind: str, t: int) -> None:
    w = _make([str(i) for i in range(t)], sum_to="one")
    for step in range(3):
        grads = raw_grads(kind, t, d=8, seed=step)
        out = w.combine(grads_input([1.0] * t, grads))
        assert float(w.w.min()) >= 0 and float(w.w.sum()) == pytest.approx(1.0, abs=1e-6)
        assert float(out.weights.sum()) == pytest.approx(1.0, abs=1e-6)
        assert float(out.weights.min()) >= 0.3 / t / 1.3 - 1e-7  # the pull toward the mean
        torch.testing.assert_close(out.grad.double(), out.weights.double() @ grads,
                                   rtol=1e-5, atol=1e-12)


def test_large_lamda_tends_to_the_mean_gradient() -> None:
    grads = torch.tensor([[1.0, 0.0], [-0.5, 2.0]])
    out = _make(["a", "b"], lamda=1e6, sum_to="one").combine(grads_input([1, 1], grads))
    torch.testing.assert_close(out.weights, torch.tensor([0.5, 0.5]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("cos", "swing"), [(0.0, 1.0), (0.6, 0.0)])
def test_one_float32_ulp_decides_the_weights_below_cosine_0_4(cos: float, swing: float) -> None:
    """Two equal-norm gradients whose norms differ by one float32 ulp: with cosine 0 the inner
    loop (float64) runs from the symmetric point to a vertex, a change of 1.0 in w (not the
    ~1e-3 the docstring used to claim); above cosine 0.4 it contracts and stays at [0.5, 0.5]."""
    start = np.full(2, 0.5)
    exact = sdmgrad_inner(np.array([[1.0, cos], [cos, 1.0]]), start, 0.3, 20)
    ulp = sdmgrad_inner(np.array([[1.0, cos], [cos, 1.0 + 2.0**-23]]), start, 0.3, 20)
    np.testing.assert_array_equal(exact, start)
    assert abs(ulp[0] - ulp[1]) == pytest.approx(swing, abs=1e-5)
    doc = sdmgrad.__doc__ or ""
    assert "~1e-3" not in doc and "an effect of 1.0 on ``w``" in doc
