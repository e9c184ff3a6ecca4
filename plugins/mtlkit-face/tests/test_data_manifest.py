"""CSV-manifest dataset: every PIL mode converted right, every bad row/file named precisely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mtlkit_face.data.images import clear_cache, decode
from mtlkit_face.data.manifest import ManifestData
from PIL import Image

from mtlkit.errors import DataError

EXPR = ["happy", "sad"]


def build(folder: Path, subjects: int = 4, extra: str = "", sequence: bool = False) -> Path:
    """Small generated images and a manifest: each subject shows each expression twice."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = ["path,subject,expression" + (",sequence" if sequence else "")]
    for s in range(subjects):
        for e, expr in enumerate(EXPR):
            for f in range(2):
                name = f"img/p{s}_{expr}_{f}.png"
                Image.new("L", (12, 12), 30 * s + 10 * e + f).save(folder / name)
                lines.append(f"{name},p{s},{expr}" + (f",take{e}" if sequence else ""))
    path = folder / "faces.csv"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def setup(manifest: Path, tasks: tuple[str, ...] = ("face_identity", "expression"), **kw):
    data = ManifestData(ManifestData.Options(manifest=str(manifest), num_folds=2, **kw))
    return data, data.setup(list(tasks), {})


def expect(manifest: Path, pattern: str, **kw) -> None:
    with pytest.raises(DataError, match=pattern):
        setup(manifest, **kw)


def test_loads(tmp_path: Path) -> None:
    data, splits = setup(build(tmp_path))
    assert splits.summary["total"] == {"images": 16, "subjects": 4, "sequences": 8}
    assert splits.info["expression"]["class_names"] == EXPR
    assert tuple(splits.train.inputs.shape[1:]) == (3, 12, 12)
    assert data.records[0].sequence == "p0/happy"  # no sequence column: subject+expression


def test_sequence_column(tmp_path: Path) -> None:
    data, splits = setup(build(tmp_path, sequence=True), protocol="sequence-holdout")
    assert data.records[0].sequence == "p0/take0"
    assert splits.summary["total"]["sequences"] == 8  # "take0" of two people: two sequences
    assert splits.info["face_identity"]["num_classes"] == 4


def write(folder: Path, name: str, image: Image.Image, **save) -> str:
    image.save(folder / name, **save)
    return str(folder / name)


def test_modes(tmp_path: Path) -> None:
    clear_cache()
    size = (8, 8)
    gray = write(tmp_path, "l.png", Image.new("L", (6, 6), 100))
    assert (decode(gray, 1, size) == 100).all()
    assert decode(gray, 3, size).shape == (3, 8, 8) and (decode(gray, 3, size) == 100).all()

    rgb = write(tmp_path, "rgb.png", Image.new("RGB", size, (200, 100, 50)))
    assert decode(rgb, 3, size)[:, 0, 0].tolist() == [200, 100, 50]
    assert decode(rgb, 1, size)[0, 0, 0] == 124  # ITU-R 601 luma

    rgba = write(tmp_path, "rgba.png", Image.new("RGBA", size, (200, 100, 50, 128)))
    assert decode(rgba, 3, size)[:, 0, 0].tolist() == [100, 50, 25]  # on black
    la = write(tmp_path, "la.png", Image.new("LA", size, (200, 64)))
    assert decode(la, 1, size)[0, 0, 0] == 50

    pal = Image.new("P", size)
    pal.putpalette([0, 0, 0, 10, 220, 30] + [0] * 762)
    pal.paste(1, (0, 0, 8, 8))
    p = write(tmp_path, "p.png", pal)
    assert decode(p, 3, size)[:, 0, 0].tolist() == [10, 220, 30]

    ramp = np.linspace(1000, 3000, 64, dtype=np.float64).reshape(8, 8).astype(np.uint16)
    i16 = write(tmp_path, "i16.png", Image.fromarray(ramp))
    assert Image.open(i16).mode.startswith("I;16")
    out = decode(i16, 1, size)[0]
    assert out.min() == 0 and out.max() == 255  # stretched by its range, not clipped at 255
    assert (np.diff(out.ravel().astype(int)) >= 0).all() and len(np.unique(out)) > 50

    cmyk_img = Image.new("CMYK", size, (0, 255, 255, 0))
    cmyk = write(tmp_path, "cmyk.tif", cmyk_img)
    expected = np.asarray(cmyk_img.convert("RGB"))[0, 0].tolist()
    assert decode(cmyk, 3, size)[:, 0, 0].tolist() == expected == [255, 0, 0]

    big = write(tmp_path, "big.png", Image.new("L", (32, 16), 7))
    assert decode(big, 1, size).shape == (1, 8, 8)  # resized


def test_mixed_modes_in_one_manifest(tmp_path: Path) -> None:
    modes = [("L", 90), ("P", 1), ("RGB", (9, 9, 9)), ("RGBA", (9, 9, 9, 255)), ("LA", (5, 255))]
    lines = ["path,subject,expression"]
    for i in range(4):
        for e, expr in enumerate(EXPR):
            mode, colour = modes[(i + e) % len(modes)]
            name = f"{i}_{expr}.png"
            Image.new(mode, (10, 10), colour).save(tmp_path / name)
            lines.append(f"{name},s{i},{expr}")
    Image.fromarray(np.full((10, 10), 4000, np.uint16)).save(tmp_path / "x.png")
    lines.append("x.png,s0,happy")
    (tmp_path / "m.csv").write_text("\n".join(lines))
    for chans in (1, 3):
        data = ManifestData(ManifestData.Options(manifest=str(tmp_path / "m.csv"), num_folds=2))
        splits = data.setup(["expression"], {"in_chans": chans})
        assert tuple(splits.train.inputs.shape[1:]) == (chans, 10, 10)


@pytest.mark.parametrize(
    ("header", "missing"), [("path,subject", "expression"), ("file,subject,expression", "path")]
)
def test_missing_column(tmp_path: Path, header: str, missing: str) -> None:
    (tmp_path / "m.csv").write_text(header + "\na.png,s1,happy\n")
    expect(tmp_path / "m.csv", f"line 1: missing column.*{missing}")


def test_bad_rows(tmp_path: Path) -> None:
    build(tmp_path)
    base = (tmp_path / "faces.csv").read_text()
    bad_rows = {
        "img/p0_happy_0.png,,happy": "line 18: empty cell.*subject",
        "img/p0_happy_0.png,p0,happy": r"line 18: duplicate path .*first at line 2\)",
        "../outside.png,p0,happy": r"line 18: path '\.\./outside\.png' leads outside",
        "/etc/passwd,p0,happy": "line 18: path '/etc/passwd' leads outside",
        "img/p0_sad_0.png,p0": "line 18: 2 fields",
        "img/p0_happy_1.png,p0,happy,extra": "line 18: 4 fields",
    }
    for row, pattern in bad_rows.items():
        (tmp_path / "faces.csv").write_text(base + row + "\n")
        expect(tmp_path / "faces.csv", pattern)


def test_unknown_and_unused_expressions(tmp_path: Path) -> None:
    m = build(tmp_path, extra="img/new.png,p9,angry\n")
    expect(m, "line 18: unknown expression 'angry'", expressions=EXPR)
    m = build(tmp_path)
    expect(m, r"\['fear'\] have no images", expressions=[*EXPR, "fear"])
    _, splits = setup(m, expressions=["sad", "happy"])
    assert splits.info["expression"]["class_names"] == ["sad", "happy"]


BAD_FILES = {
    "missing.png": (None, "does not exist"),
    "empty.png": (b"", "empty"),
    "text.png": (b"not an image at all", "not an image"),
}


def test_bad_files(tmp_path: Path) -> None:
    build(tmp_path)
    base = (tmp_path / "faces.csv").read_text()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), np.uint8)).save(
        tmp_path / "full.png"
    )
    data = (tmp_path / "full.png").read_bytes()
    cases = {**BAD_FILES, "trunc.png": (data[: len(data) // 2], "truncated")}
    for name, (content, reason) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        (tmp_path / "faces.csv").write_text(base + f"{name},p1,happy\n")
        expect(tmp_path / "faces.csv", rf"faces\.csv line 18: .*{name}.*{reason}")


def test_skip_bad_files(tmp_path: Path) -> None:
    build(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"hello")
    rows = "missing.png,p1,happy\nempty.png,p2,sad\ntext.png,p3,happy\n"
    m = tmp_path / "faces.csv"
    m.write_text(m.read_text() + rows)
    data, splits = setup(m, on_bad_image="skip")
    s = splits.summary
    assert s["skipped"] == 3 and len(s["skipped_files"]) == 3
    assert "missing.png" in s["skipped_files"][0] and "line 18" in s["skipped_files"][0]
    assert s["total"]["images"] == 16 and len(data.records) == 19
    indices = sorted(int(i) for ds in splits.named().values() for i in ds.meta["index"])
    assert indices == list(range(16))  # the bad rows (16..18) are the ones left out


def test_missing_manifest(tmp_path: Path) -> None:
    expect(tmp_path / "none.csv", "does not exist")
    (tmp_path / "empty.csv").write_text("path,subject,expression\n")
    expect(tmp_path / "empty.csv", "no rows")
