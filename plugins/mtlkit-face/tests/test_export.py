"""``mtlkit export``: each format reproduces the PyTorch model within the stated tolerance on
inputs it was not traced with (another batch size), and the sidecar documents the model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mtlkit.cli import main
from mtlkit.export import SUFFIXES, TOLERANCE, run_exported, sidecar_path

from .conftest import expect_cli_error

pytest.importorskip("mtlkit_timm")


@pytest.fixture
def face_run(trained_face_run: dict[str, Any]) -> dict[str, Any]:
    return trained_face_run


def export_args(face_run: dict[str, Any], fmt: str, out: Path) -> list[str]:
    return ["export", str(face_run["config"]), "--checkpoint", str(face_run["ckpt"]),
            "--format", fmt, "--out", str(out)]


def _needs(fmt: str) -> None:
    if fmt == "onnx":
        for dep in ("onnx", "onnxscript", "onnxruntime"):
            if importlib.util.find_spec(dep) is None:
                pytest.skip(f"{dep} is not installed (pip install 'mtlkit[export]')")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported-program"])
def test_export_matches_pytorch(face_run: dict[str, Any], tmp_path: Path, fmt: str) -> None:
    _needs(fmt)
    out = tmp_path / f"model{SUFFIXES[fmt]}"
    assert main(export_args(face_run, fmt, out)) == 0
    side = json.loads(sidecar_path(out).read_text())
    names = [o["name"] for o in side["outputs"]]
    assert names == ["face_identity.logits", "face_identity.embedding", "expression.logits"]
    # five test images the export never saw, a batch size it was not traced with
    run = face_run["run"]
    test = face_run["test"]
    x = test.batch(torch.arange(10, 15))["input"]
    with torch.no_grad():
        _, heads = run.built.model(x)
    reference = [heads["face_identity"]["logits"], heads["face_identity"]["embedding"],
                 heads["expression"]]
    got = run_exported(fmt, out, x)
    for name, ref, value in zip(names, reference, got):
        assert value.shape == ref.shape, name
        assert torch.allclose(value.float(), ref, **TOLERANCE), (name, (value - ref).abs().max())
    check = side["check"]
    assert check["runtime"] == ("onnxruntime" if fmt == "onnx" else "torch")
    assert max(check["max_abs_diff"].values()) <= TOLERANCE["atol"]


def test_sidecar_documents_preprocessing_and_outputs(
    face_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "model.pt"
    assert main(export_args(face_run, "torchscript", out)) == 0
    side = json.loads(sidecar_path(out).read_text())
    inp = side["input"]
    assert inp["shape"] == ["batch", 1, 32, 32]
    assert (inp["channels"], inp["height"], inp["width"], inp["colour"]) == (1, 32, 32, "grayscale")
    assert inp["mean"] == [0.5] and inp["std"] == [0.5]  # timm's test_resnet: 0.5 / 0.5
    run = face_run["run"]
    by_name = {o["name"]: o for o in side["outputs"]}
    assert by_name["expression.logits"]["class_names"] == run.built.tasks[1].class_names
    emb = by_name["face_identity.embedding"]
    assert emb["size"] == 128 and emb["shape"] == ["batch", 128]
    assert emb["threshold"] == pytest.approx(
        run.recorded["face_identity"]["verification_threshold"]
    )
    # the documented recipe reproduces the model's input from a PNG
    pixels = torch.tensor(np.asarray(Image.open(face_run["paths"][0])))
    mean, std = torch.tensor(inp["mean"]), torch.tensor(inp["std"])
    recipe = ((pixels.float() / 255 - mean) / std).view(1, 1, 32, 32)
    assert torch.allclose(recipe, face_run["test"].batch(torch.arange(1))["input"], atol=1e-6)
    assert side["checkpoint"]["step"] == run.step


@pytest.mark.bad_input("predict or export")
def test_unknown_format(face_run: dict[str, Any], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    expect_cli_error(export_args(face_run, "tflite", tmp_path / "m.tflite"), capsys,
                  "unknown format 'tflite'", "onnx, torchscript, exported-program")


@pytest.mark.bad_input("predict or export")
def test_wrong_suffix_for_the_format(face_run: dict[str, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    expect_cli_error(export_args(face_run, "exported-program", tmp_path / "m.pt"), capsys,
                  "must end in .pt2")


@pytest.mark.bad_input("predict or export")
def test_existing_file_is_refused_without_force(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.pt"
    out.write_text("precious")
    expect_cli_error(export_args(face_run, "torchscript", out), capsys, "output exists", "--force")
    assert out.read_text() == "precious"
    assert main([*export_args(face_run, "torchscript", out), "--force"]) == 0
    assert out.stat().st_size > 1000


@pytest.mark.bad_input("predict or export")
def test_checkpoint_from_another_config(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from .conftest import face_config

    config = tmp_path / "other.yaml"
    cfg = face_config(tmp_path / "o")
    cfg["tasks"] = [{"name": "expression"}]
    config.write_text(yaml.safe_dump(cfg))
    args = ["export", str(config), "--checkpoint", str(face_run["ckpt"]), "--format",
            "torchscript", "--out", str(tmp_path / "m.pt")]
    expect_cli_error(args, capsys, "checkpoint tasks", "do not match")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.bad_input("predict or export")
def test_onnx_without_the_extra_names_it(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    expect_cli_error(export_args(face_run, "onnx", tmp_path / "m.onnx"), capsys,
                  "onnxscript", "pip install 'mtlkit[export]'")
    assert not (tmp_path / "m.onnx").exists()
    assert not list(tmp_path.glob(".m.onnx*"))  # no temporary file left behind


def test_exported_embedding_gives_the_predicted_one(
    face_run: dict[str, Any], tmp_path: Path
) -> None:
    """What a deployment computes from the exported model equals what predict writes."""
    out = tmp_path / "model.pt"
    assert main(export_args(face_run, "torchscript", out)) == 0
    x = face_run["test"].batch(torch.arange(2))["input"]
    _, emb, _ = run_exported("torchscript", out, x)
    pred = tmp_path / "p.csv"
    assert main(["predict", str(face_run["config"]), "--checkpoint", str(face_run["ckpt"]),
                 *map(str, face_run["paths"][:2]), "--out", str(pred)]) == 0
    saved = torch.from_numpy(np.load(tmp_path / "p.face_identity.embedding.npy"))
    assert torch.allclose(F.normalize(emb, dim=1), saved, atol=1e-5)
