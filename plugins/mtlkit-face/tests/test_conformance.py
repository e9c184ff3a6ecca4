"""The face tasks and datasets through mtlkit's conformance kit; every registered name is checked
(a dataset without a factory below fails, it is never skipped silently)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mtlkit.data import DataModule
from mtlkit.testing import check_datamodule, parametrize_checks, registered, task_checks

from .conftest import ck48_root

DIST = "mtlkit-face"
TASKS = registered("tasks", DIST)
DATASETS = registered("datasets", DIST)
TARGETS = ["face_identity", "expression"]

INFO = {"num_classes": 4, "class_names": ["anger", "happy", "sad", "surprise"]}

TASK_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "face_identity": [
        {},
        {"margin": "cosface", "embedding_dim": 8},
        {"margin": "arcface", "center_loss_weight": 0.1, "embedding_dim": 8},
        {"center_loss_weight": 0.1, "center_loss": {"update": "learned", "space": "raw"},
         "embedding_bn": False, "embedding_dim": 8},
    ],
    "expression": [{}, {"label_smoothing": 0.1, "hidden_dim": 16}],
    "binary_attribute": [{}, {"hidden_dim": 8}],
}
"""Option sets beyond the defaults (a task not listed is checked on its defaults)."""

TASK_INFO: dict[str, dict[str, Any]] = {
    "binary_attribute": {"num_classes": 2, "attribute": "smiling", "positive_rate": 0.4},
}
"""What the data reports for a task, where INFO does not fit."""

TASK_CHECKS = [
    check
    for name, cls in TASKS.items()
    for check in task_checks(
        cls, TASK_OPTIONS.get(name, [{}]), info=TASK_INFO.get(name, INFO), name=name
    )
]


@parametrize_checks(TASK_CHECKS)
def test_task_conformance(check: Any) -> None:
    check()


# --- datasets ---------------------------------------------------------------------------------

Variant = tuple[str, Callable[[], DataModule], dict[str, Any]]
"""(label, factory, data_config), checked on TARGETS; a 4-tuple adds its own targets."""


def _synthetic(tmp: Path) -> list[Variant]:
    cls = DATASETS["synthetic_faces"]
    base = {"num_identities": 8, "num_folds": 4, "val_fraction": 0.34, "frames_per_sequence": 2}
    return [
        (f"synthetic_faces-{protocol}",
         lambda p=protocol: cls(cls.Options(**base, protocol=p)), {})
        for protocol in ("subject-kfold", "sequence-holdout")
    ]


def _ck48(tmp: Path) -> list[Variant]:
    root = ck48_root()
    if root is None:
        pytest.skip("CK+48 not present (set MTLKIT_CK48)")
    cls = DATASETS["ck48"]
    return [("ck48", lambda: cls(cls.Options(root=str(root))), {"in_chans": 1})]


def _manifest(tmp: Path) -> list[Variant]:
    """Tiny generated images: four people, two expressions, two takes each."""
    (tmp / "img").mkdir()
    lines = ["path,subject,expression"]
    for s in range(4):
        for e, expr in enumerate(("happy", "sad")):
            for f in range(2):
                name = f"img/p{s}_{expr}_{f}.png"
                Image.new("L", (12, 12), 30 * s + 10 * e + f).save(tmp / name)
                lines.append(f"{name},p{s},{expr}")
    (tmp / "faces.csv").write_text("\n".join(lines) + "\n")
    cls = DATASETS["manifest"]
    return [("manifest", lambda: cls(cls.Options(manifest=str(tmp / "faces.csv"), num_folds=2,
                                                 val_fraction=0.0)), {"in_chans": 1})]


def _attributes(tmp: Path) -> list[Any]:
    cls = DATASETS["synthetic_attributes"]
    opts = {"num_identities": 8, "images_per_identity": 3, "num_folds": 4, "val_fraction": 0.34,
            "num_attributes": 6, "missing_fraction": 0.2}
    targets = ["face_identity", "attr_bald", "attr_bangs", "attr_five_o_clock_shadow"]
    return [("synthetic_attributes", lambda: cls(cls.Options(**opts)), {"in_chans": 1}, targets)]


def _files(tmp: Path) -> Path:
    from mtlkit_face.data.files import write_synthetic_faces

    return write_synthetic_faces(tmp / "faces", size=16, num_identities=4, frames_per_sequence=2)


def _image_folder(tmp: Path) -> list[Variant]:
    cls = DATASETS["image_folder"]
    root = str(_files(tmp).parent / "img")
    return [
        (f"image_folder-{storage}",
         lambda s=storage: cls(cls.Options(root=root, folders="subject", num_folds=2,
                                           val_fraction=0.0, storage=s)),
         {"in_chans": 1}, ["face_identity"])
        for storage in ("memory", "stream")
    ]


def _webdataset(tmp: Path) -> list[Variant]:
    from mtlkit.shards import write_shards

    manifest = _files(tmp)
    source = DATASETS["manifest"](DATASETS["manifest"].Options(manifest=str(manifest),
                                                               num_folds=2))
    write_shards(source.setup(TARGETS, {"in_chans": 1}), tmp / "shards", shard_size=10,
                 labels=source.label_names())
    cls = DATASETS["webdataset"]
    return [
        (f"webdataset-{storage}",
         lambda s=storage: cls(cls.Options(root=str(tmp / "shards"), num_folds=2, storage=s)),
         {"in_chans": 1})
        for storage in ("memory", "stream")
    ]


FACTORIES: dict[str, Callable[[Path], list[Any]]] = {
    "image_folder": _image_folder,
    "webdataset": _webdataset,
    "synthetic_attributes": _attributes,
    "synthetic_faces": _synthetic,
    "ck48": _ck48,
    "manifest": _manifest,
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_conformance(name: str, tmp_path: Path) -> None:
    factory = FACTORIES.get(name)
    assert factory is not None, f"dataset {name!r} has no conformance factory in FACTORIES"
    for label, make, data_config, *targets in factory(tmp_path):
        tasks = targets[0] if targets else TARGETS
        check_datamodule(make, tasks, data_config=data_config, name=label)
