"""MultiTaskModel is an ordinary module: state_dict round-trip and torch.export."""

from __future__ import annotations

import pytest
import torch

from mtlkit.builtin.hps import MultiTaskModel
from mtlkit.builtin.mlp import MLPBackbone, MLPOptions


def _model() -> MultiTaskModel:
    backbone = MLPBackbone(MLPOptions(in_features=6, hidden=[8]))
    return MultiTaskModel(backbone, {"a": torch.nn.Linear(8, 3), "b": torch.nn.Linear(8, 2)})


def test_forward_returns_features_and_outputs() -> None:
    features, outputs = _model()(torch.randn(4, 6))
    assert features.shape == (4, 8)
    assert outputs["a"].shape == (4, 3) and outputs["b"].shape == (4, 2)


def test_state_dict_round_trip() -> None:
    a, b = _model(), _model()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 6)
    torch.testing.assert_close(a(x)[1]["a"], b(x)[1]["a"])


def test_torch_export() -> None:
    model = _model().eval()
    x = torch.randn(2, 6)
    exported = torch.export.export(model, (x,))
    _features, outputs = exported.module()(x)
    torch.testing.assert_close(outputs["b"], model(x)[1]["b"])


@pytest.mark.slow
def test_torch_compile() -> None:
    model = _model().eval()
    x = torch.randn(2, 6)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x)[1]["a"], model(x)[1]["a"])
