"""The distribution is found through its entry point, stays light to import, and every weighter
runs, checkpoints and resumes bit-identically in the real mtlkit trainer."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import mtlkit_weighters
import pytest
import torch
from mtlkit_weighters.plugin import WEIGHTERS

from mtlkit.config import load_config
from mtlkit.runlog import read_steps
from mtlkit.trainer import Trainer

from .conftest import CLASSES, NAMES, VARIANTS, host, variant_id


def test_found_through_the_entry_point() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group="mtlkit")}
    assert eps["weighters"].value == "mtlkit_weighters.plugin"
    assert eps["weighters"].dist is not None and eps["weighters"].dist.name == "mtlkit-weighters"
    h = host()
    assert "weighters" in [p.name for p in h.plugins()]
    assert not [p for p in h.broken() if p.name == "weighters"]
    assert NAMES == sorted(WEIGHTERS)  # the tests' names come from the registry: all of them
    for name in NAMES:
        entry = h.weighters.entry(name)
        assert entry.dist == "mtlkit-weighters" and entry.summary == WEIGHTERS[name][1]
        cls = h.weighters.resolve(name)
        assert f"{cls.__module__}:{cls.__qualname__}" == f"mtlkit_weighters.{WEIGHTERS[name][0]}"


def test_the_package_exports_every_registered_class_and_nothing_else() -> None:
    """``WEIGHTERS`` is the one list: the package's exports are read from it."""
    classes = {cls.__name__ for cls in CLASSES.values()}
    assert set(mtlkit_weighters.__all__) == {"WEIGHTERS", "__version__", *classes}
    for name, cls in CLASSES.items():
        assert getattr(mtlkit_weighters, cls.__name__) is cls, name


def test_entry_point_module_does_not_import_torch() -> None:
    code = ("import sys, mtlkit_weighters, mtlkit_weighters.plugin; "
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _config(tmp_path: Path, weighter: dict[str, Any], epochs: int = 3) -> dict[str, Any]:
    return {
        "output_dir": str(tmp_path / "run"),
        "seed": 5,
        "trainer": {"epochs": epochs, "batch_size": 32, "progress": "off", "plot": False,
                    "checkpoint_every": 4},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "backbone": {"name": "mlp", "in_features": 8, "hidden": [16]},
        "tasks": [{"name": "classification", "id": "a"}, {"name": "classification", "id": "b"}],
        "weighter": weighter,
        "data": {"name": "synthetic", "num_samples": 160, "num_features": 8},
    }


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_real_trainer_resume_is_bit_identical(tmp_path: Path, variant: tuple[str, dict]) -> None:
    name, opts = variant
    weighter = {"name": name, **opts}
    h = host()
    full = Trainer(load_config(data=_config(tmp_path / "full", weighter)), h)
    full.fit()
    part_cfg = _config(tmp_path / "part", weighter)
    part = Trainer(load_config(data=part_cfg), h)
    part.config.trainer.max_steps = 4  # stop mid-run (epoch 1 of 3)
    part.fit()
    assert part.state.step == 4
    resumed = Trainer(load_config(data=part_cfg), h)
    resumed.fit(resume=True, allow_config_change=True)  # max_steps lifted
    assert resumed.state.step == full.state.step > 4
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for key, value in full.weighter.state_dict().items():
        other = resumed.weighter.state_dict()[key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    rows_full = read_steps(full.run_dir / "steps.jsonl")
    rows_resumed = read_steps(resumed.run_dir / "steps.jsonl")
    assert rows_full == rows_resumed
    assert all(r[f"weight/{t}"] == r[f"weight/{t}"] for r in rows_full for t in ("a", "b"))
