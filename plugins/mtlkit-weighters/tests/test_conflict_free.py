"""ConFIG: equal, positive projections on every unit gradient, and the Gram-space computation
against a direct numpy implementation of the reference (pseudo-inverse, two-gradient form, the
length models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters.conflict_free import ConFIGOptions, ConFIGWeighter

from mtlkit.testing import GRAD_KINDS, raw_grads

from .conftest import grads_input


def _make(names: list[str], **options: object) -> ConFIGWeighter:
    return ConFIGWeighter(list(names), ConFIGOptions(**options))  # type: ignore[arg-type]

LENGTHS = ["projection", "min", "max", "harmonic", "arithmetic", "geometric"]


def _numpy_config(grads: np.ndarray, length: str = "projection") -> np.ndarray:
    """The reference's ConFIG_update: ``d = pinv(U) 1``, then its length model."""
    norms = np.linalg.norm(grads, axis=1)
    units = grads / norms[:, None]
    d = np.linalg.pinv(units) @ np.ones(len(grads))
    unit_d = d / np.linalg.norm(d)
    if length == "projection":
        size = (grads @ unit_d).sum()
    else:
        tau = {"min": norms.min(), "max": norms.max(),
               "harmonic": len(norms) / (1 / norms).sum(), "arithmetic": norms.mean(),
               "geometric": np.prod(norms) ** (1 / len(norms))}[length]
        size = tau * (units @ unit_d).sum()
    return size * unit_d


def _numpy_config_double(g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
    """The reference's two-gradient form: the unit orthogonal components, then projections."""
    n1, n2 = np.linalg.norm(g1), np.linalg.norm(g2)
    u1, u2 = g1 / n1, g2 / n2
    cos = u1 @ u2
    or2, or1 = g1 - n1 * cos * u2, g2 - n2 * cos * u1
    o1, o2 = or1 / np.linalg.norm(or1), or2 / np.linalg.norm(or2)
    d = (o2 @ u1) / (o1 @ u2) * o1 + o2
    unit_d = d / np.linalg.norm(d)
    return (g1 @ unit_d + g2 @ unit_d) * unit_d


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_equal_positive_projections_on_raw_inputs(kind: str, t: int) -> None:
    """Raw small-norm, conflicting and near-parallel gradients: the update's projection on every
    unit gradient is the same and positive, its length is the sum of the raw gradients'
    projections, it matches the reference's pseudo-inverse, and the heads keep their own
    gradients."""
    grads = raw_grads(kind, t)
    out = _make([str(i) for i in range(t)]).combine(
        grads_input([1.0] * t, grads)
    )
    upd = out.grad.double()
    units = grads / grads.norm(dim=1, keepdim=True)
    proj = units @ upd
    assert float(proj.min()) > 0
    torch.testing.assert_close(proj, proj.mean().expand(t), rtol=1e-5, atol=0)
    torch.testing.assert_close(upd.norm(), (grads @ (upd / upd.norm())).sum(), rtol=1e-5, atol=0)
    ref = _numpy_config(grads.numpy())
    np.testing.assert_allclose(upd.numpy(), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    assert torch.equal(out.head_weights, torch.ones(t))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("length", LENGTHS)
def test_matches_the_reference_on_random_cases(seed: int, length: str) -> None:
    g = torch.Generator().manual_seed(seed)
    for t in (2, 3, 4):
        grads = torch.randn(t, 9, generator=g, dtype=torch.float64)
        grads = grads * torch.rand(t, 1, generator=g, dtype=torch.float64).mul(5).add(0.1)
        out = _make(list("abcd")[:t], length=length).combine(
            grads_input([1.0] * t, grads)
        )
        ref = _numpy_config(grads.numpy(), length)
        np.testing.assert_allclose(out.grad.double().numpy(), ref, rtol=2e-5, atol=1e-6)
        if t == 2 and length == "projection":
            double = _numpy_config_double(grads[0].numpy(), grads[1].numpy())
            np.testing.assert_allclose(out.grad.double().numpy(), double, rtol=2e-5, atol=1e-6)


def test_degenerate_inputs() -> None:
    # opposite gradients: no direction improves both, the update is zero
    out = _make(["a", "b"]).combine(
        grads_input([1, 1], torch.tensor([[1.0, 2.0], [-2.0, -4.0]]))
    )
    torch.testing.assert_close(out.grad, torch.zeros(2))
    # a zero gradient is left out: the update is ConFIG of the others
    grads = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-0.5, 2.0, 0.0]])
    out = _make(list("abc")).combine(grads_input([1, 1, 1], grads))
    ref = _make(list("ac")).combine(grads_input([1, 1], grads[[0, 2]]))
    torch.testing.assert_close(out.grad, ref.grad)
    assert float(out.weights[1]) == 0
    # parallel gradients: the common direction, length the sum of the norms
    grads = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    out = _make(list("abc")).combine(grads_input([1, 1, 1], grads))
    torch.testing.assert_close(out.grad, grads.sum(0))
