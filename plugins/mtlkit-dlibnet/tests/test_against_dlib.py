"""The port against dlib itself: the same 150x150 chips, the same 128-d descriptors.

Runs where ``dlib`` imports (``pip install dlib-bin``; CI installs it) and skips elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mtlkit_dlibnet.backbone import DlibFaceBackbone, DlibFaceOptions
from PIL import Image

dlib = pytest.importorskip("dlib")

TOLERANCE = 1e-4


def _ours(chips: np.ndarray) -> np.ndarray:
    backbone = DlibFaceBackbone(DlibFaceOptions()).eval()
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return backbone(x).numpy()


def _dlib(chips: np.ndarray, weights: Path) -> np.ndarray:
    model = dlib.face_recognition_model_v1(str(weights))
    return np.stack([np.asarray(model.compute_face_descriptor(np.ascontiguousarray(c)))
                     for c in chips])


def _check(chips: np.ndarray, weights: Path) -> float:
    ours, theirs = _ours(chips), _dlib(chips, weights)
    diff = float(np.abs(ours - theirs).max())
    assert diff <= TOLERANCE, f"max abs difference {diff:.3g} > {TOLERANCE}"
    return diff


def test_synthetic_faces_match_dlib(weights_path: Path, faces: np.ndarray) -> None:
    _check(faces, weights_path)


def test_ck48_faces_match_dlib(weights_path: Path, ck48: Path) -> None:
    files = sorted(ck48.glob("*/*.png"))[::19][:50]
    assert len(files) == 50
    chips = np.stack([
        np.asarray(Image.open(f).convert("RGB").resize((150, 150), Image.BILINEAR))
        for f in files
    ])
    _check(chips, weights_path)


def test_grayscale_input_is_dlib_on_the_gray_image_as_rgb(
    weights_path: Path, faces: np.ndarray
) -> None:
    gray = faces[:4].mean(axis=3).round().astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=3)
    backbone = DlibFaceBackbone(DlibFaceOptions(in_chans=1)).eval()
    with torch.no_grad():
        ours = backbone(torch.from_numpy(gray)[:, None].float() / 255.0).numpy()
    assert np.abs(ours - _dlib(rgb, weights_path)).max() <= TOLERANCE
