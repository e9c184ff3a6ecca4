"""ExcessMTL: the AdaGrad excess-risk estimate and the exponentiated weight update, step by step
against a numpy transcription of the reference (LibMTL ``ExcessMTL.py``) on raw random,
small-norm (1e-4), conflicting and near-parallel gradients, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters.excess_mtl import ExcessMTLWeighter

from mtlkit.testing import GRAD_KINDS, raw_grads
from mtlkit.weighter import WeighterInput, WeighterSetup


def _make(t: int, d: int, **options: object) -> ExcessMTLWeighter:
    w = ExcessMTLWeighter([f"t{i}" for i in range(t)], ExcessMTLWeighter.Options(**options))
    w.setup(WeighterSetup(feature_dim=4, shared_numel=d, device=torch.device("cpu")))
    return w


def _inp(grads: torch.Tensor, scratch: bool = False) -> WeighterInput:
    return WeighterInput(losses=torch.ones(grads.shape[0]), grads=grads, grads_scratch=scratch)


class _Reference:
    """The reference's ``backward``, transcribed to float64 numpy: ``grad_sum += g^2``,
    ``w_i = g_i (1 / sqrt(grad_sum_i + 1e-7)) @ g_i``; the first call stores ``initial_w``, later
    ones do ``loss_weight *= exp(w / initial_w * step)`` and renormalise to sum T."""

    def __init__(self, t: int, step_size: float = 1e-2, eps: float = 1e-7) -> None:
        self.loss_weight = np.ones(t)
        self.grad_sum: np.ndarray | None = None
        self.initial_w: np.ndarray | None = None
        self.step_size, self.eps, self.t = step_size, eps, t

    def __call__(self, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.grad_sum is None:
            self.grad_sum = np.zeros_like(grads)
        w = np.zeros(self.t)
        for i in range(self.t):
            self.grad_sum[i] += grads[i] ** 2
            h = np.sqrt(self.grad_sum[i] + self.eps)
            w[i] = (grads[i] * (1 / h)) @ grads[i]
        if self.initial_w is None:
            self.initial_w = w
        else:
            self.loss_weight = self.loss_weight * np.exp(w / self.initial_w * self.step_size)
            self.loss_weight = self.loss_weight / self.loss_weight.sum() * self.t
        return self.loss_weight.copy(), self.loss_weight @ grads  # d(sum lw_i L_i) = sum lw_i g_i


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_excess_mtl_matches_the_reference_step_by_step_on_raw_inputs(kind: str, t: int) -> None:
    d = 8
    step_size = 0.5  # larger than the default so the weights move visibly in a few steps
    w = _make(t, d, step_size=step_size)
    ref = _Reference(t, step_size=step_size)
    for step in range(5):
        grads = raw_grads(kind, t, d=d, seed=100 * step + t, dtype=torch.float32)
        if step % 2:  # gradients that change scale between steps move the excess risks
            grads = grads * torch.linspace(0.2, 3.0, t)[:, None]
        out = w.combine(_inp(grads.clone()))
        lw, g = ref(grads.double().numpy())
        np.testing.assert_allclose(out.weights.numpy(), lw, rtol=1e-5)
        scale = float(np.abs(grads.numpy()).max())
        np.testing.assert_allclose(out.grad.numpy(), g, rtol=1e-5, atol=1e-6 * scale)
        assert out.head_weights is None and (out.weights > 0).all()
        assert float(out.weights.sum()) == pytest.approx(t, rel=1e-6)
    np.testing.assert_allclose(w.grad_sq_sum.numpy(), ref.grad_sum, rtol=1e-5)


def test_excess_mtl_first_step_is_equal_weighting_then_the_formula() -> None:
    g1 = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1e-4, 0.0]])  # a large and a tiny gradient
    w = _make(2, 3, step_size=1.0)
    out = w.combine(_inp(g1))
    torch.testing.assert_close(out.weights, torch.ones(2))
    torch.testing.assert_close(out.grad, g1.sum(0))
    # e_i = |g|^2 / sqrt(g^2 + eps) on the first step (eps dominates for the tiny one)
    e0 = torch.tensor([9.0 / (9.0 + 1e-7) ** 0.5, 1e-8 / (1e-8 + 1e-7) ** 0.5])
    torch.testing.assert_close(w.initial_excess, e0, rtol=1e-5, atol=0)
    g2 = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1e-3, 0.0]])  # the tiny task's gradient grows
    out = w.combine(_inp(g2))
    e = torch.tensor([9.0 / (18.0 + 1e-7) ** 0.5, 1e-6 / (1e-8 + 1e-6 + 1e-7) ** 0.5])
    lw = torch.exp(e / e0)
    torch.testing.assert_close(out.weights, 2 * lw / lw.sum(), rtol=1e-5, atol=0)
    assert out.weights[1] > out.weights[0]  # its relative excess risk grew: more weight


def test_excess_mtl_conflicting_gradients_combine_with_positive_weights() -> None:
    """Exactly opposite gradients of unequal norms: the weights stay positive, sum to T, and the
    update is their positive combination (a gradient method, not a projection)."""
    g = torch.tensor([[1.0, 2.0], [-0.5, -1.0]])
    w = _make(2, 2)
    for _ in range(3):
        out = w.combine(_inp(g.clone()))
    assert (out.weights > 0).all()
    torch.testing.assert_close(out.grad, out.weights @ g)


def test_excess_mtl_zero_first_gradient_stays_finite() -> None:
    """A task with no shared gradient at the first step (the reference: 0/0, NaN from then on)
    takes its first positive estimate as reference value: ratio 1 at that step, 0 before."""
    w = _make(2, 2, step_size=1.0)
    zero_first = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    w.combine(_inp(zero_first))
    out = w.combine(_inp(zero_first))
    e_a = 1.0 / (2.0 + 1e-7) ** 0.5 / (1.0 / (1.0 + 1e-7) ** 0.5)
    lw = torch.exp(torch.tensor([e_a, 0.0]))
    torch.testing.assert_close(out.weights, 2 * lw / lw.sum(), rtol=1e-5, atol=0)
    out = w.combine(_inp(torch.tensor([[1.0, 0.0], [0.0, 2.0]])))
    assert torch.isfinite(out.weights).all() and torch.isfinite(out.grad).all()
    assert float(w.initial_excess[1]) == pytest.approx(4.0 / (4.0 + 1e-7) ** 0.5, rel=1e-6)


def test_excess_mtl_huge_ratio_does_not_overflow() -> None:
    w = _make(2, 2, step_size=1.0)
    w.combine(_inp(torch.tensor([[1e-20, 0.0], [1.0, 0.0]])))
    out = w.combine(_inp(torch.tensor([[0.0, 1e3], [1.0, 0.0]])))
    assert torch.isfinite(out.weights).all()
    torch.testing.assert_close(out.weights, torch.tensor([2.0, 0.0]))


def test_excess_mtl_scratch_state_and_needs() -> None:
    grads = raw_grads("random", 3, d=5, dtype=torch.float32)
    a, b = _make(3, 5), _make(3, 5)
    a.combine(_inp(grads.clone()))
    b.combine(_inp(grads.clone()))
    scratch = grads.clone()
    out = a.combine(_inp(scratch, scratch=True))
    assert out.grad.data_ptr() == scratch.data_ptr()
    torch.testing.assert_close(out.grad, b.combine(_inp(grads.clone())).grad)
    fresh = ExcessMTLWeighter(["t0", "t1", "t2"])  # not set up: the accumulator is resized
    fresh.load_state_dict(a.state_dict())
    torch.testing.assert_close(fresh.grad_sq_sum, a.grad_sq_sum)
    needs = ExcessMTLWeighter.needs
    assert needs.grads == "parameters"
    assert not (needs.features or needs.counters or needs.after_step or needs.step_metrics)
    opts = ExcessMTLWeighter.Options()
    assert (opts.step_size, opts.eps) == (1e-2, 1e-7)
