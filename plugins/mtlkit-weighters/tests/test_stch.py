"""STCH (smooth Tchebycheff scalarisation): the warm-up on log losses and the nadir estimate, the
exact smoothed-max formula on raw and tiny losses, the limits in ``mu``, a numpy transcription of
the reference (LibMTL ``STCH.py``), and the conformance kit past the warm-up (the shared kit only
runs the default ``warmup_epoch = 4``, which its short runs never leave)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_weighters.stch import STCHWeighter

from mtlkit.testing import check_weighter
from mtlkit.weighter import WeighterInput

EPS = 1e-20


def _make(t: int, **options: object) -> STCHWeighter:
    return STCHWeighter([f"t{i}" for i in range(t)], STCHWeighter.Options(**options))


def _step(w: STCHWeighter, values, epoch: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Loss value, logged weights and d loss / d L_i for raw loss values at ``epoch``."""
    losses = torch.tensor(np.asarray(values, dtype=np.float32), requires_grad=True)
    out = w.combine(WeighterInput(losses=losses * 1.0, step=0, epoch=epoch))
    assert out.loss is not None and out.grad is None and out.head_weights is None
    out.loss.backward()
    assert losses.grad is not None
    torch.testing.assert_close(w.weights, out.weights)
    return float(out.loss.detach()), out.weights, losses.grad


def _reference_loss(values: np.ndarray, nadir: np.ndarray, mu: float) -> float:
    """The reference's value: ``f = log(L / n + 1e-20)``, the detached max subtracted inside the
    exponent and not added back, ``mu log sum exp((f - max f) / mu) * T`` (float64 numpy)."""
    f = np.log(values / nadir + EPS)
    return float(mu * np.log(np.sum(np.exp((f - f.max()) / mu))) * len(values))


def _reference_grad(values: np.ndarray, nadir: np.ndarray, mu: float) -> np.ndarray:
    """Its exact gradient w.r.t. the losses: ``T softmax(f / mu)_i / (n_i (L_i / n_i + eps))``."""
    f = np.log(values / nadir + EPS)
    p = np.exp((f - f.max()) / mu)
    p /= p.sum()
    return len(values) * p / (nadir * (values / nadir + EPS))


@pytest.mark.parametrize("scale", [1.0, 1e-4, 1e-8])
def test_stch_warmup_trains_on_log_losses_and_averages_the_nadir_epoch(scale: float) -> None:
    w = _make(2, warmup_epoch=1)
    first = np.array([2.0, 0.5]) * scale
    loss, weights, grad = _step(w, first, epoch=0)
    assert loss == pytest.approx(float(np.log(first + EPS).sum()), rel=1e-5, abs=1e-5)
    torch.testing.assert_close(grad, torch.tensor(1 / first, dtype=torch.float32), rtol=1e-5,
                               atol=0)
    torch.testing.assert_close(weights, grad, rtol=1e-6, atol=0)
    assert float(w.loss_count) == 0  # epoch 0 < warmup_epoch: nothing collected
    rows = [np.array([4.0, 1.0]) * scale, np.array([2.0, 3.0]) * scale]
    for row in rows:
        _step(w, row, epoch=1)
    assert float(w.loss_count) == 2 and not bool(w.has_nadir)
    _step(w, np.array([1.0, 1.0]) * scale, epoch=2)
    assert bool(w.has_nadir)
    torch.testing.assert_close(w.nadir, torch.tensor([3.0, 2.0]) * scale, rtol=1e-6, atol=0)
    _step(w, np.array([0.1, 9.0]) * scale, epoch=3)  # the nadir stays fixed
    torch.testing.assert_close(w.nadir, torch.tensor([3.0, 2.0]) * scale, rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_stch_matches_a_numpy_transcription_of_the_reference(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    t = int(rng.integers(2, 6))
    mu = float(rng.choice([0.1, 1.0, 3.0]))
    w = _make(t, warmup_epoch=0, mu=mu)
    warm = (rng.uniform(0.1, 5.0, size=(3, t)) * scale).astype(np.float32)
    for row in warm:
        _step(w, row, epoch=0)
    nadir = warm.astype(np.float64).mean(0)
    for epoch in (1, 2):
        values = (rng.uniform(0.05, 6.0, size=t) * scale).astype(np.float32).astype(np.float64)
        loss, weights, grad = _step(w, values, epoch=epoch)
        ref_grad = _reference_grad(values, nadir, mu)
        np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=2e-5)
        np.testing.assert_allclose(weights.numpy(), ref_grad, rtol=2e-5)
        # the value: the reference's plus the constant T max f it leaves out
        f = np.log(values / nadir + EPS)
        expected = _reference_loss(values, nadir, mu) + t * f.max()
        assert loss == pytest.approx(expected, rel=1e-5, abs=1e-5)
        assert loss == pytest.approx(t * mu * np.log(np.exp(f / mu).sum()), rel=1e-5, abs=1e-5)


def test_stch_is_a_smoothed_max_of_the_normalised_log_losses() -> None:
    """Small ``mu``: the loss tends to ``T max_i f_i`` and the update to the worst task alone;
    large ``mu``: equal shares ``w_i L_i = 1`` (the log-loss sum)."""
    values = np.array([1.0, 3.0, 2.0])
    nadir = np.array([1.0, 1.0, 1.0])
    f = np.log(values / nadir)
    for mu, tol in ((1e-3, 1e-2), (1e-2, 5e-2)):
        w = _make(3, warmup_epoch=0, mu=mu)
        _step(w, nadir, epoch=0)
        loss, weights, _ = _step(w, values, epoch=1)
        assert loss == pytest.approx(3 * f.max(), abs=3 * mu * np.log(3) + 1e-5)
        share = weights.numpy() * values  # each task's share of the normalised update
        np.testing.assert_allclose(share, [0, 3, 0], atol=tol)
    w = _make(3, warmup_epoch=0, mu=1e4)
    _step(w, nadir, epoch=0)
    _, weights, _ = _step(w, values, epoch=1)
    np.testing.assert_allclose(weights.numpy() * values, [1, 1, 1], rtol=1e-3)


def test_stch_is_invariant_to_the_scale_of_each_task() -> None:
    """Multiplying a task's losses (warm-up included) by ``c`` leaves ``w_i L_i`` unchanged: the
    normalised log losses, hence the update direction per unit gradient, do not move."""
    warm = np.array([[2.0, 0.5, 1.0], [1.0, 1.5, 3.0]])
    now = np.array([1.5, 0.2, 2.5])
    shares = []
    for c in ([1.0, 1.0, 1.0], [1e-6, 1.0, 1e3]):
        w = _make(3, warmup_epoch=0, mu=0.5)
        for row in warm:
            _step(w, row * c, epoch=0)
        _, weights, _ = _step(w, now * c, epoch=1)
        shares.append(weights.numpy() * (now * c))
    np.testing.assert_allclose(shares[0], shares[1], rtol=1e-4)


def test_stch_without_warmup_losses_takes_the_first_losses_as_nadir() -> None:
    """Started past the warm-up (nothing collected): the reference divides 0 by 0; here the nadir
    is the first step's losses, so ``f = 0`` and ``w_i = 1 / L_i``."""
    w = _make(2, warmup_epoch=0)
    values = np.array([0.3, 4.0])
    loss, weights, _ = _step(w, values, epoch=5)
    torch.testing.assert_close(w.nadir, torch.tensor(values, dtype=torch.float32))
    torch.testing.assert_close(weights, torch.tensor(1 / values, dtype=torch.float32))
    assert loss == pytest.approx(2 * np.log(2), rel=1e-5)
    with pytest.raises(ValueError, match="epoch"):
        w.combine(WeighterInput(losses=torch.ones(2)))


def test_stch_needs_the_counters_and_nothing_else() -> None:
    needs = STCHWeighter.needs
    assert needs.grads == "none" and needs.counters
    assert not (needs.features or needs.after_step or needs.step_metrics)
    opts = STCHWeighter.Options()
    assert (opts.mu, opts.warmup_epoch, opts.eps) == (1.0, 4, 1e-20)


def test_stch_conformance_past_the_warmup() -> None:
    """The kit's fake runs have 2 steps per epoch: ``warmup_epoch = 0`` collects the nadir on
    steps 0-1 and runs the smooth Tchebycheff loss from step 2 (resume crosses the switch)."""
    check_weighter(STCHWeighter, [{"warmup_epoch": 0, "mu": 0.2}], num_tasks=(3,), name="stch")
