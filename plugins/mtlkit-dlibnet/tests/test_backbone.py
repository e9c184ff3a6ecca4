"""The ``dlib_face`` backbone: mtlkit's backbone contract, its options, and a run end to end
(train, predict, export to ONNX checked against PyTorch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from mtlkit_dlibnet.backbone import DlibFaceBackbone, DlibFaceOptions

from mtlkit.errors import ConfigError
from mtlkit.testing import backbone_checks, parametrize_checks

OPTIONS = [
    {"pretrained": False},
    {"pretrained": False, "in_chans": 1, "embedding": False, "freeze": "level2"},
]


@parametrize_checks(backbone_checks(DlibFaceBackbone, OPTIONS, name="dlib_face"))
def test_conformance(check: Any) -> None:
    check()


def _trainable(backbone: DlibFaceBackbone) -> set[str]:
    return {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad}


def test_freeze_up_to_a_stage(weights_path: Path) -> None:
    every = {"stem", "level4", "level3", "level2", "level1", "level0", "fc"}
    assert _trainable(DlibFaceBackbone(DlibFaceOptions(freeze="none"))) == every
    assert _trainable(DlibFaceBackbone(DlibFaceOptions(freeze="level2"))) == {
        "level1", "level0", "fc"}
    assert _trainable(DlibFaceBackbone(DlibFaceOptions(freeze="all"))) == set()


def test_options_refuse_unknown_stages_and_a_frozen_missing_fc() -> None:
    with pytest.raises(ValueError, match="freeze must be one of none, stem, level4"):
        DlibFaceOptions(freeze="layer3")
    with pytest.raises(ConfigError, match="freeze: fc needs embedding: true"):
        DlibFaceBackbone(DlibFaceOptions(pretrained=False, embedding=False, freeze="fc"))


def test_feature_scale_leaves_the_direction(weights_path: Path) -> None:
    x = torch.rand(2, 3, 150, 150)
    plain = DlibFaceBackbone(DlibFaceOptions()).eval()
    scaled = DlibFaceBackbone(DlibFaceOptions(feature_scale=10.0)).eval()
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), 10 * plain(x), rtol=1e-5, atol=1e-6)
    assert plain.feature_dim == scaled.feature_dim == 128


def test_pretrained_and_random_differ_and_weights_file_errors(
    weights_path: Path, tmp_path: Path
) -> None:
    x = torch.rand(1, 3, 150, 150)
    with torch.no_grad():
        a = DlibFaceBackbone(DlibFaceOptions()).eval()(x)
        b = DlibFaceBackbone(DlibFaceOptions(weights_file=str(weights_path))).eval()(x)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="is not a file"):
        DlibFaceBackbone(DlibFaceOptions(weights_file=str(tmp_path / "none.dat")))
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01\x05hello")
    with pytest.raises(ConfigError, match="is not dlib's face-recognition ResNet"):
        DlibFaceBackbone(DlibFaceOptions(weights_file=str(bad)))


def test_data_config_asks_for_150_px_in_unit_range() -> None:
    cfg = DlibFaceBackbone(DlibFaceOptions(pretrained=False, in_chans=1)).data_config()
    assert cfg["input_size"] == (1, 150, 150) and cfg["fixed_input_size"]
    assert cfg["mean"] == (0.0,) and cfg["std"] == (1.0,)


def test_wrong_channel_count_is_named() -> None:
    backbone = DlibFaceBackbone(DlibFaceOptions(pretrained=False, in_chans=1))
    with pytest.raises(ValueError, match="built for 1 input channel"):
        backbone(torch.rand(1, 3, 150, 150))
    with pytest.raises(ValueError, match="at least 103 px a side"):
        backbone(torch.rand(1, 1, 64, 150))


def _config(out: Path) -> dict[str, Any]:
    return {
        "output_dir": str(out),
        "seed": 0,
        "trainer": {"epochs": 1, "batch_size": 16, "progress": "off", "plot": False},
        "optimizer": {"name": "adamw", "lr": 0.01, "shared_lr_scale": 0.001},
        "backbone": {"name": "dlib_face", "in_chans": 1, "freeze": "level1",
                     "feature_scale": 10.0},
        "tasks": [{"name": "face_identity", "embedding_dim": None, "embedding_bn": False},
                  {"name": "expression"}],
        "weighter": {"name": "equal"},
        "data": {"name": "synthetic_faces", "num_identities": 4,
                 "image_size": 112, "num_folds": 2, "val_fraction": 0.25},
    }


def test_train_predict_and_export_onnx(weights_path: Path, tmp_path: Path) -> None:
    """A run on drawn faces trains, predicts, and exports an ONNX model that matches PyTorch
    (the exporter itself runs the check and fails on a mismatch)."""
    pytest.importorskip("onnxruntime")
    from mtlkit.cli import main
    from mtlkit.export import run_exported

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path / "run")))
    assert main(["train", str(config)]) == 0
    ckpt = tmp_path / "run" / "last.pt"
    out = tmp_path / "model.onnx"
    assert main(["export", str(config), "--checkpoint", str(ckpt), "--format", "onnx",
                 "--out", str(out)]) == 0
    x = torch.rand(2, 1, 112, 112)
    got = run_exported("onnx", out, x)
    assert got and all(torch.isfinite(t).all() for t in got)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray((torch.rand(112, 112) * 255).byte().numpy()).save(images / f"{i}.png")
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(config), "--checkpoint", str(ckpt), str(images),
                 "--out", str(preds)]) == 0
    rows = preds.read_text().strip().splitlines()
    assert len(rows) == 4 and "expression" in rows[0]
    from mtlkit.export import sidecar_path

    check = json.loads(sidecar_path(out).read_text())["check"]
    diffs = check["max_abs_diff"]
    assert diffs and max(diffs.values()) <= 1e-3, check


def test_stages_split_for_the_branch_architecture() -> None:
    """``feature_stages`` gives the split architectures dlib's levels, input scaling included,
    and composing them is the trunk before its pooling."""
    pytest.importorskip("mtlkit_arch")
    from mtlkit_arch.stages import feature_stages

    backbone = DlibFaceBackbone(DlibFaceOptions(pretrained=False, in_chans=1)).eval()
    stages = feature_stages(backbone)
    assert stages.names == ["stem", "level4", "level3", "level2", "level1", "level0"]
    assert [tuple(s) for s in stages.shapes][-1] == (256, 2, 2)
    x = torch.rand(2, 1, 150, 150)
    with torch.no_grad():
        pooled = stages.segment(0, len(stages.names))(x).mean(dim=(2, 3))
        assert torch.allclose(backbone.net.fc(pooled), backbone(x), atol=1e-6)
