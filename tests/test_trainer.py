"""Trainer: learning, bit-identical resume, atomic checkpoints, logs, non-finite policy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from unittest import mock

import pytest
import torch

from mtlkit.checkpoint import load_checkpoint, save_checkpoint
from mtlkit.config import load_config
from mtlkit.errors import CheckpointError, ConfigError, NonFiniteLossError
from mtlkit.plugins import PluginHost
from mtlkit.runlog import read_steps
from mtlkit.trainer import Trainer

from .conftest import tiny_config


def _train(tmp_path: Path, host: PluginHost, **changes) -> tuple[Trainer, dict]:
    trainer = Trainer(load_config(data=tiny_config(tmp_path, **changes)), host)
    return trainer, trainer.fit()


def test_loss_decreases_and_outputs_written(tmp_path: Path, host: PluginHost) -> None:
    trainer, results = _train(tmp_path, host, trainer__epochs=6)
    rows = read_steps(trainer.run_dir / "steps.jsonl")
    first = sum(rows[0][f"loss/{t}"] for t in ("a", "b"))
    last = sum(rows[-1][f"loss/{t}"] for t in ("a", "b"))
    assert last < 0.5 * first
    assert results["metrics"]["test"]["a"]["accuracy"] > 0.5  # 4 classes: chance is 0.25
    saved = json.loads((trainer.run_dir / "results.json").read_text())
    assert saved["config"]["weighter"]["name"] == "equal"
    assert {"torch", "mtlkit", "python"} <= set(saved["versions"])
    assert saved["timing"]["train_seconds"] > 0
    assert len(rows) == trainer.state.step == 6 * trainer.steps_per_epoch
    epochs = [json.loads(x) for x in (trainer.run_dir / "epochs.jsonl").read_text().splitlines()]
    assert len(epochs) == 6 and "val" in epochs[0]
    # each epoch keeps its time (summed across resumes in timing.epoch_seconds) and its
    # training means, so a report needs no per-step log
    assert all(row["seconds"] > 0 for row in epochs)
    assert saved["timing"]["epoch_seconds"] == pytest.approx(
        sum(row["seconds"] for row in epochs), abs=1e-2
    )
    for e, row in enumerate(epochs):
        mine = [r for r in rows if r["epoch"] == e]
        for key in ("loss/a", "loss/b", "weight/a", "weight/b"):
            assert row["train"][key] == pytest.approx(sum(r[key] for r in mine) / len(mine))


def _params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


@pytest.mark.parametrize(
    "weighter", [{"name": "equal"}, {"name": "static", "weights": {"a": 1, "b": 0.3}}]
)
def test_resume_is_bit_identical(tmp_path: Path, host: PluginHost, weighter: dict) -> None:
    changes = {
        "trainer__epochs": 3,
        "weighter": weighter,
        "scheduler": {"name": "cosine"},
        "backbone__dropout": 0.2,
        "optimizer__name": "sgd",
    }
    full, _ = _train(tmp_path / "full", host, **changes)
    # interrupted run: stop after 10 steps (mid-epoch), then resume to the end
    cfg = tiny_config(tmp_path / "part", **changes)
    cfg["trainer"]["checkpoint_every"] = 5
    part = Trainer(load_config(data=cfg), host)
    part.config.trainer.max_steps = 10
    part.fit()
    assert part.state.step == 10 and part.state.batch != 0
    resumed = Trainer(load_config(data=cfg), host)
    resumed.fit(resume=True, allow_config_change=True)  # max_steps lifted: recorded
    assert resumed.state.step == full.state.step
    assert resumed.state.config_changes == [
        {"step": 10, "field": "trainer.max_steps", "old": 10, "new": None}
    ]
    for a, b in zip(_params(full), _params(resumed)):
        assert torch.equal(a, b)
    steps_full = read_steps(full.run_dir / "steps.jsonl")
    steps_resumed = read_steps(resumed.run_dir / "steps.jsonl")
    assert steps_full == steps_resumed


@pytest.mark.bad_input("checkpoint")
def test_interrupted_checkpoint_write_keeps_previous(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"x": torch.ones(3)}, path)

    def crash(obj, fh, *a, **k):
        fh.write(b"partial garbage")
        raise KeyboardInterrupt("killed mid-write")

    with (
        mock.patch("mtlkit.checkpoint.torch.save", side_effect=crash),
        pytest.raises(KeyboardInterrupt),
    ):
        save_checkpoint({"x": torch.zeros(3)}, path)
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


@pytest.mark.bad_input("checkpoint")
def test_malicious_pickle_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)


@pytest.mark.bad_input("checkpoint")
def test_corrupt_checkpoint_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        load_checkpoint(path)


def test_csv_log_and_step_scheduler(tmp_path: Path, host: PluginHost) -> None:
    trainer, _ = _train(
        tmp_path,
        host,
        trainer__log_format="csv",
        scheduler={"name": "step", "step_size": 1, "gamma": 0.5},
    )
    rows = read_steps(trainer.run_dir / "steps.csv")
    assert rows[0]["lr"] == pytest.approx(0.01)
    assert rows[-1]["lr"] == pytest.approx(0.005)


@pytest.mark.bad_input("non-finite loss")
def test_nonfinite_loss_stops_with_task_and_step(tmp_path: Path, host: PluginHost) -> None:
    trainer = Trainer(load_config(data=tiny_config(tmp_path)), host)
    trainer.data.train.inputs[5:] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"task\(s\) a, b at step 0"):
        trainer.fit()


@pytest.mark.bad_input("non-finite loss")
def test_nonfinite_skip_policy_counts(tmp_path: Path, host: PluginHost) -> None:
    trainer = Trainer(load_config(data=tiny_config(tmp_path, trainer__on_nonfinite="skip")), host)
    bad = trainer.data.train.inputs
    bad[0] = float("nan")  # poisons exactly the batches containing sample 0
    results = trainer.fit()
    assert results["skipped_nonfinite"] == 2  # once per epoch
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_best_selection_uses_val(tmp_path: Path, host: PluginHost) -> None:
    trainer, results = _train(
        tmp_path,
        host,
        trainer__select="best",
        trainer__select_metric="a/accuracy",
        trainer__epochs=3,
    )
    assert results["selected"].startswith("best a/accuracy")
    assert (trainer.run_dir / "best.pt").exists()


def test_unwritable_output_dir_reported_before_training(tmp_path: Path, host: PluginHost) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = tiny_config(tmp_path)
    cfg["output_dir"] = str(blocker / "sub")
    with pytest.raises(ConfigError, match="output_dir: cannot write"):
        Trainer(load_config(data=cfg), host)


def test_partial_labels_train(tmp_path: Path, host: PluginHost) -> None:
    _, results = _train(tmp_path, host, data__missing_fraction=0.6, trainer__epochs=3)
    for task in ("a", "b"):
        assert results["metrics"]["test"][task]["accuracy"] > 0.3


def test_bf16_autocast_on_cpu_trains(tmp_path: Path, host: PluginHost) -> None:
    trainer, results = _train(tmp_path, host, trainer__precision="bf16", trainer__epochs=3)
    rows = read_steps(trainer.run_dir / "steps.jsonl")
    assert all(math.isfinite(r["loss/a"]) for r in rows)
    assert rows[-1]["loss/a"] < rows[0]["loss/a"]
    assert results["metrics"]["test"]["a"]["accuracy"] > 0.4


def test_fp16_needs_cuda(tmp_path: Path, host: PluginHost) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        Trainer(load_config(data=tiny_config(tmp_path, trainer__precision="fp16")), host)
