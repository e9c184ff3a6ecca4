"""The trainer's Checkpointer (mtlkit.checkpointing): what a checkpoint holds comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlkit.checkpoint import load_checkpoint
from mtlkit.checkpointing import LAST, Checkpointer, TrainState
from mtlkit.config import load_config
from mtlkit.errors import CheckpointError
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import tiny_config


def _trainer(tmp_path: Path, host: PluginHost, **changes: object) -> Trainer:
    return Trainer(load_config(data=tiny_config(tmp_path, **changes)), host)


def test_the_trainer_holds_a_checkpointer_of_its_own_run(tmp_path: Path, host: PluginHost) -> None:
    trainer = _trainer(tmp_path, host)
    assert isinstance(trainer.checkpointer, Checkpointer)
    assert trainer.checkpointer.built is trainer.built
    assert trainer.checkpointer.run_dir == trainer.run_dir


def test_the_checkpointer_round_trips_state_and_modules_on_its_own(
    tmp_path: Path, host: PluginHost
) -> None:
    """Used without the trainer's delegates: the state goes in, the same state comes back."""
    trained = _trainer(tmp_path, host)
    trained.fit()
    state = TrainState(step=7, epoch=2, batch=1, best_score=0.5, history=[{"epoch": 0}])
    path = trained.checkpointer.save(state, "other.pt")
    ckpt = load_checkpoint(path, torch.device("cpu"))
    assert ckpt["train_state"]["step"] == 7 and ckpt["task_ids"] == trained.task_ids
    fresh = _trainer(tmp_path, host)
    assert fresh.checkpointer.load(ckpt, model_only=True) is None
    assert fresh.checkpointer.load(ckpt) == state
    assert fresh.optimizer.state_dict()["state"]  # the optimizer's moments came back too
    for a, b in zip(trained.weighter.state_dict().values(), fresh.weighter.state_dict().values()):
        assert torch.equal(a, b)


def test_the_checkpointer_resumes_and_refuses_as_the_trainer_did(
    tmp_path: Path, host: PluginHost
) -> None:
    assert _trainer(tmp_path / "none", host).checkpointer.resume() is None  # no last.pt
    trained = _trainer(tmp_path, host)
    trained.fit()
    resumed = _trainer(tmp_path, host).checkpointer.resume()
    assert resumed == trained.state
    other_seed = _trainer(tmp_path, host, seed=4).checkpointer
    with pytest.raises(CheckpointError, match=r"seed: checkpoint 3, config 4"):
        other_seed.resume()
    more_epochs = _trainer(tmp_path, host, trainer__epochs=3).checkpointer
    with pytest.raises(CheckpointError, match="--allow-config-change"):
        more_epochs.resume()
    state = more_epochs.resume(allow_change=True)
    assert state is not None and state.config_changes == [
        {"step": trained.state.step, "field": "trainer.epochs", "old": 2, "new": 3}
    ]


def test_train_state_round_trips_including_an_unset_best_score(
    tmp_path: Path, host: PluginHost
) -> None:
    trained = _trainer(tmp_path, host)
    trained.fit()
    trained.state.config_changes.append({"step": 3, "field": "optimizer.lr"})
    assert trained.state.best_score is None  # stored as nan, read back as None
    path = trained.save()
    assert path == trained.run_dir / LAST

    fresh = _trainer(tmp_path, host)
    assert fresh.state == TrainState()
    fresh.load_state_dict(load_checkpoint(path, torch.device("cpu")))
    assert fresh.state == trained.state
    for a, b in zip(trained.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)


def test_model_only_loads_weights_and_leaves_optimizer_and_loop_alone(
    tmp_path: Path, host: PluginHost
) -> None:
    trained = _trainer(tmp_path, host)
    trained.fit()
    ckpt = load_checkpoint(trained.save(), torch.device("cpu"))
    fresh = _trainer(tmp_path, host)
    fresh.load_state_dict(ckpt, model_only=True)
    assert fresh.optimizer.state_dict()["state"] == {}
    assert fresh.state == TrainState()  # evaluating best.pt must not rewind the loop
    for a, b in zip(trained.model.parameters(), fresh.model.parameters()):
        assert torch.equal(a, b)


def test_a_checkpoint_of_other_tasks_is_refused_by_name(tmp_path: Path, host: PluginHost) -> None:
    trained = _trainer(tmp_path, host)
    trained.fit()
    ckpt = load_checkpoint(trained.save(), torch.device("cpu"))
    ckpt["task_ids"] = ["a", "c"]
    with pytest.raises(CheckpointError, match=r"\['a', 'c'\]"):
        _trainer(tmp_path, host).load_state_dict(ckpt)
