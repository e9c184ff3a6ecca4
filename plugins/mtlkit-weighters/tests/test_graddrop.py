"""GradDrop: sign agreement keeps a coordinate, the mask frequencies follow the purity, and the
update against a direct numpy implementation of the reference formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters.graddrop import GradDropOptions, GradDropWeighter

from mtlkit.testing import GRAD_KINDS, raw_grads
from mtlkit.weighter import WeighterInput


def _make(names: list[str], **options: object) -> GradDropWeighter:
    return GradDropWeighter(list(names), GradDropOptions(**options))  # type: ignore[arg-type]


def _input(grads: torch.Tensor, features: torch.Tensor, step: int) -> WeighterInput:
    t = grads.shape[0]
    return WeighterInput(losses=torch.ones(t), grads=grads, features=features, step=step)


def _numpy_graddrop(grads: np.ndarray, features: np.ndarray, u: np.ndarray,
                    leak: float) -> tuple[np.ndarray, np.ndarray]:
    """LibMTL's formula on explicit arrays ([T, B, F], [B, F], [F]); returns the update and the
    kept shares."""
    s = (grads * np.sign(features)[None]).sum(1)  # [T, F]
    mass = np.abs(s).sum(0)
    p = 0.5 * (1 + np.divide(s.sum(0), mass, out=np.zeros_like(mass), where=mass > 0))
    m = ((p > u)[None] & (s > 0)) | ((p < u)[None] & (s < 0))
    mult = leak + (1 - leak) * m
    update = (grads * mult[:, None, :]).sum(0)
    energy = (grads**2).sum(1)
    total = energy.sum(1)
    share = np.where(total > 0, (mult * energy).sum(1) / np.where(total > 0, total, 1), 1.0)
    return update, share


def test_agreeing_coordinates_are_kept() -> None:
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(3, 4, 6, generator=g, dtype=torch.float64) + 0.1
    features = torch.randn(4, 6, generator=g, dtype=torch.float64)
    sign = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 1.0], dtype=torch.float64)
    # per coordinate every task's signed sum has the same sign: P is 0 or 1
    grads = mag * sign * features.sign()
    w = _make(list("abc"))
    for step in range(5):
        out = w.combine(_input(grads, features, step))
        torch.testing.assert_close(out.grad, grads.sum(0))
        torch.testing.assert_close(out.weights, torch.ones(3, dtype=torch.float64))
        assert torch.equal(out.head_weights, torch.ones(3, dtype=torch.float64))


def test_mask_frequencies_match_the_purity() -> None:
    """Task a pushes +3, task b -1 on every coordinate: P = 0.75; a is kept where U < P (75%),
    b where U > P (25%), never both, never neither."""
    f = 20000
    grads = torch.stack([torch.full((1, f), 3.0), torch.full((1, f), -1.0)])
    features = torch.ones(1, f)
    out = _make(["a", "b"]).combine(_input(grads, features, 7))
    kept_a = out.grad[0] == 3.0
    kept_b = out.grad[0] == -1.0
    assert bool((kept_a ^ kept_b).all())
    assert float(kept_a.float().mean()) == pytest.approx(0.75, abs=0.015)
    # weights: the kept share of each gradient's energy, here the kept fraction
    torch.testing.assert_close(out.weights, torch.stack([kept_a.float().mean(),
                                                          kept_b.float().mean()]))


def test_the_input_sign_flips_the_signed_sums() -> None:
    """Negative features flip the sign that enters the purity (the paper's batch correction)."""
    grads = torch.tensor([[[2.0, 1.0]], [[1.0, 3.0]]])
    w = _make(["a", "b"])
    pos = w.combine(_input(grads.clone(), torch.tensor([[1.0, 1.0]]), 0))
    torch.testing.assert_close(pos.grad, grads.sum(0))  # all positive: pure
    # the signs of the features do not change the gradients' agreement per coordinate
    neg = w.combine(_input(grads.clone(), torch.tensor([[-1.0, 2.0]]), 0))
    torch.testing.assert_close(neg.grad, grads.sum(0))
    # two samples with opposite features: task a's signed sum is 2 - 2 = 0 -> dropped
    g2 = torch.tensor([[[2.0], [2.0]], [[1.0], [-1.0]]])
    out = w.combine(_input(g2.clone(), torch.tensor([[1.0], [-1.0]]), 0))
    torch.testing.assert_close(out.grad, g2[1])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_matches_the_reference_formula(seed: int, leak: float) -> None:
    g = torch.Generator().manual_seed(seed)
    t, b, f = 4, 3, 7
    grads = torch.randn(t, b, f, generator=g, dtype=torch.float64)
    features = torch.randn(b, f, generator=g, dtype=torch.float64)
    w = _make(list("abcd"), leak=leak, seed=seed)
    out = w.combine(_input(grads.clone(), features, 11))
    ref, share = _numpy_graddrop(grads.numpy(), features.numpy(),
                                 w.draw(11, f).double().numpy(), leak)
    np.testing.assert_allclose(out.grad.numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.weights.numpy(), share, rtol=1e-12)


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_raw_inputs(kind: str, t: int) -> None:
    """Raw small-norm, conflicting and near-parallel gradients: the reference formula, weights in
    [0, 1], and a scale-free mask (1e-4-scale gradients give the mask of the unscaled ones)."""
    b, f = 2, 5
    grads = raw_grads(kind, t, d=b * f).view(t, b, f)
    features = torch.randn(b, f, generator=torch.Generator().manual_seed(t),
                           dtype=torch.float64)
    w = _make([str(i) for i in range(t)])
    out = w.combine(_input(grads.clone(), features, 3))
    ref, share = _numpy_graddrop(grads.numpy(), features.numpy(), w.draw(3, f).double().numpy(),
                                 0.0)
    np.testing.assert_allclose(out.grad.numpy(), ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(out.weights.numpy(), share, rtol=1e-12)
    assert float(out.weights.min()) >= 0 and float(out.weights.max()) <= 1
    big = w.combine(_input(grads.clone() * 1e4, features, 3))
    torch.testing.assert_close(big.grad, out.grad * 1e4)
    assert torch.equal(out.head_weights, torch.ones(t, dtype=out.weights.dtype))


def test_leak_one_is_the_plain_sum_and_draws_follow_the_step() -> None:
    g = torch.Generator().manual_seed(3)
    grads = torch.randn(3, 2, 4, generator=g)
    features = torch.randn(2, 4, generator=g)
    out = _make(list("abc"), leak=1.0).combine(_input(grads, features, 0))
    torch.testing.assert_close(out.grad, grads.sum(0))
    w = _make(list("abc"))
    assert isinstance(w, GradDropWeighter)
    assert torch.equal(w.draw(5, 9), w.draw(5, 9))
    assert not torch.equal(w.draw(5, 9), w.draw(6, 9))
    assert not torch.equal(w.draw(5, 9), _make(["a"], seed=1).draw(5, 9))
    with pytest.raises(ValueError, match="step"):
        w.combine(WeighterInput(losses=torch.ones(3), grads=grads, features=features))
