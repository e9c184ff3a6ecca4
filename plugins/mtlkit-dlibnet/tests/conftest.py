"""Shared fixtures of the mtlkit-dlibnet tests: the installed weights and real/synthetic faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mtlkit_dlibnet.weights import WeightsNotFoundError, locate_weights
from mtlkit_face.testing import ck48_root


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """dlib's weights file from ``face_recognition_models``; skipped where it is not installed."""
    try:
        return locate_weights()
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def ck48() -> Path:
    """The CK+48 folder; the test is skipped where it is absent."""
    root = ck48_root()
    if root is None:
        pytest.skip("CK+48 not present (set MTLKIT_CK48)")
    return root


@pytest.fixture(scope="session")
def faces() -> np.ndarray:
    """50 drawn RGB faces at 150 px."""
    return synthetic_faces(50)


def synthetic_faces(n: int, size: int = 150, seed: int = 0) -> np.ndarray:
    """``n`` drawn RGB faces ``[n, size, size, 3]`` uint8 from the face plugin's renderer."""
    from mtlkit_face.data.render import (
        draw,
        expression_params,
        finish,
        frame_specs,
        identity_params,
    )

    rng = np.random.default_rng(seed)
    names = ["anger", "happy", "surprise", "sadness"]
    spec = frame_specs(
        rng.integers(0, 6, n), rng.integers(0, len(names), n), identity_params(6, rng),
        expression_params(names), 1.0, rng,
    )
    img = finish(draw(spec, 96, 3), (size, size), 0.02, torch.Generator().manual_seed(seed))
    return img.permute(0, 2, 3, 1).numpy().copy()
