"""A NaN loss mid-run stops training and keeps the last good checkpoint, loadable and finite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlkit.checkpoint import load_checkpoint
from mtlkit.config import load_config
from mtlkit.errors import NonFiniteLossError
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import tiny_config

BAD_STEP = 7


def _poisoned(tmp_path: Path, host: PluginHost, checkpoint_every: int) -> Trainer:
    """A trainer whose batch at step ``BAD_STEP`` (and only there) has NaN inputs."""
    # epoch-end checkpoints off: the test is about checkpoint_every and the failure-time save
    cfg = tiny_config(
        tmp_path, trainer__epochs=3, trainer__checkpoint_every=checkpoint_every,
        trainer__checkpoint_epochs=0,
    )
    trainer = Trainer(load_config(data=cfg), host)
    backward = trainer.engine.backward

    def poisoned(batch, step, epoch):
        if step == BAD_STEP:
            batch["input"] = torch.full_like(batch["input"], float("nan"))
        return backward(batch, step, epoch)

    trainer.engine.backward = poisoned  # type: ignore[method-assign]
    return trainer


@pytest.mark.bad_input("non-finite loss")
@pytest.mark.parametrize(("every", "kept_step"), [(0, BAD_STEP), (3, 6), (5, 5)])
def test_nan_mid_run_keeps_last_good_checkpoint(
    tmp_path: Path, host: PluginHost, every: int, kept_step: int
) -> None:
    trainer = _poisoned(tmp_path, host, every)
    with pytest.raises(NonFiniteLossError, match=rf"at step {BAD_STEP}.*last good checkpoint"):
        trainer.fit()
    state = load_checkpoint(trainer.run_dir / "last.pt")
    assert int(state["train_state"]["step"]) == kept_step
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    if every == 0:  # written at the failure: the weights from before the bad step
        live = trainer.model.state_dict()
        assert all(torch.equal(v, live[k]) for k, v in state["model"].items())
    # and it resumes: the run continues from the kept step once the data is fixed
    resumed = Trainer(load_config(data=tiny_config(tmp_path, trainer__epochs=3)), host)
    assert resumed.resume()
    assert resumed.state.step == kept_step
