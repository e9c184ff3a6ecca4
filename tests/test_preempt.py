"""SIGINT, SIGTERM and SIGUSR1 stop training after the current step with a checkpoint; resuming
ends bit-identical to an uninterrupted run, with nothing lost since the last step."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mtlkit.checkpoint import load_checkpoint
from mtlkit.config import load_config
from mtlkit.plugins import PluginHost
from mtlkit.preempt import (
    EXIT_INTERRUPTED,
    REPEAT_GRACE_S,
    SIGNALS,
    StopRequests,
    TrainingInterrupted,
)
from mtlkit.trainer import Trainer

from .conftest import tiny_config

CHANGES = {
    "trainer__epochs": 3,
    "scheduler": {"name": "cosine"},
    "backbone__dropout": 0.2,
    "optimizer__name": "sgd",
}


def _signal_at(trainer: Trainer, step: int, sig: int) -> None:
    """Make the trainer's process receive ``sig`` during step ``step``."""
    train_step = trainer.train_step

    def hooked(batch):  # type: ignore[no-untyped-def]
        if trainer.state.step == step:
            os.kill(os.getpid(), sig)
        return train_step(batch)

    trainer.train_step = hooked  # type: ignore[method-assign]


def _params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


@pytest.mark.bad_input("signal during training")
def test_signals_at_random_steps_then_resume_is_bit_identical(
    tmp_path: Path, host: PluginHost
) -> None:
    full = Trainer(load_config(data=tiny_config(tmp_path / "full", **CHANGES)), host)
    full.fit()
    cfg = tiny_config(tmp_path / "part", **CHANGES)
    rng = random.Random(7)
    step = 0
    before = {s: signal.getsignal(s) for s in SIGNALS}
    for sig in SIGNALS:  # SIGINT, SIGTERM, SIGUSR1 in turn, each at a random later step
        step += rng.randint(1, 5)
        trainer = Trainer(load_config(data=cfg), host)
        _signal_at(trainer, step, sig)
        with pytest.raises(TrainingInterrupted) as info:
            trainer.fit(resume="if-possible")
        assert info.value.exit_code == EXIT_INTERRUPTED
        assert info.value.signame == signal.Signals(sig).name
        # the step under way finished and was saved: nothing since it is lost
        saved = load_checkpoint(trainer.run_dir / "last.pt")
        assert int(saved["train_state"]["step"]) == step + 1 == trainer.state.step
        assert {s: signal.getsignal(s) for s in SIGNALS} == before  # handlers restored
    resumed = Trainer(load_config(data=cfg), host)
    resumed.fit(resume=True)
    assert resumed.state.step == full.state.step
    for a, b in zip(_params(full), _params(resumed)):
        assert torch.equal(a, b)


def test_handlers_are_restored_and_off_when_disabled() -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    with StopRequests() as stop:
        assert all(signal.getsignal(s) == stop._handle for s in SIGNALS)
    assert {s: signal.getsignal(s) for s in SIGNALS} == before
    with StopRequests(enabled=False):
        assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_a_repeat_within_the_grace_is_the_same_request_and_a_later_one_aborts() -> None:
    # Python's own SIGINT handler, even where the test run was started with SIGINT ignored
    # (a background job under nohup), so "the previous handler" is the one that raises
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopRequests() as stop:
            stop._handle(signal.SIGTERM, None)
            assert stop.requested()
            stop._handle(signal.SIGTERM, None)  # the same request delivered twice (a launcher)
            assert signal.getsignal(signal.SIGTERM) == stop._handle
            stop._since -= REPEAT_GRACE_S + 1  # later: the user insists
            with pytest.raises(KeyboardInterrupt):
                stop._handle(signal.SIGINT, None)  # SIGINT's previous handler raises
    finally:
        signal.signal(signal.SIGINT, outer)


@pytest.mark.bad_input("signal during training")
def test_cli_sigterm_exits_75_and_says_how_to_resume(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg["backbone"]["hidden"] = [256, 256]
    cfg["trainer"].update(epochs=200, num_threads=1)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "mtlkit", "train", str(path), "-o", "seed=3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    steps = tmp_path / "run" / "steps.jsonl"
    deadline = time.monotonic() + 120
    while not (steps.exists() and len(steps.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "stopped by SIGTERM" in err
    assert f"resume with: mtlkit train {path} -o seed=3 --resume" in err
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    logged = len(steps.read_text().splitlines())
    assert int(saved["train_state"]["step"]) == logged  # every logged step is in the checkpoint
