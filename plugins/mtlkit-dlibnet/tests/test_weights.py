"""Reading the published ``.dat`` file, and the errors for a missing or foreign file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from mtlkit_dlibnet.network import DlibFaceResNet
from mtlkit_dlibnet.serialization import DlibFormatError, DlibReader
from mtlkit_dlibnet.weights import (
    WeightsNotFoundError,
    layer_list,
    load_state_dict,
    locate_weights,
    read_state,
)


def test_the_file_fills_every_parameter_and_nothing_is_left(weights_path: Path) -> None:
    state, info = load_state_dict(weights_path)
    model = DlibFaceResNet()
    model.load_state_dict(state, strict=True)
    assert info["size"] == (150, 150)
    assert info["mean_rgb"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    convs = [layer for layer in layer_list() if layer.kind == "con"]
    assert len(convs) == 29  # the stem and 2 per block of 14 blocks
    assert sum(p.numel() for p in model.parameters()) == 5_607_488  # convs, fc; no affines
    # batch norms folded into affines: scales far from 1, as dlib publishes them
    assert state["stem.affine.weight"].abs().mean() > 1.0


def test_a_truncated_file_is_a_format_error(weights_path: Path) -> None:
    data = weights_path.read_bytes()
    with pytest.raises(DlibFormatError, match="unexpected end of data"):
        read_state(DlibReader(data[: len(data) // 2]))


def test_another_network_is_refused_where_it_differs(weights_path: Path, tmp_path: Path) -> None:
    data = bytearray(weights_path.read_bytes())
    at = data.index(b"con_4")  # the stem's first convolution record: make it a relu
    data[at : at + 5] = b"relu_"
    with pytest.raises(DlibFormatError, match="expected 'con_4' or 'con_5' or 'con_6'"):
        read_state(DlibReader(bytes(data)))


def test_trailing_bytes_are_an_error(weights_path: Path) -> None:
    with pytest.raises(DlibFormatError, match="1 bytes left after the network"):
        read_state(DlibReader(weights_path.read_bytes() + b"\x00"))


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsNotFoundError, match="pip install face_recognition_models"):
        locate_weights()


def test_locating_does_not_import_the_package(weights_path: Path) -> None:
    """Its ``__init__`` needs pkg_resources, which current setuptools lacks."""
    import sys

    assert weights_path.name == "dlib_face_recognition_resnet_model_v1.dat"
    assert "face_recognition_models" not in sys.modules


def test_weights_load_as_float32(weights_path: Path) -> None:
    state, _ = load_state_dict(weights_path)
    assert {v.dtype for v in state.values()} == {torch.float32}
