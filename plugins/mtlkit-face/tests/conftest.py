"""Shared fixtures of the mtlkit-face tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mtlkit_face.testing import ck48_root


@pytest.fixture
def ck48() -> Path:
    """The CK+48 folder; the test is skipped where it is absent."""
    root = ck48_root()
    if root is None:
        pytest.skip("CK+48 not present (set MTLKIT_CK48)")
    return root


def face_config(out: Path, **data: Any) -> dict[str, Any]:
    """Two face tasks on a test-size timm trunk over 8 drawn identities at 32 px (~3 s)."""
    return {
        "output_dir": str(out),
        "seed": 0,
        "trainer": {"epochs": 2, "batch_size": 32, "progress": "off", "plot": False},
        "optimizer": {"name": "adamw", "lr": 0.002},
        "backbone": {"name": "timm", "model_name": "test_resnet", "in_chans": 1},
        "tasks": [{"name": "face_identity"}, {"name": "expression"}],
        "weighter": {"name": "equal"},
        "data": {
            "name": "synthetic_faces",
            "num_identities": 8,
            "image_size": 32,
            "num_folds": 4,
            "val_fraction": 0.25,
            **data,
        },
    }


@pytest.fixture(scope="session")
def trained_face_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """For the predict and export tests: a trained run, its config file, and test images
    written as PNG (lossless, so the model sees exactly the test split's pixels)."""
    import yaml
    from PIL import Image

    from mtlkit import load_config
    from mtlkit.cli import main
    from mtlkit.predict import load_run

    root = tmp_path_factory.mktemp("face_run")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(face_config(root / "run")))
    assert main(["train", str(config)]) == 0
    run = load_run(load_config(config), root / "run" / "last.pt")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    test = run.built.data.test
    assert test is not None
    paths = []
    for i in range(6):
        path = images / ("sub" if i >= 4 else "") / f"face{i}.png"
        Image.fromarray(test.inputs[i, 0].numpy()).save(path)
        paths.append(path)
    return {"root": root, "config": config, "ckpt": root / "run" / "last.pt", "run": run,
            "images": images, "paths": paths, "test": test}


def expect_cli_error(args: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> None:
    """``mtlkit ARGS`` exits 2 with a named error (no traceback) that contains ``expected``."""
    from mtlkit.cli import main

    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "mtlkit: error: " in err and "Traceback" not in err
    for text in expected:
        assert text in err, err
