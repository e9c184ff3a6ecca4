"""TF1-style RMSProp: the paper authors' optimizer, checked against its formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlkit.config import load_config
from mtlkit.optim import TFRMSprop
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import tiny_config


def test_two_steps_follow_tensorflow_1s_update() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = TFRMSprop([p], lr=0.1, decay=0.9, momentum=0.9, eps=1.0)
    ms, mom, value = torch.ones(2), torch.zeros(2), p.detach().clone()
    for g in (torch.tensor([0.5, -3.0]), torch.tensor([0.1, 2.0])):
        p.grad = g.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.1 * g / torch.sqrt(ms + 1.0)
        value = value - mom
        torch.testing.assert_close(p.detach(), value)


def test_differs_from_torch_rmsprop_at_the_papers_epsilon() -> None:
    """eps inside the root and a mean square starting at one: not torch.optim.RMSprop."""
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    tf = TFRMSprop([a], lr=0.1, eps=1.0)
    pt = torch.optim.RMSprop([b], lr=0.1, alpha=0.9, eps=1.0)
    a.grad = b.grad = torch.tensor([3.0])
    tf.step()
    pt.step()
    assert abs(float(a) - float(b)) > 1e-3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="TFRMSprop"):
        TFRMSprop([torch.nn.Parameter(torch.zeros(1))], lr=0.1, decay=1.0)


def test_trainer_builds_it_from_the_config(tmp_path: Path, host: PluginHost) -> None:
    cfg = tiny_config(tmp_path, optimizer={"name": "rmsprop", "lr": 0.01, "momentum": 0.9})
    trainer = Trainer(load_config(data=cfg), host)
    assert isinstance(trainer.optimizer, TFRMSprop)
    assert trainer.optimizer.defaults["eps"] == 1.0 and trainer.optimizer.defaults["decay"] == 0.9
    trainer.fit()


def test_shared_lr_scale_gives_the_trunk_a_slower_group(tmp_path: Path, host: PluginHost) -> None:
    """Heads keep lr (first group, the one logged); the shared trunk gets lr * scale."""
    cfg = tiny_config(tmp_path, optimizer={"name": "adamw", "lr": 0.01, "shared_lr_scale": 0.1})
    trainer = Trainer(load_config(data=cfg), host)
    heads, trunk = trainer.optimizer.param_groups
    shared = {id(p) for p in trainer.model.shared_parameters()}
    assert {id(p) for p in trunk["params"]} == shared
    assert shared.isdisjoint(id(p) for p in heads["params"])
    assert heads["lr"] == pytest.approx(0.01) and trunk["lr"] == pytest.approx(0.001)
    trainer.fit()


def test_shared_lr_scale_one_keeps_a_single_group(tmp_path: Path, host: PluginHost) -> None:
    trainer = Trainer(load_config(data=tiny_config(tmp_path)), host)
    assert len(trainer.optimizer.param_groups) == 1
