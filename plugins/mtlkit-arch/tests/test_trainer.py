"""Through the real Trainer and config: every architecture by name, resume on one of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mtlkit import hookimpl
from mtlkit.config import load_config
from mtlkit.errors import CheckpointError, ConfigError
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import ARCHS, TinyCNN


class _TinyPlugin:
    @hookimpl
    def register_backbones(self, registry: Any) -> None:
        registry.add("tiny_cnn", TinyCNN)


@pytest.fixture
def tiny_host() -> PluginHost:
    h = PluginHost()
    h.pm.register(_TinyPlugin(), name="tiny-cnn-test")
    return h


def _config(tmp_path: Path, arch: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "output_dir": str(tmp_path / "run"),
        "seed": 1,
        "trainer": {"epochs": 1, "batch_size": 16, "progress": "off", "plot": False},
        "backbone": {"name": "tiny_cnn"},
        "architecture": arch,
        "tasks": [{"name": "classification", "id": "a"}, {"name": "classification", "id": "b"}],
        "weighter": {"name": "pcgrad"},
        "data": {"name": "synthetic", "num_samples": 64, "num_features": 16},
        **extra,
    }


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_fit_by_name(tmp_path: Path, tiny_host: PluginHost, name: str) -> None:
    results = Trainer(load_config(data=_config(tmp_path, {"name": name})), tiny_host).fit()
    assert set(results["metrics"]["test"]) == {"a", "b"}
    if name != "hps":
        assert results["config"]["architecture"]["name"] == name


def test_unknown_split_at_from_a_config(tmp_path: Path, tiny_host: PluginHost) -> None:
    cfg = load_config(data=_config(tmp_path, {"name": "branch", "split_at": "layer3"}))
    with pytest.raises(ConfigError, match="its stages are stem, s0, s1, s2"):
        Trainer(cfg, tiny_host)


def test_unknown_option_names_the_plugin(tmp_path: Path, tiny_host: PluginHost) -> None:
    cfg = load_config(data=_config(tmp_path, {"name": "mmoe", "experts": 4}))
    with pytest.raises(ConfigError, match=r"architecture\.experts: unknown field \(architecture"
                       r" 'mmoe' from mtlkit-arch\)"):
        Trainer(cfg, tiny_host)


def test_resume_is_bit_identical(tmp_path: Path, tiny_host: PluginHost) -> None:
    arch = {"name": "branch", "split_at": "s0"}
    full = Trainer(load_config(data=_config(tmp_path / "full", arch,
                                            trainer={"epochs": 2, "batch_size": 16,
                                                     "progress": "off", "plot": False})),
                   tiny_host)
    full.fit()
    part_cfg = _config(tmp_path / "part", arch, trainer={"epochs": 1, "batch_size": 16,
                                                         "progress": "off", "plot": False})
    Trainer(load_config(data=part_cfg), tiny_host).fit()
    part_cfg["trainer"]["epochs"] = 2
    resumed = Trainer(load_config(data=part_cfg), tiny_host)
    resumed.fit(resume=True, allow_config_change=True)
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n


def test_changing_the_architecture_on_resume_is_refused(tmp_path: Path,
                                                        tiny_host: PluginHost) -> None:
    Trainer(load_config(data=_config(tmp_path, {"name": "hps"})), tiny_host).fit()
    other = Trainer(load_config(data=_config(tmp_path, {"name": "branch"})), tiny_host)
    with pytest.raises(CheckpointError,
                       match=r'architecture\.name: checkpoint \(unset\), config "branch"'):
        other.fit(resume=True)
