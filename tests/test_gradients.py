"""The engine computes exactly what a weighter declares, and no more."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlkit.config import load_config
from mtlkit.data import batch_generator
from mtlkit.errors import WeighterError
from mtlkit.gradients import GradientEngine
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput

from .conftest import tiny_config
from .helpers.fake_plugins import TestPlugin


def _trainer(tmp_path: Path, host: PluginHost, weighter: str) -> Trainer:
    host.pm.register(TestPlugin(), name="test-plugin")
    cfg = tiny_config(tmp_path, weighter={"name": weighter})
    return Trainer(load_config(data=cfg), host)


def _count_trunk_backwards(trainer: Trainer) -> list[int]:
    first = trainer.model.shared_parameters()[0]
    calls = [0]
    first.register_hook(lambda g: calls.__setitem__(0, calls[0] + 1))
    return calls


def _batch(trainer: Trainer):
    idx = torch.arange(16)
    return trainer.data.train.batch(idx, train=True, generator=batch_generator(0, 0, 0))


def test_losses_only_weighter_runs_exactly_one_backward(tmp_path: Path, host: PluginHost) -> None:
    trainer = _trainer(tmp_path, host, "equal")
    calls = _count_trunk_backwards(trainer)
    trainer.train_step(_batch(trainer))
    assert calls[0] == 1


def test_rep_weighter_receives_T_feature_shaped_grads(tmp_path: Path, host: PluginHost) -> None:
    trainer = _trainer(tmp_path, host, "rec-rep")
    calls = _count_trunk_backwards(trainer)
    batch = _batch(trainer)
    trainer.train_step(batch)
    inp = trainer.weighter.seen[-1]  # type: ignore[attr-defined]
    features = trainer.model.backbone(batch["input"])
    assert inp.grads is not None and inp.grads.shape == (2, *features.shape)
    assert calls[0] == 1  # the combined gradient goes through the trunk once
    assert inp.features is None and inp.step is None and inp.metrics is None  # not declared


def test_rep_and_param_paths_match_equal_weighting(tmp_path: Path, host: PluginHost) -> None:
    """Summing per-task gradients must reproduce the gradient of the summed loss."""
    grads = {}
    for name in ("equal", "rec-rep", "rec-param"):
        trainer = _trainer(tmp_path / name, host, name)
        host.pm.unregister(name="test-plugin")
        trainer.optimizer.zero_grad()
        trainer.engine.backward(_batch(trainer), 0, 0)
        grads[name] = [p.grad.clone() for p in trainer.model.parameters()]
    for name in ("rec-rep", "rec-param"):
        for a, b in zip(grads["equal"], grads[name]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_param_weighter_gets_one_T_by_D_buffer(tmp_path: Path, host: PluginHost) -> None:
    trainer = _trainer(tmp_path, host, "rec-param")
    calls = _count_trunk_backwards(trainer)
    trainer.train_step(_batch(trainer))
    inp = trainer.weighter.seen[-1]  # type: ignore[attr-defined]
    d = sum(p.numel() for p in trainer.model.shared_parameters())
    assert inp.grads is not None and inp.grads.shape == (2, d)
    assert calls[0] == 2  # one per task: the floor for parameter gradients
    assert inp.step == 0 and inp.epoch == 0
    assert inp.metrics is not None and inp.metrics.shape == (2,)
    assert len(trainer.weighter.after) == 1  # type: ignore[attr-defined]


def test_param_path_adds_to_gradients_already_present(tmp_path: Path, host: PluginHost) -> None:
    """Two backwards without zero_grad accumulate, as autograd does, even though the shared
    parameters' .grad are views of the engine's reused buffer between calls."""
    trainer = _trainer(tmp_path, host, "rec-param")
    params = list(trainer.model.parameters())
    idx = [torch.arange(0, 16), torch.arange(16, 32)]

    def batch(i: int):
        return trainer.data.train.batch(idx[i], train=True, generator=batch_generator(0, 0, i))

    single = []
    for i in range(2):
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.engine.backward(batch(i), i, 0)
        single.append([p.grad.clone() for p in params])
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.engine.backward(batch(0), 0, 0)
    trainer.engine.backward(batch(1), 1, 0)
    for p, a, b in zip(params, *single):
        torch.testing.assert_close(p.grad, a + b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["equal", "rec-rep", "rec-param"])
def test_tasks_update_their_state_once_per_training_step_only(
    tmp_path: Path, host: PluginHost, name: str
) -> None:
    """``Task.update_state`` (e.g. moving-average centres) sees each training step's outputs and
    raw targets once, on every gradient path, and never an evaluation batch."""
    trainer = _trainer(tmp_path, host, name)
    seen: list[tuple[str, int]] = []
    for task in trainer.tasks:
        task.update_state = (  # type: ignore[method-assign]
            lambda out, target, n=task.name: seen.append((n, int(target.shape[0])))
        )
    trainer.train_step(_batch(trainer))
    assert seen == [("a", 16), ("b", 16)]
    trainer.evaluate("test")
    assert len(seen) == 2


class _SignedHeads(Weighter):
    """Returns fixed weights (one negative) and, optionally, explicit head weights."""

    needs = Needs(grads="parameters")

    def __init__(self, task_names, head_weights=None) -> None:
        super().__init__(task_names)
        self.head_weights = head_weights

    def combine(self, inp: WeighterInput) -> Update:
        assert inp.grads is not None
        w = torch.tensor([1.0, -0.2])
        return Update(weights=w, grad=(w[:, None] * inp.grads).sum(0),
                      head_weights=self.head_weights)


def test_a_negative_head_weight_is_refused(tmp_path: Path, host: PluginHost) -> None:
    trainer = _trainer(tmp_path, host, "equal")
    engine = GradientEngine(trainer.model, trainer.tasks, _SignedHeads(trainer.task_ids),
                            trainer.target_keys)
    with pytest.raises(WeighterError, match="increase its own loss"):
        engine.backward(_batch(trainer), 0, 0)


def test_head_weights_scale_each_head_by_its_own_loss_gradient(
    tmp_path: Path, host: PluginHost
) -> None:
    """With ``head_weights = 1`` each head receives exactly its own loss gradient, whatever the
    shared coefficients are."""
    trainer = _trainer(tmp_path, host, "equal")
    batch = _batch(trainer)
    trainer.optimizer.zero_grad()
    trainer.engine.backward(batch, 0, 0)  # equal weights: each head gets its own gradient
    heads = [p for t in trainer.task_ids for p in trainer.model.heads[t].parameters()]
    expected = [p.grad.clone() for p in heads]
    engine = GradientEngine(trainer.model, trainer.tasks,
                            _SignedHeads(trainer.task_ids, torch.ones(2)), trainer.target_keys)
    trainer.optimizer.zero_grad()
    engine.backward(batch, 0, 0)
    for a, b in zip(expected, [p.grad for p in heads]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_conflict_diagnostics_formulas() -> None:
    from mtlkit.gradients import conflict_diagnostics

    orthogonal = conflict_diagnostics(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(orthogonal, torch.tensor([0.0, 0.0, 1.0]))
    opposed = conflict_diagnostics(torch.tensor([[1.0, 0.0], [-2.0, 0.0]]))
    torch.testing.assert_close(opposed, torch.tensor([-1.0, -1.0, 0.5]))
    three = conflict_diagnostics(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]]))
    torch.testing.assert_close(three, torch.tensor([1.0 / 3.0, 0.0, 1.0 / 3.0]))


@pytest.mark.parametrize("name", ["equal", "rec-rep", "rec-param"])
def test_diagnostics_are_logged_every_n_steps_and_change_nothing(
    tmp_path: Path, host: PluginHost, name: str
) -> None:
    import json

    host.pm.register(TestPlugin(), name="test-plugin")
    params = {}
    for every in (0, 3):
        cfg = tiny_config(tmp_path / str(every), weighter={"name": name},
                          trainer__diagnostics=every, trainer__epochs=1)
        trainer = Trainer(load_config(data=cfg), host)
        trainer.fit()
        params[every] = [p.detach().clone() for p in trainer.model.parameters()]
        rows = [json.loads(x) for x in (trainer.run_dir / "steps.jsonl").read_text().splitlines()]
        for row in rows:
            if every == 0:
                assert not any(k.startswith("diag/") for k in row)
            elif row["step"] % every == 0:
                assert -1.0 <= row["diag/cos_min"] <= row["diag/cos_mean"] <= 1.0
                assert 0.0 < row["diag/norm_ratio"] <= 1.0
            else:
                assert row["diag/cos_mean"] is None
    for a, b in zip(params[0], params[3]):
        assert torch.equal(a, b)  # the head-only backwards leave training untouched


def test_batched_backward_gives_the_loop_s_gradients(tmp_path: Path, host: PluginHost) -> None:
    """``batched_backward``: the T rows from one vmapped backward, the heads from the summed
    loss; the weighter's buffer and every final .grad equal the T-backward loop's."""
    seen, final = {}, {}
    for batched in (False, True):
        trainer = _trainer(tmp_path / str(batched), host, "rec-param")
        host.pm.unregister(name="test-plugin")
        trainer.engine.batched_backward = batched
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.engine.backward(_batch(trainer), 0, 0)
        seen[batched] = trainer.weighter.seen[-1].grads.clone()  # type: ignore[attr-defined]
        final[batched] = [p.grad.clone() for p in trainer.model.parameters()]
    torch.testing.assert_close(seen[True], seen[False], rtol=1e-5, atol=1e-7)
    for a, b in zip(final[True], final[False]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
