"""Predict and export from a checkpoint alone: a run trained on image files on disk gives the
same rows, embeddings and exported model once its data is moved away (the checkpoint stores the
class names and the input layout), and an older checkpoint that stores no layout says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mtlkit.checkpoint import load_checkpoint, save_checkpoint
from mtlkit.cli import main
from mtlkit.export import run_exported, sidecar_path

from .conftest import expect_cli_error, face_config

pytest.importorskip("mtlkit_timm")


def _write_faces(root: Path) -> Path:
    """8 people x 2 expressions x 3 grayscale 32 px PNGs and their manifest."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = ["path,subject,expression"]
    for s in range(8):
        base = rng.integers(0, 256, (32, 32))
        for e, expr in enumerate(("happy", "sad")):
            for f in range(3):
                noise = rng.integers(-20, 21, (32, 32)) + 40 * e
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                name = f"img/p{s}_{expr}_{f}.png"
                Image.fromarray(pixels).save(root / name)
                rows.append(f"{name},p{s},{expr}")
    manifest = root / "faces.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.fixture(scope="module")
def disk_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run trained on a manifest of PNGs, and new images to predict (outside its data)."""
    root = tmp_path_factory.mktemp("disk_run")
    manifest = _write_faces(root / "data")
    cfg = face_config(root / "run")
    cfg["data"] = {"name": "manifest", "manifest": str(manifest), "num_folds": 4,
                   "val_fraction": 0.25}
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config)]) == 0
    new = root / "new"
    new.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(new / f"n{i}.png")
    return {"root": root, "config": config, "ckpt": root / "run" / "last.pt", "new": new,
            "data": root / "data"}


def _outputs(run: dict[str, Any], out: Path, ckpt: Path | None = None) -> None:
    """Predict the new images into ``out`` (CSV) and export ``out``.pt (TorchScript)."""
    base = [str(run["config"]), "--checkpoint", str(ckpt or run["ckpt"])]
    assert main(["predict", *base, str(run["new"]), "--out", str(out)]) == 0
    assert main(["export", *base, "--format", "torchscript", "--out",
                 str(out.with_suffix(".pt"))]) == 0


def test_predict_and_export_work_without_the_data_and_agree(
    disk_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _outputs(disk_run, tmp_path / "with.csv")
    moved = disk_run["data"].with_name("data-moved")
    disk_run["data"].rename(moved)
    try:
        capsys.readouterr()
        _outputs(disk_run, tmp_path / "without.csv")
        err = capsys.readouterr().err
    finally:
        moved.rename(disk_run["data"])
    assert "predict: the data could not be set up" in err and "faces.csv" in err
    assert "export: the data could not be set up" in err
    assert "input layout (grayscale 32x32) stored in last.pt" in err
    # the same rows, digit for digit, and the same embeddings
    with_rows = (tmp_path / "with.csv").read_text()
    assert (tmp_path / "without.csv").read_text() == with_rows
    assert "expression.prob.happy" in with_rows.splitlines()[0]
    emb = [np.load(tmp_path / f"{n}.face_identity.embedding.npy") for n in ("with", "without")]
    np.testing.assert_array_equal(emb[0], emb[1])
    # the same exported model and sidecar (class names, mean/std)
    sides = [json.loads(sidecar_path(tmp_path / f"{n}.pt").read_text())
             for n in ("with", "without")]
    assert sides[1]["input"] == sides[0]["input"] and sides[1]["outputs"] == sides[0]["outputs"]
    assert sides[0]["input"]["mean"] == [0.5]
    assert sides[1]["class_names_and_layout_from"] == "checkpoint"
    x = torch.randn(4, 1, 32, 32)
    for a, b in zip(run_exported("torchscript", tmp_path / "with.pt", x),
                    run_exported("torchscript", tmp_path / "without.pt", x)):
        assert torch.equal(a, b)


@pytest.mark.bad_input("predict or export")
def test_older_checkpoint_without_the_data_names_what_is_missing(
    disk_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint from before the layout was stored predicts as before while the data is on
    disk; without the data it is a named error, and nothing is written."""
    state = load_checkpoint(disk_run["ckpt"])
    del state["input_layout"], state["format_version"]
    old = save_checkpoint(state, tmp_path / "old.pt")
    base = ["predict", str(disk_run["config"]), "--checkpoint", str(old), str(disk_run["new"])]
    assert main([*base, "--out", str(tmp_path / "ok.csv")]) == 0
    moved = disk_run["data"].with_name("data-moved")
    disk_run["data"].rename(moved)
    try:
        expect_cli_error([*base, "--out", str(tmp_path / "p.csv")], capsys,
                         "the data could not be set up", "faces.csv",
                         "does not record its input layout", "make the training data available")
    finally:
        moved.rename(disk_run["data"])
    assert not (tmp_path / "p.csv").exists()
