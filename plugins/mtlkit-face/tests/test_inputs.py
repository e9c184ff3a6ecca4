"""Training images' own format: predict reads files like them as training did, and setup says
when some training images had another size or colour mode."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from mtlkit_face.data.manifest import ManifestData
from PIL import Image


def _faces(folder: Path, odd: bool = False) -> Path:
    """Four people, two expressions, two 20x20 grayscale takes each; ``odd``: one take an RGB
    photo of 30x24 instead, as a user's camera would give."""
    (folder / "img").mkdir(parents=True)
    lines = ["path,subject,expression"]
    for s in range(4):
        for e, expr in enumerate(("happy", "sad")):
            for f in range(2):
                name = f"img/p{s}_{expr}_{f}.png"
                if odd and (s, e, f) == (1, 0, 1):
                    Image.new("RGB", (30, 24), (200, 30 * s, 10 * e)).save(folder / name)
                else:
                    Image.new("L", (20, 20), 30 * s + 10 * e + f).save(folder / name)
                lines.append(f"{name},p{s},{expr}")
    (folder / "faces.csv").write_text("\n".join(lines) + "\n")
    return folder / "faces.csv"


def _module(manifest: Path) -> ManifestData:
    options = ManifestData.Options(manifest=str(manifest), num_folds=2, val_fraction=0.0,
                                   image_size=16)
    return ManifestData(options)


def test_a_file_in_the_training_format_is_not_converted(tmp_path: Path) -> None:
    """An RGB model at 16 px trained on 20x20 grayscale files: such a file is prepared as
    training prepared every image (what --strict-inputs accepts); another format still counts."""
    manifest = _faces(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no training image is of another format: no notice
        splits = _module(manifest).setup(["expression"], {"in_chans": 3})
    assert splits.info["input_format"] == {"mode": "L", "size": [20, 20]}
    reader = _module(manifest)
    reader.use_data_info(splits.info)
    like = torch.zeros(3, 16, 16, dtype=torch.uint8)
    same = reader.read_input_file(str(tmp_path / "img" / "p0_happy_0.png"), like)
    assert same.conversions == () and same.sample.shape == (3, 16, 16)
    Image.new("RGB", (30, 24)).save(tmp_path / "photo.png")
    other = reader.read_input_file(str(tmp_path / "photo.png"), like)
    assert [str(c) for c in other.conversions] == ["resized from 30x24 to 16x16"]


@pytest.mark.bad_input("unusual image mode")
def test_training_images_of_another_format_are_converted_with_a_notice(tmp_path: Path) -> None:
    manifest = _faces(tmp_path, odd=True)
    with pytest.warns(UserWarning, match=r"converted 1 of 16 training image\(s\) of another size"
                      r" or colour mode than the rest \(grayscale 20x20\)") as caught:
        splits = _module(manifest).setup(["expression"], {"in_chans": 1})
    (message,) = [str(w.message) for w in caught if "training image" in str(w.message)]
    assert "p1_happy_1.png (colour (RGB) 30x24): colour (RGB) to grayscale; resized" in message
    assert splits.info["input_format"] == {"mode": "L", "size": [20, 20]}
