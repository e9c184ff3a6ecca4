"""GLS (geometric mean of the task losses): exact formula, scale invariance, raw tiny losses, and a
numpy transcription of the reference (LibMTL ``GLS.py``: ``prod(L) ** (1/T)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters.gls import GLSWeighter

from mtlkit.weighter import WeighterInput


def _run(values: list[float] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss value, logged weights and d loss / d L_i for raw loss values."""
    losses = torch.tensor(np.asarray(values, dtype=np.float32), requires_grad=True)
    w = GLSWeighter([f"t{i}" for i in range(len(values))])
    out = w.combine(WeighterInput(losses=losses * 1.0))
    assert out.loss is not None and out.head_weights is None and out.grad is None
    out.loss.backward()
    assert losses.grad is not None
    torch.testing.assert_close(w.weights, out.weights)
    return out.loss.detach(), out.weights, losses.grad


def _reference(values: np.ndarray) -> tuple[float, np.ndarray]:
    """The reference's loss ``prod(L)^(1/T)`` and its exact gradient, in float64 numpy."""
    t = len(values)
    loss = float(np.prod(values) ** (1.0 / t))
    return loss, loss / (t * values)  # d/dL_i prod^(1/T) = prod^(1/T) / (T L_i)


@pytest.mark.parametrize("scale", [1.0, 1e-4, 1e-8])
def test_gls_is_the_geometric_mean_and_weights_are_its_gradient(scale: float) -> None:
    values = [2.0 * scale, 0.5 * scale, 3.0 * scale]
    loss, weights, grad = _run(values)
    expected = (2.0 * 0.5 * 3.0) ** (1 / 3) * scale
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(grad, weights, rtol=1e-5, atol=0)
    torch.testing.assert_close(weights, expected / (3 * torch.tensor(values)), rtol=1e-5, atol=0)
    # sum_i w_i L_i = L (the weighted loss is the geometric mean itself)
    assert float((weights * torch.tensor(values)).sum()) == pytest.approx(expected, rel=1e-5)


def test_gls_update_direction_is_invariant_to_each_loss_scale() -> None:
    """``L_1 -> c L_1`` (so ``grad L_1 -> c grad L_1``) scales the whole update by ``c^(1/T)``."""
    base = np.array([0.7, 1.3, 2.2])
    _, w, _ = _run(base)
    for c in (1e-4, 10.0):
        scaled = base.copy()
        scaled[0] *= c
        _, wc, _ = _run(scaled)
        coeff = torch.tensor([c, 1.0, 1.0], dtype=torch.float32)  # grad of c L_1 is c grad L_1
        torch.testing.assert_close(wc * coeff, c ** (1 / 3) * w, rtol=1e-5, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_gls_matches_a_numpy_transcription_of_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = int(rng.integers(2, 6))
    values = rng.uniform(0.05, 4.0, size=t) * 10.0 ** rng.integers(-4, 2, size=t)
    loss, weights, grad = _run(values)
    ref_loss, ref_grad = _reference(values.astype(np.float32).astype(np.float64))
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-5)
    np.testing.assert_allclose(weights.numpy(), ref_grad, rtol=1e-5)


def test_gls_many_tiny_losses_do_not_underflow() -> None:
    """40 losses of 1e-4: their float32 product underflows to 0 (the reference's ``prod`` gives 0
    and NaN gradients), the log-space mean gives exactly 1e-4 and weights 1/T."""
    loss, weights, grad = _run([1e-4] * 40)
    assert float(torch.tensor([1e-4] * 40).prod()) == 0.0
    assert float(loss) == pytest.approx(1e-4, rel=1e-5)
    torch.testing.assert_close(weights, torch.full((40,), 1 / 40), rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, weights, rtol=1e-5, atol=0)


def test_gls_zero_loss_is_finite_and_one_task_is_plain_training() -> None:
    loss, weights, grad = _run([0.0, 1.0])
    assert torch.isfinite(loss) and torch.isfinite(weights).all() and torch.isfinite(grad).all()
    assert float(weights[0]) == 0.0 and (weights >= 0).all()
    loss, weights, grad = _run([0.37])
    assert float(loss) == pytest.approx(0.37, rel=1e-6)
    torch.testing.assert_close(weights, torch.ones(1))
    torch.testing.assert_close(grad, torch.ones(1))
