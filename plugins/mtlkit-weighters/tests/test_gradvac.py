"""GradVac: after an adjustment the pair's cosine reaches its target, the EMA rule, and the Gram
space algorithm against a direct numpy implementation of LibMTL's loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters.gradvac import GradVacOptions, GradVacWeighter, gradvac_step

from mtlkit.testing import GRAD_KINDS, raw_grads

from .conftest import grads_input, make_weighter


def _make(names: list[str], **options: object) -> GradVacWeighter:
    return GradVacWeighter(list(names), GradVacOptions(**options))  # type: ignore[arg-type]


def _numpy_gradvac(grads: np.ndarray, order: np.ndarray, target: np.ndarray, beta: float,
                   ema: str = "on_adjust") -> tuple[np.ndarray, np.ndarray]:
    """LibMTL's GradVac loop (whole model) on explicit vectors, without its 1e-8 guards."""
    target = target.copy()
    out = grads.copy()
    for i in range(grads.shape[0]):
        for j in order[i]:
            gi, gj = out[i], grads[j]
            phi = gi @ gj / (np.linalg.norm(gi) * np.linalg.norm(gj))
            tgt = target[i, j]
            if phi < tgt:
                a = (np.linalg.norm(gi) * (tgt * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - tgt**2))
                     / (np.linalg.norm(gj) * np.sqrt(1 - tgt**2)))
                out[i] = gi + a * gj
            if phi < tgt or ema == "always":
                target[i, j] = (1 - beta) * tgt + beta * phi
    return out.sum(0), target


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("t", [2, 3, 5])
@pytest.mark.parametrize("kind", GRAD_KINDS)
@pytest.mark.parametrize("level", [0.0, 0.5])
def test_cosine_reaches_the_target_on_raw_inputs(kind: str, t: int, level: float) -> None:
    """Raw small-norm, conflicting and near-parallel gradients: when a pair's cosine is below its
    target, after the adjustment it equals the target (checked on the last pair each task
    visits, whose adjusted gradient is final), and the target moves halfway (beta 0.5); with
    ``ema: on_adjust`` an unadjusted pair keeps its target."""
    grads = raw_grads(kind, t)
    k = grads @ grads.T
    w = _make([str(i) for i in range(t)], ema="on_adjust")
    order = w.orders(4)
    target = torch.full((t, t), level, dtype=torch.float64)
    coef, new_target = gradvac_step(k, order, target, 0.5, "on_adjust")
    adjusted = coef @ grads
    last = order[:, -1]
    before_last = torch.eye(t, dtype=torch.float64)  # g_i' before its last visit
    if t > 2:
        c_prev, _ = gradvac_step(k, order[:, :-1], target, 0.5, "on_adjust")
        before_last = c_prev
    for i in range(t):
        j = int(last[i])
        phi = _cos(before_last[i] @ grads, grads[j])
        if phi < level:
            assert _cos(adjusted[i], grads[j]) == pytest.approx(level, abs=1e-9)
            assert float(new_target[i, j]) == pytest.approx(0.5 * level + 0.5 * phi, abs=1e-12)
        else:
            torch.testing.assert_close(adjusted[i], before_last[i] @ grads)
            assert float(new_target[i, j]) == level
    ref, ref_target = _numpy_gradvac(grads.numpy(), order.numpy(), target.numpy(), 0.5)
    scale = float(grads.norm(dim=1).max())
    np.testing.assert_allclose(coef.sum(0) @ grads, ref, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(new_target.numpy(), ref_target, rtol=0, atol=1e-12)
    w.target.fill_(level)
    out = w.combine(grads_input([1.0] * t, grads, step=4))
    np.testing.assert_allclose(out.grad.double().numpy(), ref, rtol=1e-5, atol=1e-6 * scale)
    assert torch.equal(out.head_weights, torch.ones(t))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ema", ["on_adjust", "always"])
def test_consecutive_steps_match_the_direct_loop(seed: int, ema: str) -> None:
    """Five steps of the weighter (targets carried in its buffer) against the numpy loop."""
    t = 4
    g = torch.Generator().manual_seed(seed)
    w = _make(list("abcd"), beta=0.3, ema=ema, seed=seed)
    target = np.zeros((t, t))
    for step in range(5):
        grads = torch.randn(t, 7, generator=g, dtype=torch.float64)
        ref, target = _numpy_gradvac(grads.numpy(), w.orders(step).numpy(), target, 0.3, ema)
        out = w.combine(grads_input([1.0] * t, grads, step=step))
        np.testing.assert_allclose(out.grad.double().numpy(), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.target.double().numpy(), target, rtol=0, atol=1e-6)
    if ema == "on_adjust":
        assert float(w.target.max()) <= 0.0  # the targets start at 0 and never rise


def _two_steps(**options: object) -> torch.Tensor:
    """The step-1 update after g = [(1, 0), (0.5, 0.866)] at step 0, [(1, 0), (0.1, 0.995)]."""
    w = _make(["a", "b"], **options)
    w.combine(grads_input([1, 1], torch.tensor([[1.0, 0.0], [0.5, 0.866]]), step=0))
    return w.combine(grads_input([1, 1], torch.tensor([[1.0, 0.0], [0.1, 0.995]]), step=1)).grad


def test_default_ema_updates_the_target_at_every_visit() -> None:
    """The paper, LibMTL's current code and torchjd move the target at every visit: step 0's
    cosine 0.5 raises it to 0.25, so step 1's pair (cosine 0.1) is pulled to 0.25."""
    assert GradVacOptions().ema == "always"
    torch.testing.assert_close(_two_steps(), torch.tensor([1.2726, 1.1511]), rtol=0, atol=1e-4)


def test_on_adjust_is_libmtl_1_1_5() -> None:
    """LibMTL 1.1.5 moves a target only when its pair is adjusted: it stays 0, so step 1 (both
    cosines 0.1 > 0) is left alone."""
    torch.testing.assert_close(_two_steps(ema="on_adjust"), torch.tensor([1.1, 0.995]))


def test_first_two_task_step_is_pcgrad() -> None:
    """Target 0: the adjustment is exactly PCGrad's projection (a = -g_i.g_j / ||g_j||^2)."""
    for kind in GRAD_KINDS:
        grads = raw_grads(kind, 2)
        a = _make(["a", "b"]).combine(grads_input([1, 1], grads, step=0))
        b = make_weighter("pcgrad", ["a", "b"]).combine(grads_input([1, 1], grads, step=0))
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5,
                                   atol=1e-7 * float(grads.norm(dim=1).max()))


def test_orders_zero_gradients_and_state() -> None:
    w = _make(list("abcde"))
    assert isinstance(w, GradVacWeighter)
    assert torch.equal(w.orders(7), w.orders(7))
    assert any(not torch.equal(w.orders(0), w.orders(s)) for s in range(1, 5))
    for row, i in zip(w.orders(3).tolist(), range(5)):
        assert sorted(row) == [j for j in range(5) if j != i]
    w2 = _make(["a", "b", "c"])
    grads = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.5]])
    out = w2.combine(grads_input([1, 1, 1], grads, step=1))
    assert torch.isfinite(out.grad).all()
    assert float(w2.target[:, 1].abs().sum()) == 0 and float(w2.target[1].abs().sum()) == 0
    assert "target" in w2.state_dict()
