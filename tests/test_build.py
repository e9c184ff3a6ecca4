"""Building a run apart from running it (mtlkit.build): the same parts, drawn in the same order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlkit import distributed
from mtlkit.build import BuiltModel, BuiltRun, build_model, build_run, start_process
from mtlkit.config import load_config
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import tiny_config


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_model_gives_the_trainers_model_bit_for_bit_and_writes_nothing(
    tmp_path: Path, host: PluginHost
) -> None:
    config = load_config(data=tiny_config(tmp_path))
    built = build_model(config, host)
    assert isinstance(built, BuiltModel) and not isinstance(built, BuiltRun)
    assert built.task_ids == ["a", "b"] and [t.name for t in built.tasks] == ["a", "b"]
    assert not Path(config.output_dir).exists()  # no run folder, no logs
    trainer = Trainer(config, host)
    assert _equal_states(built.model, trainer.model)


def test_build_run_draws_from_the_rng_as_the_trainer_does(
    tmp_path: Path, host: PluginHost
) -> None:
    """Model, heads, weighter and optimizer in one order: after building, the RNG is where the
    trainer leaves it, so the first batch trains on the same draws."""
    config = load_config(data=tiny_config(tmp_path))
    device = start_process(config)
    built = build_run(config, host, device, distributed.DistInfo())
    after_build = torch.get_rng_state()
    trainer = Trainer(config, host)
    assert torch.equal(after_build, torch.get_rng_state())
    assert _equal_states(built.model, trainer.model)
    assert _equal_states(built.weighter, trainer.weighter)
    assert built.steps_per_epoch == trainer.steps_per_epoch == trainer.plan.num_batches > 0
    groups = [len(g["params"]) for g in built.optimizer.param_groups]
    assert groups == [len(g["params"]) for g in trainer.optimizer.param_groups]
    assert built.scheduler is None and built.ddp is None and built.scaler is None


def test_the_trainer_runs_the_parts_it_was_built_with(tmp_path: Path, host: PluginHost) -> None:
    trainer = Trainer(load_config(data=tiny_config(tmp_path)), host)
    built = trainer.built
    assert trainer.model is built.model and trainer.weighter is built.weighter
    assert trainer.optimizer is built.optimizer and trainer.plan is built.plan
    assert trainer.engine.model is built.model and trainer.engine.weighter is built.weighter


def test_shared_lr_scale_puts_the_trunk_in_a_group_of_its_own(
    tmp_path: Path, host: PluginHost
) -> None:
    config = load_config(data=tiny_config(tmp_path, optimizer={"name": "sgd", "lr": 0.1,
                                                               "shared_lr_scale": 0.1}))
    built = build_run(config, host, start_process(config), distributed.DistInfo())
    heads, trunk = built.optimizer.param_groups
    shared = {id(p) for p in built.model.shared_parameters()}
    assert all(id(p) in shared for p in trunk["params"])
    assert not any(id(p) in shared for p in heads["params"])
    assert trunk["lr"] == pytest.approx(0.01) and heads["lr"] == pytest.approx(0.1)
