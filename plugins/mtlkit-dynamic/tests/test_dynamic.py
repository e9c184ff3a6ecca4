"""The dynamic-weight unit, simulated the way the trainer drives it (setup, combine, one backward,
after_step), plus discovery and one real training run through mtlkit's trainer."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mtlkit_dynamic.weighters import (
    DynamicOptions,
    DynamicWeighter,
    NaiveDynamicOptions,
    NaiveDynamicWeighter,
)
from torch import Tensor

from mtlkit.plugins import PluginHost
from mtlkit.weighter import Weighter, WeighterInput, WeighterSetup

D = 8
B = 6


PLAIN = {"init": "zero", "optimizer": "sgd", "clip_norm": None}
"""The unit as mtlkit ran it before 0.2 (zero init, plain SGD): exact, easy-to-check dynamics."""


def make(cls: type, num_tasks: int = 2, **options: object) -> Weighter:
    """A set-up weighter; ``PLAIN`` unless ``authors=True`` asks for the defaults."""
    base = {} if options.pop("authors", False) else dict(PLAIN)
    opts = (DynamicOptions if cls is DynamicWeighter else NaiveDynamicOptions)(
        **{**base, **options}
    )
    w = cls([f"t{i}" for i in range(num_tasks)], opts)
    w.setup(WeighterSetup(feature_dim=D, shared_numel=0, device=torch.device("cpu")))
    return w


def features(seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g)


def step(w: Weighter, feats: Tensor, losses: Tensor) -> Tensor:
    """One simulated trainer step with constant losses; returns the logged weights."""
    x = feats.clone().requires_grad_(True)
    # losses attached to the features (as a trainer's would be) with the given values
    attached = losses + 0.0 * x.sum()
    update = w.combine(WeighterInput(losses=attached, features=x))
    assert update.loss is not None
    update.loss.backward()
    w.after_step(WeighterInput(losses=attached.detach()))
    return update.weights


def run(w: Weighter, losses: list[float], steps: int, seed: int = 0) -> list[Tensor]:
    return [step(w, features(seed + s), torch.tensor(losses)) for s in range(steps)]


def unit_state(w: Weighter) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in w.state_dict().items()}


# --- discovery ------------------------------------------------------------------------------
def test_found_via_entry_point() -> None:
    host = PluginHost()
    assert "dynamic" in [p.name for p in host.plugins()]
    assert host.weighters.resolve("dynamic") is DynamicWeighter
    assert host.weighters.resolve("dynamic-naive") is NaiveDynamicWeighter
    assert host.weighters.entry("dynamic").dist == "mtlkit-dynamic"


def test_entry_module_is_light() -> None:
    code = "import sys, mtlkit_dynamic.plugin; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_declares_features_and_after_step_only() -> None:
    w = make(DynamicWeighter)
    assert w.needs.grads == "none" and w.needs.features and w.needs.after_step
    assert not w.needs.counters and not w.needs.step_metrics
    assert w.param_groups() == []  # the main optimizer never touches the unit
    assert sum(p.numel() for p in w.parameters()) == D * 2 + 2


def test_options_default_to_the_authors_code() -> None:
    """facenet_expression_realdynamic_*.py: raw logits, no clamp, truncated-normal init, TF1
    RMSProp (lr 0.1, decay 0.9, momentum 0.9, eps 1.0), gradients clipped to norm 5."""
    o = DynamicOptions()
    assert o.model_dump() == {
        "normalize": True, "normalize_logits": False, "clamp": None, "init": "truncated_normal",
        "optimizer": "rmsprop", "detach": True, "lr": 0.1, "momentum": None,
        "rmsprop_decay": 0.9, "rmsprop_eps": 1.0, "clip_norm": 5.0, "sigma": 0.01,
        "difficulty": "loss",
    }
    assert o.resolved_momentum == 0.9
    assert DynamicOptions(optimizer="sgd").resolved_momentum == 0.0
    with pytest.raises(ValueError):
        NaiveDynamicOptions(sigma=0.1)  # the naive control has no sigma
    with pytest.raises(ValueError):
        DynamicOptions(lr=0.0)
    with pytest.raises(ValueError, match="clamp"):
        DynamicOptions(clamp=(0.9, 0.1))


def test_truncated_normal_init_is_cut_at_two_std() -> None:
    torch.manual_seed(0)
    unit = make(DynamicWeighter, authors=True).unit
    w = unit.linear.weight.detach()
    assert float(w.abs().max()) <= 0.2 and float(w.std()) > 0.03
    assert torch.equal(unit.linear.bias, torch.zeros(2))


@pytest.mark.parametrize("normalize_logits", [False, True])
def test_normalized_logits_bound_the_weights(normalize_logits: bool) -> None:
    """With unit-length logits the T = 2 weights stay in [1/(1+e^sqrt2), 1/(1+e^-sqrt2)] =
    [0.196, 0.804] however large the unit's weights grow: the paper's plateau. Raw logits don't."""
    w = make(DynamicWeighter, normalize_logits=normalize_logits)
    with torch.no_grad():
        w.unit.linear.weight.normal_(generator=torch.Generator().manual_seed(0))
        w.unit.linear.bias.copy_(torch.tensor([50.0, -50.0]))
    weights = w.unit(features()).detach()
    hi = 1 / (1 + math.exp(-math.sqrt(2)))
    if normalize_logits:
        assert float(weights.max()) <= hi + 1e-6 and float(weights.min()) >= 1 - hi - 1e-6
    else:
        assert float(weights.max()) > hi + 0.05
    # trained on very different losses, the bounded weights plateau at (nearly) the bound
    trained = make(DynamicWeighter, normalize_logits=normalize_logits, lr=1.0)
    final = run(trained, [3.0, 0.1], 300)[-1]
    assert float(final[0]) > 0.7
    if normalize_logits:
        assert float(final[0]) <= hi + 1e-6


def test_clamp_bounds_and_renormalises() -> None:
    w = make(DynamicWeighter, 2, clamp=(0.01, 0.99))
    with torch.no_grad():
        w.unit.linear.bias.copy_(torch.tensor([20.0, -20.0]))
    weights = w.unit(features()).detach()
    assert torch.allclose(weights, torch.tensor([0.99, 0.01]))
    assert abs(float(weights.sum()) - 1) < 1e-6


def test_rmsprop_step_is_tensorflow_1s() -> None:
    """ms = 0.9 * 1 + 0.1 g^2 (ms starts at one); mom = lr g / sqrt(ms + eps); p -= mom."""
    w = make(NaiveDynamicWeighter, optimizer="rmsprop", lr=0.1, clip_norm=None)
    update = w.combine(WeighterInput(losses=torch.tensor([1.0, 3.0]), features=features()))
    update.loss.backward()
    before = [p.detach().clone() for p in w.unit.parameters()]
    grads = [p.grad.clone() for p in w.unit.parameters()]
    w.after_step(WeighterInput(losses=torch.tensor([1.0, 3.0])))
    for p, b, g in zip(w.unit.parameters(), before, grads):
        ms = 0.9 + 0.1 * g * g
        assert torch.allclose(p, b - 0.1 * g / torch.sqrt(ms + 1.0), atol=1e-7)
    # the second step carries momentum 0.9 of the first
    assert float(w.unit.weight_momentum.abs().sum()) > 0


def test_unit_gradient_is_clipped_to_the_global_norm() -> None:
    w = make(NaiveDynamicWeighter, lr=1.0, clip_norm=1e-3)
    update = w.combine(WeighterInput(losses=torch.tensor([1.0, 300.0]), features=features()))
    update.loss.backward()
    before = torch.cat([p.detach().flatten() for p in w.unit.parameters()])
    w.after_step(WeighterInput(losses=torch.tensor([1.0, 300.0])))
    after = torch.cat([p.detach().flatten() for p in w.unit.parameters()])
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-4)


# --- the weights ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [DynamicWeighter, NaiveDynamicWeighter])
@pytest.mark.parametrize("num_tasks", [1, 2, 3])
def test_weights_on_the_simplex(cls: type, num_tasks: int) -> None:
    w = make(cls, num_tasks, normalize=False, lr=1.0)
    losses = [float(i + 1) for i in range(num_tasks)]
    for weights in run(w, losses, 10):
        assert weights.shape == (num_tasks,)
        assert bool((weights >= 0).all())
        assert abs(float(weights.sum()) - 1.0) < 1e-6
    assert torch.equal(w.weights, weights)  # logged through record()


def test_first_weights_are_uniform() -> None:
    w = make(DynamicWeighter, 3)
    assert torch.allclose(w.weights, torch.full((3,), 1 / 3))
    first = step(w, features(), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(first, torch.full((3,), 1 / 3))


def test_dynamic_moves_weight_to_the_larger_loss() -> None:
    w = make(DynamicWeighter)
    history = torch.stack([step(w, features(), torch.tensor([2.0, 0.5])) for _ in range(30)])
    assert bool((history[1:, 0] > history[:-1, 0]).all())
    assert float(history[-1, 0]) > 0.6
    # over varying batches the trend holds too
    assert float(run(make(DynamicWeighter), [2.0, 0.5], 30)[-1][0]) > 0.6


def test_naive_moves_weight_to_the_smaller_loss() -> None:
    w = make(NaiveDynamicWeighter)
    history = torch.stack([step(w, features(), torch.tensor([2.0, 0.5])) for _ in range(30)])
    assert bool((history[1:, 0] < history[:-1, 0]).all())
    assert float(history[-1, 0]) < 0.4
    assert float(run(make(NaiveDynamicWeighter), [2.0, 0.5], 30)[-1][0]) < 0.4


@pytest.mark.parametrize("cls", [DynamicWeighter, NaiveDynamicWeighter])
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_equal_losses_keep_the_weights(cls: type, num_tasks: int) -> None:
    w = make(cls, num_tasks, momentum=0.9)
    for weights in run(w, [0.7] * num_tasks, 20):
        assert torch.allclose(weights, torch.full((num_tasks,), 1 / num_tasks), atol=1e-6, rtol=0)


def test_three_tasks_order_by_difficulty() -> None:
    w = make(DynamicWeighter, 3)
    final = run(w, [0.2, 1.0, 3.0], 40)[-1]
    assert float(final[2]) > float(final[1]) > float(final[0])


def test_unit_loss_gradient_matches_the_paper() -> None:
    """dL_w/dz_k = w_k (1/(L_k+s) - sum_i w_i/(L_i+s)), averaged over the batch, for the bias."""
    w = make(DynamicWeighter, 3, sigma=0.01)
    with torch.no_grad():
        w.unit.linear.weight.normal_()
        w.unit.linear.bias.normal_()
    feats = features()
    losses = torch.tensor([0.3, 1.0, 2.0])
    update = w.combine(WeighterInput(losses=losses.clone().requires_grad_(True), features=feats))
    update.loss.backward()
    x = torch.nn.functional.normalize(feats, dim=1)
    p = torch.softmax(x @ w.unit.linear.weight.detach().T + w.unit.linear.bias.detach(), dim=1)
    inv = 1 / (losses + 0.01)
    # per-sample softmax Jacobian applied to dL_w/dp = inv / B
    g = p * (inv - (p * inv).sum(dim=1, keepdim=True)) / B
    assert torch.allclose(w.unit.linear.bias.grad, g.sum(dim=0), atol=1e-6)
    assert torch.allclose(w.unit.linear.weight.grad, g.T @ x, atol=1e-6)


# --- what the network sees ------------------------------------------------------------------
def _task_losses(x: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(1)
    heads = torch.randn(3, D, generator=g)
    return torch.stack([((x @ heads[i]) - i) ** 2 for i in range(3)]).mean(dim=1)


def _random_unit(w: Weighter) -> None:
    with torch.no_grad():
        w.unit.linear.weight.normal_(generator=torch.Generator().manual_seed(2))
        w.unit.linear.bias.normal_(generator=torch.Generator().manual_seed(3))


def _grads(detach: bool) -> tuple[Tensor, Tensor, list[Tensor], Weighter]:
    w = make(DynamicWeighter, 3, detach=detach)
    _random_unit(w)
    x = features().requires_grad_(True)
    losses = _task_losses(x)
    update = w.combine(WeighterInput(losses=losses, features=x))
    update.loss.backward()
    return x.grad.clone(), update.weights, [p.grad.clone() for p in w.unit.parameters()], w


def test_detach_true_trunk_sees_constant_weights() -> None:
    grad, weights, _, _ = _grads(detach=True)
    x = features().requires_grad_(True)
    (weights * _task_losses(x)).sum().backward()
    assert torch.allclose(grad, x.grad, atol=1e-6)


def test_detach_false_trunk_also_sees_dw_dx() -> None:
    grad_true, weights, _, _ = _grads(detach=True)
    grad_false, weights_false, _, _ = _grads(detach=False)
    assert torch.equal(weights, weights_false)
    assert not torch.allclose(grad_true, grad_false, atol=1e-5)
    # the extra term is exactly sum_i L_i dw_i/dx with the unit held fixed
    w = make(DynamicWeighter, 3, detach=False)
    _random_unit(w)
    x = features().requires_grad_(True)
    losses = _task_losses(x)
    (w.unit(x) * losses).sum().backward()
    assert torch.allclose(grad_false, x.grad, atol=1e-6)


def test_network_loss_never_trains_the_unit() -> None:
    _, _, unit_grads_true, _ = _grads(detach=True)
    _, _, unit_grads_false, w = _grads(detach=False)
    for a, b in zip(unit_grads_true, unit_grads_false):
        assert torch.allclose(a, b, atol=1e-7)
    # and they are the gradients of the unit's own loss alone
    x = features()
    losses = _task_losses(x).detach()
    own = (w.unit(x) / (losses + 0.01)).sum()
    expected = torch.autograd.grad(own, list(w.unit.parameters()))
    for a, b in zip(unit_grads_false, expected):
        assert torch.allclose(a, b, atol=1e-7)


def test_after_step_is_plain_sgd_and_clears_grads() -> None:
    w = make(NaiveDynamicWeighter, lr=0.5)
    x = features()
    update = w.combine(WeighterInput(losses=torch.tensor([1.0, 3.0]), features=x))
    update.loss.backward()
    before = [p.detach().clone() for p in w.unit.parameters()]
    grads = [p.grad.clone() for p in w.unit.parameters()]
    w.after_step(WeighterInput(losses=torch.tensor([1.0, 3.0])))
    for p, b, g in zip(w.unit.parameters(), before, grads):
        assert torch.allclose(p, b - 0.5 * g)
        assert p.grad is None


# --- checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [DynamicWeighter, NaiveDynamicWeighter])
@pytest.mark.parametrize("authors", [False, True])
def test_state_dict_round_trip_resumes_exactly(cls: type, authors: bool) -> None:
    torch.manual_seed(0)
    a = make(cls, 3, momentum=0.9, authors=authors)
    run(a, [0.5, 1.0, 2.0], 5)
    state = unit_state(a)
    assert {"weights", "unit.linear.weight", "unit.linear.bias", "unit.weight_momentum",
            "unit.bias_momentum"} <= set(state)
    assert float(state["unit.weight_momentum"].abs().sum()) > 0
    if authors:
        assert {"unit.weight_square", "unit.bias_square"} <= set(state)
    b = make(cls, 3, momentum=0.9, authors=authors)
    b.load_state_dict(state)
    assert torch.equal(b.weights, a.weights)
    wa = run(a, [0.5, 1.0, 2.0], 5, seed=100)
    wb = run(b, [0.5, 1.0, 2.0], 5, seed=100)
    for x, y in zip(wa, wb):
        assert torch.equal(x, y)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_combine_before_setup_is_a_clear_error() -> None:
    w = DynamicWeighter(["a", "b"])
    with pytest.raises(RuntimeError, match="setup"):
        w.combine(WeighterInput(losses=torch.ones(2), features=torch.ones(1, D)))


def test_wrong_feature_size_is_a_clear_error() -> None:
    w = make(DynamicWeighter)
    with pytest.raises(ValueError, match="features"):
        w.combine(WeighterInput(losses=torch.ones(2), features=torch.ones(1, D + 1)))


# --- through mtlkit's trainer -----------------------------------------------------------------
def test_trains_through_mtlkit(tmp_path: Path) -> None:
    from mtlkit.config import load_config
    from mtlkit.trainer import Trainer

    cfg = {
        "output_dir": str(tmp_path / "run"),
        "seed": 3,
        "trainer": {"epochs": 1, "batch_size": 16, "progress": "off", "plot": False},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "backbone": {"name": "mlp", "in_features": 16, "hidden": [32]},
        "tasks": [{"name": "classification", "id": "a"}, {"name": "classification", "id": "b"}],
        "weighter": {"name": "dynamic", "momentum": 0.5, "detach": False},
        "data": {"name": "synthetic", "num_samples": 64, "num_features": 16},
    }
    from mtlkit_dynamic import plugin

    host = PluginHost(load_entry_points=False)  # isolated from other installed plugins
    host.add(plugin, "dynamic", dist="mtlkit-dynamic")
    trainer = Trainer(load_config(data=cfg), host)
    unit = trainer.weighter.unit
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in unit.parameters()}
    before = unit.linear.weight.detach().clone()
    trainer.fit()
    assert not torch.equal(before, unit.linear.weight)
    weights = trainer.weighter.weights
    assert abs(float(weights.sum()) - 1) < 1e-6
    assert not torch.allclose(weights, torch.full((2,), 0.5))


# --- difficulty: loss_ratio (mtlkit's scale-free signal) -------------------------------------
def _trajectory(scale: float, difficulty: str, steps: int = 25) -> Tensor:
    """Weights over ``steps`` where task 0 learns slower (its loss falls less), with task 0's
    loss multiplied by ``scale`` throughout."""
    w = make(DynamicWeighter, difficulty=difficulty)
    out = []
    for s in range(steps):
        losses = torch.tensor([2.0 * scale * (1 - 0.01 * s), 1.0 * (1 - 0.03 * s)])
        out.append(step(w, features(s), losses))
    return torch.stack(out)


def test_loss_ratio_ignores_the_scale_of_a_loss() -> None:
    """The defining property: multiplying a loss by a constant leaves the weights unchanged."""
    base = _trajectory(1.0, "loss_ratio")
    for scale in (1e-3, 0.1, 50.0):
        torch.testing.assert_close(_trajectory(scale, "loss_ratio"), base, rtol=1e-5, atol=1e-6)
    # the raw loss does not have it: scaling task 0's loss down hands the weight to task 1
    assert float(_trajectory(0.01, "loss")[-1, 0]) < 0.45 < float(_trajectory(1.0, "loss")[-1, 0])


def test_loss_ratio_weights_the_task_that_learnt_least() -> None:
    """Task 1 starts with the larger loss but falls faster: by ratio task 0 is the harder one."""
    w = make(DynamicWeighter, difficulty="loss_ratio")
    for s in range(30):
        final = step(w, features(s), torch.tensor([1.0 * (1 - 0.005 * s), 5.0 * (1 - 0.03 * s)]))
    assert float(final[0]) > 0.55
    assert torch.equal(w.initial_losses, torch.tensor([1.0, 5.0]))


def test_loss_ratio_waits_for_a_positive_loss_and_resumes() -> None:
    """A task with no labelled sample yet (loss 0) counts as ratio 1 until its first loss; the
    reference losses are checkpointed, so a resumed weighter continues exactly."""
    w = make(DynamicWeighter, difficulty="loss_ratio")
    step(w, features(0), torch.tensor([0.0, 2.0]))
    assert math.isnan(float(w.initial_losses[0])) and float(w.initial_losses[1]) == 2.0
    step(w, features(1), torch.tensor([3.0, 1.0]))
    assert torch.equal(w.initial_losses, torch.tensor([3.0, 2.0]))
    again = make(DynamicWeighter, difficulty="loss_ratio")
    again.load_state_dict(w.state_dict())
    torch.testing.assert_close(step(again, features(2), torch.tensor([1.0, 1.0])),
                               step(w, features(2), torch.tensor([1.0, 1.0])))


def test_default_difficulty_is_the_authors_raw_loss() -> None:
    assert DynamicOptions().difficulty == "loss"
    assert "initial_losses" not in make(DynamicWeighter).state_dict()


def test_a_resume_that_changes_the_difficulty_loads() -> None:
    """--allow-config-change from one difficulty to the other: the state loads (no missing or
    unexpected key); loss_ratio then takes fresh reference losses."""
    raw = make(DynamicWeighter)
    step(raw, features(0), torch.tensor([1.0, 2.0]))
    ratio = make(DynamicWeighter, difficulty="loss_ratio")
    ratio.load_state_dict(raw.state_dict())
    assert torch.isnan(ratio.initial_losses).all()
    step(ratio, features(1), torch.tensor([3.0, 1.0]))
    assert torch.equal(ratio.initial_losses, torch.tensor([3.0, 1.0]))
    back = make(DynamicWeighter)
    back.load_state_dict(ratio.state_dict())
    assert "initial_losses" not in back.state_dict()
