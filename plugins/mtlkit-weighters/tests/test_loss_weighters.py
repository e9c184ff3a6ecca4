"""Exact checks of the loss-based weighters: uncertainty, DWA, FAMO, RLW, DTP, and GradNorm."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit.weighter import WeighterInput

from .conftest import make_weighter


def _losses(*values: float, grad: bool = True) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], requires_grad=grad)


# --- uncertainty ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_uncertainty_equals_its_closed_form(scale: float) -> None:
    w = make_weighter("uncertainty", ["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.3, -1.2]))
    raw = torch.tensor([2.0, 0.5]) * scale  # raw loss values, also tiny ones
    losses = raw.clone().requires_grad_(True)
    out = w.combine(WeighterInput(losses=losses))
    s = torch.tensor([0.3, -1.2])
    expected = (0.5 * torch.exp(-s) * raw + 0.5 * s).sum()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.weights, 0.5 * torch.exp(-s))
    out.loss.backward()
    # dL/dL_i = exp(-s_i) / 2 and dL/ds_i = (1 - exp(-s_i) L_i) / 2
    torch.testing.assert_close(losses.grad, 0.5 * torch.exp(-s))
    expected_grad = 0.5 * (1 - torch.exp(-s) * raw)
    torch.testing.assert_close(w.log_vars.grad, expected_grad)


def test_uncertainty_log_variances_converge_to_log_loss() -> None:
    w = make_weighter("uncertainty", ["a", "b", "c"], lr=1.0)
    groups = w.param_groups()
    assert groups[0]["lr"] == 1.0 and groups[0]["weight_decay"] == 0.0
    opt = torch.optim.SGD(groups, lr=0.01)  # the group's own lr wins
    fixed = torch.tensor([4.0, 1.0, 0.25])
    for _ in range(400):
        opt.zero_grad()
        w.combine(WeighterInput(losses=fixed.clone())).loss.backward()
        opt.step()
    torch.testing.assert_close(w.log_vars.detach(), fixed.log(), atol=1e-3, rtol=0)


# --- DWA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_dwa_first_two_epochs_then_the_formula(scale: float) -> None:
    """Raw loss values, also tiny ones (the ratios, hence the weights, do not depend on scale)."""
    w = make_weighter("dwa", ["a", "b"])
    epochs = {0: [[2.0, 1.0], [4.0, 3.0]], 1: [[1.0, 1.5], [2.0, 0.5]], 2: [[1.0, 1.0]]}
    seen: dict[int, list[torch.Tensor]] = {}
    step = 0
    for epoch, rows in epochs.items():
        for row in rows:
            out = w.combine(WeighterInput(losses=_losses(*(scale * v for v in row)), step=step,
                                          epoch=epoch))
            seen.setdefault(epoch, []).append(out.weights)
            step += 1
    for epoch in (0, 1):
        for weights in seen[epoch]:
            torch.testing.assert_close(weights, torch.ones(2))
    # epoch means: e0 = (3, 2), e1 = (1.5, 1.0); r = e1 / e0 = (0.5, 0.5) -> equal weights
    torch.testing.assert_close(seen[2][0], torch.ones(2))

    w = make_weighter("dwa", ["a", "b"], temp=2.0)
    means = {0: (3.0, 2.0), 1: (1.5, 1.8), 2: (1.0, 1.0)}
    for epoch, (la, lb) in means.items():
        out = w.combine(WeighterInput(losses=_losses(scale * la, scale * lb), step=epoch,
                                      epoch=epoch))
    r = torch.tensor([1.5 / 3.0, 1.8 / 2.0])
    expected = 2 * torch.exp(r / 2) / torch.exp(r / 2).sum()
    torch.testing.assert_close(out.weights, expected)
    torch.testing.assert_close(out.loss, scale * (expected * torch.tensor([1.0, 1.0])).sum())
    assert float(out.weights[1]) > float(out.weights[0])  # the slower task gets more weight


def test_dwa_needs_the_epoch() -> None:
    assert make_weighter("dwa", ["a"]).needs.counters
    with pytest.raises(ValueError, match="epoch"):
        make_weighter("dwa", ["a"]).combine(WeighterInput(losses=_losses(1.0)))


# --- FAMO ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("update", ["sgd", "adam"])
def test_famo_logit_update_by_hand(update: str) -> None:
    w = make_weighter("famo", ["a", "b"], update=update, beta=0.025, gamma=1e-3)
    first = w.combine(WeighterInput(losses=_losses(1.0, 2.0)))
    # z = (1/2, 1/2); c = 0.5/1 + 0.5/2 = 0.75; w = z / (c L) = (2/3, 1/3)
    torch.testing.assert_close(first.weights, torch.tensor([2 / 3, 1 / 3]))
    torch.testing.assert_close(w.logits, torch.zeros(2))  # nothing to learn from yet
    second = w.combine(WeighterInput(losses=_losses(0.5, 1.8)))
    delta = torch.tensor([math.log(1.0 / 0.5), math.log(2.0 / 1.8)])
    z = torch.tensor([0.5, 0.5])
    grad = z * (delta - (z * delta).sum())  # + gamma * xi, with xi = 0
    torch.testing.assert_close(grad, torch.tensor([0.1469463, -0.1469463]), rtol=1e-5, atol=0)
    if update == "sgd":
        expected = -0.025 * grad
    else:  # first Adam step: m_hat / sqrt(v_hat) = sign(grad)
        expected = -0.025 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(w.logits, expected)
    # the improving task (a) loses weight
    zz = torch.softmax(expected, 0)
    c = (zz / torch.tensor([0.5, 1.8])).sum()
    torch.testing.assert_close(second.weights, zz / (c * torch.tensor([0.5, 1.8])))
    # its loss is sum_i z_i / c log L_i
    torch.testing.assert_close(second.loss, (zz / c * torch.tensor([0.5, 1.8]).log()).sum())


@pytest.mark.parametrize("update", ["sgd", "adam"])
def test_famo_is_scale_free_on_tiny_losses(update: str) -> None:
    """Losses 1e-4 times smaller (eps negligible): the same logits and the same weights (they sum
    to 1: ``sum_i z_i / (c D_i) = 1``); at either scale the gradient of its loss
    ``sum_i z_i / c log D_i`` w.r.t. each ``L_i`` is exactly the logged weight."""
    rows = [(1.0, 2.0), (0.5, 1.8), (0.45, 1.0), (0.5, 0.9)]
    outs = {}
    for scale in (1.0, 1e-4):
        w = make_weighter("famo", ["a", "b"], update=update, eps=1e-14)
        for row in rows:
            losses = _losses(*(scale * v for v in row))
            out = w.combine(WeighterInput(losses=losses))
            out.loss.backward()
            # dL/dL_i = z_i / (c D_i) = w_i: the weights are exactly the loss gradient
            torch.testing.assert_close(losses.grad, out.weights, rtol=1e-5, atol=0)
        outs[scale] = (w.logits.clone(), out.weights)
        assert float(out.weights.sum()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(outs[1e-4][0], outs[1.0][0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(outs[1e-4][1], outs[1.0][1], rtol=1e-4, atol=1e-7)


def test_famo_decay_and_min_losses() -> None:
    w = make_weighter("famo", ["a", "b"], update="sgd", beta=0.1, gamma=0.5,
                      min_losses={"a": 0.5})
    torch.testing.assert_close(w.min_losses, torch.tensor([0.5, 0.0]))
    with torch.no_grad():
        w.logits.copy_(torch.tensor([1.0, -1.0]))
    w.combine(WeighterInput(losses=_losses(1.5, 2.0)))
    w.combine(WeighterInput(losses=_losses(1.5, 2.0)))  # no change: delta = 0, only the decay
    torch.testing.assert_close(w.logits, torch.tensor([1.0, -1.0]) * (1 - 0.1 * 0.5))


# --- RLW -----------------------------------------------------------------------------------------


def test_rlw_is_a_deterministic_function_of_the_step() -> None:
    a = make_weighter("rlw", ["x", "y", "z"])
    b = make_weighter("rlw", ["x", "y", "z"])
    for step in (0, 5, 12345):
        wa = a.combine(WeighterInput(losses=_losses(1, 1, 1), step=step, epoch=0)).weights
        wb = b.combine(WeighterInput(losses=_losses(1, 1, 1), step=step, epoch=0)).weights
        assert torch.equal(wa, wb)
        assert float(wa.sum()) == pytest.approx(1.0) and (wa > 0).all()
    draws = torch.stack([a.draw(s) for s in range(4000)])
    assert abs(float(draws.mean())) < 0.05 and abs(float(draws.std()) - 1) < 0.05
    other = make_weighter("rlw", ["x", "y", "z"], seed=1)
    assert not torch.equal(a.draw(3), other.draw(3))


# --- DTP -----------------------------------------------------------------------------------------


def test_dtp_focal_weights_on_moving_average() -> None:
    w = make_weighter("dtp", ["a", "b"], gamma=2.0, alpha=0.5)
    out = w.combine(WeighterInput(losses=_losses(1, 1), metrics=torch.tensor([0.9, 0.3])))
    k = torch.tensor([0.9, 0.3])
    torch.testing.assert_close(out.weights, -((1 - k) ** 2) * k.log())
    assert float(out.weights[1]) > float(out.weights[0])  # the harder task
    out = w.combine(WeighterInput(losses=_losses(1, 1), metrics=torch.tensor([0.5, 0.5])))
    k = 0.5 * torch.tensor([0.5, 0.5]) + 0.5 * torch.tensor([0.9, 0.3])
    torch.testing.assert_close(out.weights, -((1 - k) ** 2) * k.log())
    w2 = make_weighter("dtp", ["a"])
    out = w2.combine(WeighterInput(losses=_losses(1), metrics=torch.tensor([1.0])))
    assert torch.isfinite(out.weights).all() and float(out.weights[0]) > 0  # clamped, not 0 * inf


# --- GradNorm ------------------------------------------------------------------------------------


def test_gradnorm_moves_weight_to_the_lagging_task_and_renormalises() -> None:
    w = make_weighter("gradnorm", ["a", "b"], alpha=1.5, lr=0.1)
    opt = torch.optim.SGD(w.param_groups(), lr=1.0)
    grads = torch.tensor([[3.0, 4.0], [0.6, 0.8]])  # ||g|| = 5 and 1
    # step 0: L(0) = (1, 1), r = 1; target = mean(G) = 3: a's norm is above, b's below
    out = w.combine(WeighterInput(losses=_losses(1.0, 1.0), grads=grads))
    torch.testing.assert_close(out.weights, torch.ones(2))
    opt.zero_grad()
    out.loss.backward()
    # d|G_i - target| / dw_i = sign(G_i - target) * ||g_i||
    torch.testing.assert_close(w.task_weights.grad, torch.tensor([5.0, -1.0]))
    opt.step()
    w.after_step(WeighterInput(losses=torch.tensor([1.0, 1.0])))
    assert float(w.task_weights.detach().sum()) == pytest.approx(2.0)
    assert float(w.task_weights[1].detach()) > float(w.task_weights[0].detach())
    torch.testing.assert_close(out.weights, torch.ones(2))  # the logged weights are a copy
    # task b now lags (its loss ratio is higher): the target asks for more of its gradient
    out = w.combine(WeighterInput(losses=_losses(0.5, 1.0), grads=torch.tensor([[1.0], [1.0]])))
    ltilde = torch.tensor([0.5, 1.0])
    r = ltilde / ltilde.mean()
    g = w.task_weights.detach() * 1.0
    target = g.mean() * r**1.5
    expected = (g - target).abs().sum() + (w.task_weights.detach() * torch.tensor([0.5, 1.0])).sum()
    torch.testing.assert_close(out.loss, expected)


def test_gradnorm_declares_last_layer_and_after_step() -> None:
    needs = make_weighter("gradnorm", ["a", "b"]).needs
    assert needs.grads == "last_layer" and needs.after_step
