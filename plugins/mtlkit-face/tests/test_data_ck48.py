"""CK+48 folder dataset: name parsing, bad files, the target/meta/info contract, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mtlkit_face.data.ck48 import CK48Data, parse_name, parse_path
from PIL import Image

from mtlkit.errors import DataError
from mtlkit.task import MISSING_LABEL

from .conftest import ck48_root

EXPR = ["anger", "happy", "surprise"]


def fake_ck48(root: Path, subjects: int = 6, frames: int = 2) -> Path:
    """Tiny generated PNGs in the CK+48 layout: every subject shows every expression."""
    for e, expr in enumerate(EXPR):
        (root / expr).mkdir(parents=True, exist_ok=True)
        for s in range(subjects):
            for f in range(frames):
                value = 20 * s + 5 * e + f
                img = Image.new("L", (16, 16), value)
                img.save(root / expr / f"S{s + 10:03d}_{e + 1:03d}_{f + 7:08d}.png")
    return root


def load(root: Path, tasks: list[str] | None = None, data_config: dict | None = None, **kw):
    opts = CK48Data.Options(root=str(root), num_folds=3, **kw)
    data = CK48Data(opts)
    return data, data.setup(tasks or ["face_identity", "expression"], data_config or {})


def test_parse_name() -> None:
    assert parse_name("S010_004_00000017.png") == ("S010", "S010_004", 17)
    rec = parse_path("ck/anger/S010_004_00000017.png")
    got = (rec.subject, rec.sequence, rec.frame, rec.expression)
    assert got == ("S010", "S010_004", 17, "anger")


@pytest.mark.parametrize(
    "name",
    ["S010_004.png", "foo.png", "S010_004_00000017.txt", "010_004_00000017.png", "S010_x_1.png"],
)
def test_parse_bad_names(name: str) -> None:
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        parse_path(f"anger/{name}")


def test_contract(tmp_path: Path) -> None:
    data, splits = load(fake_ck48(tmp_path / "ck"), data_config={"in_chans": 1})
    s = splits.summary
    assert s["total"] == {"images": 36, "subjects": 6, "sequences": 18}
    assert sum(s["splits"][k]["images"] for k in ("train", "val", "test")) == 36
    assert splits.train.inputs.dtype == torch.uint8
    assert tuple(splits.train.inputs.shape[1:]) == (1, 16, 16)  # native size, one channel
    info = splits.info
    assert info["expression"] == {"num_classes": 3, "class_names": EXPR}
    k = info["face_identity"]["num_classes"]
    assert k == s["splits"]["train"]["subjects"] == len(info["face_identity"]["class_names"])
    # every image names its sequence: verification can leave same-sequence positives out
    assert info["face_identity"]["pair_protocols"] == ["cross_sequence", "all_pairs"]
    for name, ds in splits.named().items():
        assert set(ds.meta) == {"subject", "sequence", "expression", "index"}
        assert all(v.dtype == torch.int64 for v in (*ds.meta.values(), *ds.targets.values()))
        ident = ds.targets["face_identity"]
        if name == "train":
            assert ident.min() >= 0 and ident.max() < k
        else:  # held-out people carry no identity label under subject-kfold
            assert (ident == MISSING_LABEL).all()
        assert torch.equal(ds.targets["expression"], ds.meta["expression"])
        for i in range(len(ds)):  # meta index points back to the listed record
            rec = data.records[int(ds.meta["index"][i])]
            assert data.table.subjects[int(ds.meta["subject"][i])] == rec.subject
            assert data.table.expressions[int(ds.meta["expression"][i])] == rec.expression
    batch = splits.train.batch(torch.arange(4))
    x = batch["input"]
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1  # mean/std 0.5 default


def test_targets_only_for_requested_tasks(tmp_path: Path) -> None:
    _, splits = load(fake_ck48(tmp_path / "ck"), ["expression"])
    # info: one entry per requested target, plus the training images' own format (predict)
    assert set(splits.train.targets) == {"expression"}
    assert set(splits.info) == {"expression", "input_format"}
    assert "expression" in splits.train.meta


def test_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="face_identity, expression"):
        load(fake_ck48(tmp_path / "ck"), ["age"])


def test_layout_from_backbone(tmp_path: Path) -> None:
    config = {"input_size": (3, 24, 20), "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5)}
    _, splits = load(fake_ck48(tmp_path / "ck"), data_config=config)
    assert tuple(splits.train.inputs.shape[1:]) == (3, 24, 20)
    raw = splits.train.inputs[:1].float() / 255
    x = splits.train.batch(torch.arange(1))["input"]
    assert torch.allclose(x[0, 2], (raw[0, 2] - 0.3) / 0.5)
    _, splits = load(tmp_path / "ck", data_config={"input_size": (1, 24, 20)}, image_size=12)
    assert tuple(splits.train.inputs.shape[1:]) == (1, 12, 12)  # the option wins


def test_size_agnostic_backbone_keeps_native_size(tmp_path: Path) -> None:
    root = fake_ck48(tmp_path / "ck")
    native = load(root, data_config={"in_chans": 1})[1].train.inputs.shape[2:]
    config = {"input_size": (1, 24, 20), "fixed_input_size": False}
    _, splits = load(root, data_config=config)
    assert splits.train.inputs.shape[2:] == native != (24, 20)
    _, splits = load(root, data_config={**config, "fixed_input_size": True})
    assert tuple(splits.train.inputs.shape[2:]) == (24, 20)


def test_flat_layout_and_augment(tmp_path: Path) -> None:
    _, splits = load(fake_ck48(tmp_path / "ck"), data_config={"input_size": (256,), "in_chans": 1})
    idx = torch.arange(6)
    a = splits.train.batch(idx, train=True, generator=torch.Generator().manual_seed(1))
    b = splits.train.batch(idx, train=True, generator=torch.Generator().manual_seed(1))
    assert a["input"].shape == (6, 256) and torch.equal(a["input"], b["input"])
    with pytest.raises(DataError, match="256 features"):
        load(tmp_path / "ck", data_config={"input_size": (256,), "in_chans": 3})


def test_augment_flips_and_shifts(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    fake_ck48(root)
    img = np.zeros((16, 16), np.uint8)
    img[:, :4] = 255  # a bright left band: flips and shifts move it
    for p in root.rglob("*.png"):
        Image.fromarray(img).save(p)
    _, splits = load(root, data_config={"in_chans": 1})
    idx = torch.arange(len(splits.train))
    plain = splits.train.batch(idx)["input"]
    aug = splits.train.batch(idx, train=True, generator=torch.Generator().manual_seed(0))["input"]
    assert aug.shape == plain.shape
    assert not torch.equal(aug, plain)
    left = aug[:, 0, 8, :8].mean(dim=1) > aug[:, 0, 8, 8:].mean(dim=1)
    assert left.any() and (~left).any()  # some flipped, some not
    _, off = load(root, data_config={"in_chans": 1}, augment=False)
    assert off.train.augment is None


def test_bad_name_is_an_error_or_skipped(tmp_path: Path) -> None:
    root = fake_ck48(tmp_path / "ck")
    Image.new("L", (16, 16)).save(root / "happy" / "IMG_0001.png")
    (root / "happy" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    with pytest.raises(DataError, match=r"IMG_0001\.png"):
        load(root)
    _, splits = load(root, on_bad_image="skip")
    assert splits.summary["skipped"] == 1
    assert "IMG_0001.png" in splits.summary["skipped_files"][0]
    assert splits.summary["total"]["images"] == 36


def test_unreadable_image(tmp_path: Path) -> None:
    root = fake_ck48(tmp_path / "ck")
    bad = root / "anger" / "S099_001_00000001.png"
    bad.write_bytes(b"")
    with pytest.raises(DataError, match=r"S099_001_00000001\.png.*empty"):
        load(root)
    _, splits = load(root, on_bad_image="skip")
    assert splits.summary["skipped"] == 1 and splits.summary["total"]["subjects"] == 6


def test_root_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MTLKIT_CK48", raising=False)
    with pytest.raises(DataError, match="MTLKIT_CK48"):
        CK48Data().setup(["expression"], {})
    with pytest.raises(DataError, match="does not exist"):
        CK48Data(CK48Data.Options(root=str(tmp_path / "nope"))).setup(["expression"], {})
    monkeypatch.setenv("MTLKIT_CK48", str(fake_ck48(tmp_path / "ck")))
    splits = CK48Data(CK48Data.Options(num_folds=3)).setup(["expression"], {})
    assert splits.summary["total"]["images"] == 36


def test_expression_selection(tmp_path: Path) -> None:
    root = fake_ck48(tmp_path / "ck")
    _, splits = load(root, expressions=["surprise", "anger"])
    assert splits.info["expression"]["class_names"] == ["surprise", "anger"]
    assert splits.summary["ignored_folders"] == ["happy"]
    with pytest.raises(DataError, match="'fear'"):
        load(root, expressions=["anger", "fear"])


def test_real_ck48() -> None:
    root = ck48_root()
    if root is None:
        pytest.skip("CK+48 not present (set MTLKIT_CK48)")
    data = CK48Data(CK48Data.Options(root=str(root)))
    splits = data.setup(["face_identity", "expression"], {"in_chans": 1})
    s = splits.summary
    assert s["total"] == {"images": 981, "subjects": 118, "sequences": 327}
    assert splits.info["expression"]["num_classes"] == 7
    assert tuple(splits.train.inputs.shape[1:]) == (1, 48, 48)
    counts = np.bincount(data.table.expression_idx, minlength=7).tolist()
    assert dict(zip(data.table.expressions, counts)) == {
        "anger": 135,
        "contempt": 54,
        "disgust": 177,
        "fear": 75,
        "happy": 207,
        "sadness": 84,
        "surprise": 249,
    }
    assert splits.info["face_identity"]["num_classes"] == s["splits"]["train"]["subjects"]
    assert s["splits"]["test"]["subjects"] == 12  # fold 0 of KFold(10) over 118 subjects


def test_augment_mapping_from_config(tmp_path: Path) -> None:
    _, splits = load(fake_ck48(tmp_path / "ck"), augment={"rotate": 10, "scale": [0.9, 1.1]})
    aug = splits.train.augment
    assert aug is not None and aug.options.rotate == 10 and aug.options.scale == (0.9, 1.1)
    idx = torch.arange(len(splits.train))
    a = splits.train.batch(idx, train=True, generator=torch.Generator().manual_seed(2))
    b = splits.train.batch(idx, train=True, generator=torch.Generator().manual_seed(2))
    assert a["input"].dtype == torch.float32 and torch.equal(a["input"], b["input"])
