"""Shared fixtures of the mtlkit-dlibnet tests: the installed weights and real/synthetic faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mtlkit_dlibnet.weights import WeightsNotFoundError, locate_weights
from mtlkit_face.testing import ck48_root, drawn_faces


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
    return drawn_faces(50)
