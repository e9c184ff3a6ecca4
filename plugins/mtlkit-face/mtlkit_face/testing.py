"""Helpers for test suites that read the real CK+48 (this plugin's and other plugins')."""

from __future__ import annotations

import os
from pathlib import Path

from mtlkit_face.data.ck48 import ENV_VAR


def ck48_root() -> Path | None:
    """The real CK+48: ``MTLKIT_CK48``, else ``../shared/datasets/ck48`` beside a source
    checkout of mtlkit; None where neither is a folder (tests then skip)."""
    env = os.environ.get(ENV_VAR)
    repo = Path(__file__).resolve().parents[3]
    root = Path(env) if env else repo / ".." / "shared" / "datasets" / "ck48"
    return root if root.is_dir() else None
