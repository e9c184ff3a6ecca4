"""mtlkit-headpose's own tests: discovery through the entry point, the task, the dataset, one run.

Skipped as a whole when the distribution is not installed (``pip install -e
docs/examples/mtlkit-headpose``): the repository's ``make test`` does not install it, CI's
``.ci/run`` does and then runs ``pytest docs/examples/mtlkit-headpose``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

try:
    metadata.distribution("mtlkit-headpose")
except metadata.PackageNotFoundError:
    pytest.skip(
        "mtlkit-headpose is not installed (pip install -e docs/examples/mtlkit-headpose)",
        allow_module_level=True,
    )

import torch
from mtlkit_headpose.data import PoseFacesData, PoseFacesOptions, rotate
from mtlkit_headpose.task import HeadRollOptions, HeadRollTask

from mtlkit.cli import main
from mtlkit.config import load_config
from mtlkit.errors import DataError
from mtlkit.plugins import PluginHost, reset_plugin_manager
from mtlkit.trainer import Trainer

HERE = Path(__file__).resolve().parents[1]
SMALL = {"num_identities": 6, "frames_per_sequence": 1, "image_size": 16, "num_folds": 3}
"""42 images of 16 x 16 px: setup takes milliseconds."""


def tiny_config(tmp_path: Path, **data: object) -> dict:
    return {
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
        "trainer": {"epochs": 2, "batch_size": 16, "progress": "off", "plot": False},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "backbone": {"name": "mlp", "in_features": 3 * 16 * 16, "hidden": [32]},
        "tasks": [{"name": "head_roll"}, {"name": "expression"}],
        "weighter": {"name": "equal"},
        "data": {"name": "synthetic_faces_pose", **SMALL, **data},
    }


# --- discovery -------------------------------------------------------------------------------


def test_registered_through_the_entry_point() -> None:
    host = PluginHost()
    assert "head_roll" in host.tasks.names()
    assert "synthetic_faces_pose" in host.datasets.names()
    assert host.tasks.entry("head_roll").dist == "mtlkit-headpose"
    assert host.tasks.resolve("head_roll") is HeadRollTask
    assert host.datasets.resolve("synthetic_faces_pose") is PoseFacesData


def test_entry_module_is_light() -> None:
    code = "import sys, mtlkit_headpose.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_example_config_validates(capsys: pytest.CaptureFixture[str]) -> None:
    reset_plugin_manager(None)
    assert main(["config", "validate", str(HERE / "headpose.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_bad_options_name_the_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    reset_plugin_manager(None)
    code = main(["config", "validate", str(HERE / "headpose.yaml"), "-o", "tasks.0.scale=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "tasks.0.scale" in err and "mtlkit-headpose" in err


# --- the task --------------------------------------------------------------------------------


def test_missing_angles_give_zero_loss_and_gradient() -> None:
    task = HeadRollTask("head_roll", HeadRollOptions())
    head = task.build_head(4, {})
    out = head(torch.randn(3, 4))
    assert out.shape == (3,)
    loss = task.loss(out, torch.full((3,), float("nan")))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in head.parameters())


def test_metrics_are_in_degrees() -> None:
    task = HeadRollTask("head_roll", HeadRollOptions(scale=10.0, tolerance=2.0))
    meter = task.new_meter()
    # predictions 1.0, 0.0, 0.5 units = 10, 0, 5 degrees; the third sample is unlabelled
    meter.update(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([9.0, 3.0, float("nan")]), {})
    m = meter.compute()
    assert m["count"] == 2
    assert m["mae"] == pytest.approx(2.0)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 9) / 2))
    assert m["within_tol"] == pytest.approx(0.5)
    step = task.step_metric(torch.tensor([1.0, 0.0]), torch.tensor([9.0, 3.0]))
    assert step.item() == pytest.approx(0.5)


# --- the dataset -----------------------------------------------------------------------------


def test_rotation_is_counter_clockwise() -> None:
    img = torch.zeros(1, 1, 9, 9, dtype=torch.uint8)
    img[0, 0, 4, 7] = 255  # right of the centre
    moved = (rotate(img, torch.tensor([90.0]))[0, 0] > 100).nonzero().tolist()
    assert moved == [[1, 4]]  # above the centre


def test_every_split_carries_the_angle() -> None:
    data = PoseFacesData(PoseFacesOptions(**SMALL, max_roll=20.0))
    splits = data.setup(["head_roll", "expression"], {"in_chans": 1})
    seen = []
    for ds in splits.named().values():
        roll = ds.targets["head_roll"]
        assert roll.dtype == torch.float32 and not torch.isnan(roll).any()
        assert roll.abs().max() <= 20.0
        assert torch.equal(roll, data.roll[ds.meta["index"]])
        seen.append(roll)
    assert sum(len(r) for r in seen) == 6 * 7
    assert splits.info["head_roll"]["unit"] == "degrees"
    # same seed, same angles and pixels
    again = PoseFacesData(PoseFacesOptions(**SMALL, max_roll=20.0))
    again_splits = again.setup(["head_roll", "expression"], {"in_chans": 1})
    assert torch.equal(again.roll, data.roll)
    assert torch.equal(again_splits.train.inputs, splits.train.inputs)


def test_flip_augmentation_is_refused_with_the_angle_target() -> None:
    data = PoseFacesData(PoseFacesOptions(**SMALL, augment=True))
    with pytest.raises(DataError, match="negates head_roll"):
        data.setup(["head_roll"], {"in_chans": 1})
    data.setup(["expression"], {"in_chans": 1})  # without head_roll, flips are fine


# --- one run through the real trainer ---------------------------------------------------------


def test_trains_through_the_trainer(tmp_path: Path) -> None:
    reset_plugin_manager(None)
    results = Trainer(load_config(data=tiny_config(tmp_path))).fit()
    metrics = results["metrics"]["test"]["head_roll"]
    assert {"mae", "rmse", "within_tol", "count"} <= set(metrics)
    assert math.isfinite(metrics["mae"])
    assert (tmp_path / "run" / "results.json").is_file()
