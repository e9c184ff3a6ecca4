"""The trainer's checkpoint methods (mtlkit.checkpointing): what a checkpoint holds comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlkit.checkpoint import load_checkpoint
from mtlkit.checkpointing import LAST, Checkpointing, TrainState
from mtlkit.config import load_config
from mtlkit.errors import CheckpointError
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import tiny_config


def _trainer(tmp_path: Path, host: PluginHost, **changes: object) -> Trainer:
    return Trainer(load_config(data=tiny_config(tmp_path, **changes)), host)


def test_the_trainer_checkpoints_through_the_mixin(tmp_path: Path, host: PluginHost) -> None:
    assert isinstance(_trainer(tmp_path, host), Checkpointing)


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
