"""The leak the run-safety checks exist for: a fold-0 run resumed or evaluated on another fold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlkit.cli import main

REPO = Path(__file__).resolve().parents[3]

pytest.importorskip("mtlkit_timm")
pytestmark = pytest.mark.bad_input("resume or evaluate on another fold")


def _args(tmp_path: Path, *extra: str) -> list[str]:
    small = [
        f"output_dir={tmp_path / 'run'}",
        "trainer.epochs=1",
        "trainer.progress=off",
        "trainer.plot=false",
        "backbone.model_name=test_resnet",
        "data.num_identities=10",
        "weighter={name: equal}",
        *extra,
    ]
    return [x for o in small for x in ("-o", o)]


@pytest.fixture(scope="module")
def fold0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fold0")
    assert main(["train", str(REPO / "configs" / "demo.yaml"), *_args(tmp)]) == 0
    return tmp


def test_resume_with_another_fold_is_refused(
    fold0: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    last = fold0 / "run" / "last.pt"
    before = last.read_bytes()
    code = main([
        "train", str(REPO / "configs" / "demo.yaml"), *_args(fold0, "data.fold=2"), "--resume",
        "--allow-config-change",
    ])
    err = capsys.readouterr().err
    assert code == 2
    assert "data.fold: checkpoint 0, config 2" in err
    assert last.read_bytes() == before  # last.pt not overwritten


def test_evaluate_on_another_folds_test_split_is_refused(
    fold0: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(REPO / "configs" / "demo.yaml"), *_args(fold0, "data.fold=2"),
            "--checkpoint", str(fold0 / "run" / "last.pt")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "shares" in err and "subjects with the checkpoint's training split" in err
    assert "data.fold: checkpoint 0, config 2" in err  # the notice names the cause


def test_evaluate_on_its_own_test_split_works(
    fold0: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(REPO / "configs" / "demo.yaml"), *_args(fold0),
            "--checkpoint", str(fold0 / "run" / "last.pt")]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert "verification_auc_cross_sequence" in out["test"]["face_identity"]


def test_evaluate_on_the_training_split_is_refused(fold0: Path) -> None:
    args = ["evaluate", str(REPO / "configs" / "demo.yaml"), *_args(fold0),
            "--checkpoint", str(fold0 / "run" / "last.pt"), "--split", "train"]
    assert main(args) == 2


def _checkpoint_with_augment(fold0: Path, tmp_path: Path, augment: object) -> None:
    """A copy of the fold-0 run whose checkpoint says it trained with ``augment``."""
    import shutil

    import torch

    from mtlkit.checkpoint import load_checkpoint, save_checkpoint

    shutil.copytree(fold0 / "run", tmp_path / "run")
    last = tmp_path / "run" / "last.pt"
    ckpt = load_checkpoint(last)
    resolved = json.loads(ckpt["resolved_config"])
    assert resolved["data"]["augment"]["flip"] is True  # recorded spelled out
    resolved["data"]["augment"] = augment
    ckpt["resolved_config"] = json.dumps(resolved)
    save_checkpoint(ckpt, last)
    assert isinstance(torch.load(last, weights_only=True), dict)


def test_resume_sees_a_changed_augmentation_default(
    fold0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``augment: true`` is recorded as the augmentation it meant, so a run trained under
    another default shift is not continued under today's as if nothing changed."""
    from mtlkit_face.data.transforms import AugmentOptions

    old = {**AugmentOptions().model_dump(mode="json"), "shift": 0.05}
    _checkpoint_with_augment(fold0, tmp_path, old)
    code = main(["train", str(REPO / "configs" / "demo.yaml"), *_args(tmp_path), "--resume"])
    assert code == 2
    assert "data.augment.shift: checkpoint 0.05" in capsys.readouterr().err


def test_resume_of_a_checkpoint_holding_the_short_form_is_no_change(
    fold0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints from before the augmentation was spelled out hold ``augment: true``: read
    through today's options it is today's default, not a change that blocks the resume."""
    _checkpoint_with_augment(fold0, tmp_path, True)
    code = main(["train", str(REPO / "configs" / "demo.yaml"), *_args(tmp_path), "--resume"])
    assert code == 0, capsys.readouterr().err
