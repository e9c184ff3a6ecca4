"""Core test fixtures: an isolated plugin host and tiny synthetic configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mtlkit.plugins import PluginHost, reset_plugin_manager


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginHost]:
    """A plugin host with only the built-ins (entry-point autoload switched off)."""
    h = PluginHost(load_entry_points=False)
    reset_plugin_manager(h)
    try:
        yield h
    finally:
        reset_plugin_manager(None)


def tiny_config(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """Two classification tasks on 16-d synthetic data, a 1-hidden-layer MLP; trains in < 1 s."""
    cfg: dict[str, Any] = {
        "output_dir": str(tmp_path / "run"),
        "seed": 3,
        "trainer": {"epochs": 2, "batch_size": 16, "progress": "off", "plot": False},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "backbone": {"name": "mlp", "in_features": 16, "hidden": [32]},
        "tasks": [
            {"name": "classification", "id": "a"},
            {"name": "classification", "id": "b"},
        ],
        "weighter": {"name": "equal"},
        "data": {"name": "synthetic", "num_samples": 160, "num_features": 16},
    }
    for key, value in changes.items():
        node = cfg
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg
