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


# --- the leak guard compares people by name, within their data source (issue 27 B1) ---------


def _manifest_set(folder: Path, names: list[str], csv: str = "faces.csv") -> Path:
    """Two small RGB images per person and expression under ``folder``, listed in ``csv``."""
    import numpy as np
    from PIL import Image

    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        for e, expr in enumerate(("happy", "sad")):
            for f in range(2):
                path = folder / "img" / f"{name}_{expr}_{f}.png"
                if not path.exists():
                    seed = 1000 * sum(map(ord, name)) + 10 * e + f
                    rgb = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), np.uint8)
                    Image.fromarray(rgb).save(path)
                rows.append(f"img/{path.name},{name},{expr}")
    out = folder / csv
    out.write_text("\n".join(["path,subject,expression", *rows]) + "\n")
    return out


def _manifest_config(tmp_path: Path, manifest: Path, fold: int, name: str) -> Path:
    """A one-epoch MLP run on ``manifest`` (3 folds, no validation split)."""
    import yaml

    cfg = {
        "output_dir": str(tmp_path / "run"),
        "trainer": {"epochs": 1, "batch_size": 8, "progress": "off", "plot": False},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "backbone": {"name": "mlp", "in_features": 3 * 16 * 16, "hidden": [16]},
        "tasks": [{"name": "face_identity", "embedding_dim": 8}, {"name": "expression"}],
        "weighter": {"name": "equal"},
        "data": {"name": "manifest", "manifest": str(manifest), "image_size": 16,
                 "num_folds": 3, "fold": fold, "val_fraction": 0.0, "augment": False},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


PEOPLE = [f"p{i}" for i in range(6)]


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fold 0 of 3 trained on six people p0..p5: p0, p1 are its test fold, p2..p5 trained."""
    tmp = tmp_path_factory.mktemp("manifest_run")
    manifest = _manifest_set(tmp / "faces", PEOPLE)
    assert main(["train", str(_manifest_config(tmp, manifest, 0, "run.yaml"))]) == 0
    return tmp


def _evaluate(run: Path, config: Path, checkpoint: Path | None = None) -> list[str]:
    ckpt = checkpoint or run / "run" / "last.pt"
    return ["evaluate", str(config), "--checkpoint", str(ckpt)]


@pytest.mark.bad_input("evaluate on edited or other data")
def test_a_subject_dropped_from_the_manifest_does_not_hide_a_trained_person(
    manifest_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Drop p0 and re-index: fold 0's test split is now p1, p2, indices 0 and 1, which were
    no training index; but p2 trained. By name the leak is seen and named."""
    edited = _manifest_set(manifest_run / "faces", PEOPLE[1:], csv="faces_without_p0.csv")
    config = _manifest_config(manifest_run, edited, 0, "edited.yaml")
    assert main(_evaluate(manifest_run, config)) == 2
    err = capsys.readouterr().err
    assert "shares 1 of its 2 subjects" in err, err
    assert "'p2'" in err and "manifest:" in err, err


@pytest.mark.bad_input("evaluate on edited or other data")
def test_another_data_set_with_no_person_in_common_is_evaluated(
    manifest_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Six other people in another folder: fold 1's test split holds indices 2 and 3, which the
    checkpoint trained under other names; nobody is shared, so it is scored (with a notice)."""
    other = _manifest_set(manifest_run / "other", [f"q{i}" for i in range(6)])
    config = _manifest_config(manifest_run, other, 1, "other.yaml")
    assert main(_evaluate(manifest_run, config)) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "another data set" in err, err


@pytest.mark.bad_input("evaluate on edited or other data")
def test_a_checkpoint_holding_group_indices_is_checked_by_index_with_a_notice(
    manifest_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint from before names were stored holds an index tensor: the old check runs,
    and a notice says it is only right while the data lists the same people."""
    import torch

    from mtlkit.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(manifest_run / "run" / "last.pt")
    assert ckpt["train_groups"] == ["p2", "p3", "p4", "p5"]
    assert ckpt["group_source"].startswith("manifest:")
    ckpt["train_groups"] = torch.tensor([2, 3, 4, 5])
    del ckpt["group_source"]
    old = tmp_path / "old.pt"
    save_checkpoint(ckpt, old)
    config = _manifest_config(manifest_run, manifest_run / "faces" / "faces.csv", 1, "fold1.yaml")
    assert main(_evaluate(manifest_run, config, old)) == 2
    err = capsys.readouterr().err
    assert "by index, not by name" in err and "subject indices 2, 3" in err, err
