"""Resume and evaluate check the checkpoint against the run: forbidden, legitimate and harmless
config changes, a recorded and recomputed schedule, and a missing checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mtlkit import resume
from mtlkit.config import load_config
from mtlkit.errors import CheckpointError, ConfigError
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import tiny_config

pytestmark = pytest.mark.bad_input("resume with a changed config")


def _run(tmp_path: Path, host: PluginHost, **changes: Any) -> Trainer:
    trainer = Trainer(load_config(data=tiny_config(tmp_path, **changes)), host)
    trainer.fit()
    return trainer


def _resume(tmp_path: Path, host: PluginHost, allow: bool = False, **changes: Any) -> Trainer:
    trainer = Trainer(load_config(data=tiny_config(tmp_path, **changes)), host)
    trainer.fit(resume=True, allow_config_change=allow)
    return trainer


@pytest.mark.parametrize(
    ("change", "field", "old", "new"),
    [
        ({"data__seed": 1}, "data.seed", "0", "1"),
        ({"data__missing_fraction": 0.2}, "data.missing_fraction", "0.0", "0.2"),
        ({"data__num_samples": 200}, "data.num_samples", "160", "200"),
        ({"seed": 4}, "seed", "3", "4"),
        ({"backbone__hidden": [16]}, "backbone.hidden.0", "32", "16"),
        ({"trainer__batch_size": 8}, "trainer.batch_size", "16", "8"),
        ({"weighter": {"name": "static", "weights": {"a": 1, "b": 1}}}, "weighter.name",
         '"equal"', '"static"'),
    ],
)
def test_forbidden_change_is_an_error_naming_field_and_values(
    tmp_path: Path, host: PluginHost, change: dict[str, Any], field: str, old: str, new: str
) -> None:
    _run(tmp_path, host)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="cannot resume") as info:
        _resume(tmp_path, host, allow=True, **change)  # not even with the flag
    assert f"{field}: checkpoint {old}, config {new}" in str(info.value)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # nothing overwritten


def test_legitimate_change_needs_the_flag(tmp_path: Path, host: PluginHost) -> None:
    _run(tmp_path, host)
    with pytest.raises(CheckpointError, match="--allow-config-change") as info:
        _resume(tmp_path, host, trainer__epochs=4)
    assert "trainer.epochs: checkpoint 2, config 4" in str(info.value)


def test_more_epochs_rebuild_the_cosine_schedule_and_are_recorded(
    tmp_path: Path, host: PluginHost
) -> None:
    first = _run(tmp_path, host, scheduler={"name": "cosine"})
    k = first.state.step
    resumed = _resume(tmp_path, host, allow=True, scheduler={"name": "cosine"}, trainer__epochs=4)
    assert resumed.state.step == 2 * k
    rows = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows]
    # the old schedule reached 0 at step k; the new one is the 2k-step cosine from step k on:
    # it continues from that curve's value and never climbs back up
    for r in rows[k:]:
        assert r["lr"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * r["step"] / (2 * k))))
    assert all(b <= a for a, b in zip(lrs[k:], lrs[k + 1 :]))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config_changes"] == [
        {"step": k, "field": "trainer.epochs", "old": 2, "new": 4}
    ]
    assert results["config"]["trainer"]["epochs"] == 4


def test_a_new_lr_is_applied_not_just_recorded(tmp_path: Path, host: PluginHost) -> None:
    first = _run(tmp_path, host, trainer__epochs=1)
    k = first.state.step
    _resume(tmp_path, host, allow=True, trainer__epochs=2, optimizer__lr=0.02)
    rows = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert {r["lr"] for r in rows[:k]} == {0.01} and {r["lr"] for r in rows[k:]} == {0.02}
    changes = json.loads((tmp_path / "run" / "results.json").read_text())["config_changes"]
    assert {c["field"] for c in changes} == {"trainer.epochs", "optimizer.lr"}


def test_harmless_changes_need_no_flag(tmp_path: Path, host: PluginHost) -> None:
    _run(tmp_path, host, trainer__epochs=1)
    _resume(tmp_path, host, trainer__epochs=1, trainer__num_threads=1,
            trainer__log_every=5, trainer__eval_batch_size=7)


def test_resume_without_a_checkpoint_is_an_error(tmp_path: Path, host: PluginHost) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        _resume(tmp_path, host)


def test_resume_if_possible_starts_afresh_with_a_notice(
    tmp_path: Path, host: PluginHost, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = Trainer(load_config(data=tiny_config(tmp_path, trainer__epochs=1)), host)
    trainer.fit(resume="if-possible")
    assert "starting afresh" in capsys.readouterr().err
    assert trainer.state.step > 0


def test_classify_uses_declared_harmless_options() -> None:
    assert resume.classify("data.root") == "forbidden"
    assert resume.classify("data.root", ["data.root"]) == "harmless"
    assert resume.classify("weighter.lr") == "legitimate"
    assert resume.classify("weighter.name") == "forbidden"
    assert resume.classify("tasks.0.center_loss_weight") == "forbidden"
    assert resume.classify("output_dir") == "harmless"


@pytest.mark.bad_input("quiet failure")
def test_select_metric_typo_fails_before_training(tmp_path: Path, host: PluginHost) -> None:
    cfg = tiny_config(tmp_path, trainer__select="best", trainer__select_metric="a/acuracy")
    with pytest.raises(ConfigError, match="did you mean 'a/accuracy'"):
        Trainer(load_config(data=cfg), host)
    assert not (tmp_path / "run" / "steps.jsonl").exists()


@pytest.mark.bad_input("quiet failure")
def test_batch_larger_than_the_training_set_is_noticed(
    tmp_path: Path, host: PluginHost, capsys: pytest.CaptureFixture[str]
) -> None:
    Trainer(load_config(data=tiny_config(tmp_path, trainer__batch_size=4096)), host)
    assert "larger than the training set" in capsys.readouterr().err


@pytest.mark.bad_input("quiet failure")
def test_one_line_per_epoch_without_a_terminal(
    tmp_path: Path, host: PluginHost, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(tmp_path, host, trainer__epochs=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2")
    assert "loss a=" in lines[0] and "weight a=1.000" in lines[0] and "val a/accuracy=" in lines[0]


def test_one_line_per_epoch_beside_the_progress_bar(
    tmp_path: Path, host: PluginHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal (a bar shown) training showed only the transient bar (issue 27 B): the
    epoch lines with the validation metrics are written above it, as in logs."""
    _run(tmp_path, host, trainer__epochs=2, trainer__progress="on")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2")
    assert "val a/accuracy=" in lines[1]


def test_spelling_out_a_default_is_no_change(tmp_path: Path, host: PluginHost) -> None:
    _run(tmp_path, host, trainer__epochs=1)
    _resume(tmp_path, host, trainer__epochs=1, data__seed=0, data__noise=0.5)


def test_shared_lr_scale_cannot_change_on_resume() -> None:
    """It splits the optimizer into other parameter groups: the saved state would not fit."""
    assert resume.classify("optimizer.shared_lr_scale") == "forbidden"
    assert resume.classify("optimizer.lr") != "forbidden"
