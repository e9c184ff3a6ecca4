"""Shared fixtures of the mtlkit-face tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def ck48_root() -> Path | None:
    """The real CK+48 (MTLKIT_CK48, else ../shared/datasets/ck48 next to the repo), if present."""
    env = os.environ.get("MTLKIT_CK48")
    repo = Path(__file__).resolve().parents[3]
    root = Path(env) if env else repo / ".." / "shared" / "datasets" / "ck48"
    return root if root.is_dir() else None


@pytest.fixture
def ck48() -> Path:
    """The CK+48 folder; the test is skipped where it is absent."""
    root = ck48_root()
    if root is None:
        pytest.skip("CK+48 not present (set MTLKIT_CK48)")
    return root
