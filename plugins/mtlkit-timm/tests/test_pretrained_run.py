"""A run whose backbone starts from a local weights file (the offline path to pretrained
accuracy): the file's weights are what the trunk of the built run holds, through the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mtlkit import load_config
from mtlkit.cli import main
from mtlkit.trainer import Trainer

pytest.importorskip("mtlkit_face")


def _config(tmp_path: Path, weights: Path) -> Path:
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "trainer": {"epochs": 1, "max_steps": 1, "batch_size": 16, "progress": "off",
                    "plot": False, "eval_every": 0},
        "backbone": {"name": "timm", "model_name": "test_resnet", "in_chans": 1,
                     "pretrained": True, "weights_file": str(weights)},
        "tasks": [{"name": "face_identity"}, {"name": "expression"}],
        "weighter": {"name": "equal"},
        "data": {"name": "synthetic_faces", "num_identities": 6, "image_size": 32,
                 "num_folds": 3, "val_fraction": 0.0},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_grayscale_run_starts_from_an_rgb_state_dict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ImageNet-style RGB file into a grayscale (in_chans: 1) face run: timm sums the first
    convolution over its colour channels; every other weight is the file's, bit for bit."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import timm

    torch.manual_seed(1)
    source = timm.create_model("test_resnet")  # in_chans 3, with a classifier (dropped)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    weights = tmp_path / "test_resnet.pth"
    torch.save(state, weights)

    trainer = Trainer(load_config(_config(tmp_path, weights)))
    loaded = trainer.model.backbone.model.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    first = "conv1.0.weight"
    assert loaded[first].shape[1] == 1
    assert torch.allclose(loaded[first], state[first].sum(dim=1, keepdim=True))
    for key, value in loaded.items():
        if key != first:
            assert torch.equal(value, state[key]), key

    # and the run trains from there
    assert main(["train", str(_config(tmp_path, weights))]) == 0
    assert (tmp_path / "run" / "results.json").exists()
