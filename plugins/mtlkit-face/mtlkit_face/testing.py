"""Helpers for test suites that read the real CK+48 (this plugin's and other plugins')."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mtlkit_face.data.ck48 import ENV_VAR


def ck48_root() -> Path | None:
    """The real CK+48: ``MTLKIT_CK48``, else ``../shared/datasets/ck48`` beside a source
    checkout of mtlkit; None where neither is a folder (tests then skip)."""
    env = os.environ.get(ENV_VAR)
    repo = Path(__file__).resolve().parents[3]
    root = Path(env) if env else repo / ".." / "shared" / "datasets" / "ck48"
    return root if root.is_dir() else None


def drawn_faces(n: int, size: int = 150, seed: int = 0) -> np.ndarray:
    """``n`` drawn RGB faces ``[n, size, size, 3]`` uint8 (six people, four expressions): real
    enough for a face network to embed, and the same on every machine."""
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
