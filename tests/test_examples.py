"""The examples of using mtlkit from other training loops run, with the real packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("weighter", ["nash_mtl", "dynamic", "uncertainty"])
def test_plain_loop_trains(weighter: str) -> None:
    history = _load("plain_loop").main(steps=40, weighter=weighter)
    assert sum(history[-5:]) < sum(history[:5])


def test_plain_loop_is_about_forty_lines() -> None:
    lines = (EXAMPLES / "plain_loop.py").read_text().splitlines()
    assert len(lines) <= 45


def test_lightning_manual_optimisation() -> None:
    pytest.importorskip("lightning")
    module = _load("lightning_module").main(max_steps=16, weighter="pcgrad")
    assert module.step.step == 16
    assert all(p.grad is not None for p in module.encoder.parameters())


def test_accelerate_loop() -> None:
    pytest.importorskip("accelerate")
    totals = _load("accelerate_loop").main(epochs=2, weighter="cagrad")
    assert len(totals) == 16 and totals[-1] < totals[0]
