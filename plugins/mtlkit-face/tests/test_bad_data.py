"""A catalogue of bad face DATA through the CLI: each is a named error (exit 2), never a traceback.

Every case trains a tiny run (``mtlkit train``) on images built here with PIL; the message must
name the file or manifest row and the reason. Unusual but valid image modes must train (exit 0),
and ``on_bad_image: skip`` must train and list what it skipped in ``results.json``. Every case is
marked ``bad_input(category)``; ``benchmarks/reliability_counts.py`` counts them for
``docs/reliability.md``.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mtlkit_face.data.images import clear_cache
from PIL import Image

from mtlkit.cli import main

EXPR = ("happy", "sad")
SUBJECTS = 6
PER = 2
EXTRA_LINE = 2 + SUBJECTS * len(EXPR) * PER  # the line of a row appended to a good manifest

Setup = Callable[[Path], dict[str, Any]]
"""Builds the files of a case under a folder; returns the run's ``data`` config."""


@pytest.fixture(autouse=True)
def _fresh_decode_cache() -> None:
    clear_cache()  # each case rewrites files at the same paths: never reuse a decoded image


# --- building faces -------------------------------------------------------------------------


def pixels(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def faces(
    root: Path,
    subjects: int = SUBJECTS,
    expressions: tuple[str, ...] = EXPR,
    save: Callable[[Image.Image, Path], Path] | None = None,
) -> list[str]:
    """``subjects`` x ``expressions`` x 2 small RGB images under ``root/img``; manifest rows."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(subjects):
        for e, expr in enumerate(expressions):
            for f in range(PER):
                im = Image.fromarray(pixels(100 * s + 10 * e + f))
                path = root / "img" / f"p{s}_{expr}_{f}.png"
                path = save(im, path) if save else (im.save(path) or path)
                rows.append(f"{path.relative_to(root).as_posix()},p{s},{expr}")
    return rows


def manifest(root: Path, rows: list[str], header: str = "path,subject,expression") -> Path:
    path = root / "faces.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def manifest_data(path: Path, **options: Any) -> dict[str, Any]:
    return {"name": "manifest", "manifest": str(path), **options}


def png_bytes(seed: int = 7, size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels(seed, size)).save(buf, "PNG")
    return buf.getvalue()


def small_png() -> bytes:
    """A uniform 12x12 PNG (~70 bytes): half of it ends before any pixel data."""
    buf = io.BytesIO()
    Image.new("L", (12, 12), 90).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int = 7, size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels(seed, size)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + data))
    return struct.pack(">I", len(data)) + kind + data + crc


def bomb_png() -> bytes:
    """A 40000x40000 PNG header (no pixel data): PIL refuses it as a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def bad_crc_png() -> bytes:
    data = bytearray(png_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the IDAT stream
    return bytes(data)


# --- bad files listed in an otherwise good manifest -----------------------------------------


def _bad_file(name: str, make: Callable[[Path], None], **options: Any) -> Setup:
    def setup(root: Path) -> dict[str, Any]:
        rows = faces(root)
        make(root / "img" / name)
        return manifest_data(manifest(root, [*rows, f"img/{name},p2,happy"]), **options)

    return setup


def _content(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _mkdir(p: Path) -> None:
    p.mkdir()


def _dangling(p: Path) -> None:
    p.symlink_to(p.parent / "gone.png")


def _loop(p: Path) -> None:
    p.symlink_to(p)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _file(name: str, reason: str) -> tuple[str, ...]:
    return (f"faces.csv line {EXTRA_LINE}", name, reason)


BAD_FILES: list[tuple[str, str, Setup, tuple[str, ...]]] = [
    # (category, id, setup, fragments the message must contain)
    (
        "bad image file",
        "zero-byte file",
        _bad_file("z.png", _content(b"")),
        _file("z.png", "empty"),
    ),
    (
        "bad image file",
        "truncated PNG",
        _bad_file("t.png", _content(png_bytes()[: len(png_bytes()) // 2])),
        _file("t.png", "is truncated or corrupt"),
    ),
    (
        "bad image file",
        "small PNG truncated to half its bytes",
        _bad_file("half.png", _content(small_png()[: len(small_png()) // 2])),
        _file("half.png", "is truncated or corrupt: starts like a PNG file"),
    ),
    (
        "bad image file",
        "PNG cut inside its header",
        _bad_file("h.png", _content(png_bytes()[:20])),
        _file("h.png", "is truncated or corrupt"),
    ),
    (
        "bad image file",
        "PNG signature only",
        _bad_file("s.png", _content(png_bytes()[:8])),
        _file("s.png", "is truncated or corrupt"),
    ),
    (
        "bad image file",
        "truncated JPEG",
        _bad_file("t.jpg", _content(jpeg_bytes()[: len(jpeg_bytes()) // 2])),
        _file("t.jpg", "is truncated or corrupt"),
    ),
    (
        "bad image file",
        "JPEG cut inside its header",
        _bad_file("h.jpg", _content(jpeg_bytes()[:100])),
        _file("h.jpg", "is truncated or corrupt"),
    ),
    (
        "bad image file",
        "PNG with a corrupt data stream",
        _bad_file("crc.png", _content(bad_crc_png())),
        _file("crc.png", "is truncated or corrupt"),
    ),
    (
        "bad image file",
        "text file named .png",
        _bad_file("x.png", _content(b"not an image at all\n")),
        _file("x.png", "not an image PIL can read"),
    ),
    (
        "bad image file",
        "JPEG marker then garbage",
        _bad_file("g.jpg", _content(b"\xff\xd8\xff" + bytes(range(256)) * 2)),
        _file("g.jpg", "is truncated or corrupt: starts like a JPEG file"),
    ),
    (
        "bad image file",
        "decompression bomb header",
        _bad_file("bomb.png", _content(bomb_png())),
        _file("bomb.png", "too large to decode safely"),
    ),
    (
        "bad image file",
        "directory named like an image",
        _bad_file("d.png", _mkdir),
        _file("d.png", "is a folder"),
    ),
    (
        "bad image file",
        "dangling symlink",
        _bad_file("l.png", _dangling),
        _file("l.png", "broken symbolic link"),
    ),
    (
        "bad image file",
        "symlink loop",
        _bad_file("loop.png", _loop),
        _file("loop.png", "Too many levels of symbolic links"),
    ),
    (
        "bad image file",
        "named pipe named like an image",
        _bad_file("pipe.png", _fifo),
        _file("pipe.png", "not a regular file"),
    ),
    (
        "bad image file",
        "listed file missing",
        _bad_file("never.png", lambda p: None),
        _file("never.png", "does not exist"),
    ),
]


# --- bad manifests --------------------------------------------------------------------------


def _rows(edit: Callable[[list[str]], list[str]], header: str = "path,subject,expression", **kw):
    def setup(root: Path) -> dict[str, Any]:
        return manifest_data(manifest(root, edit(faces(root)), header), **kw)

    return setup


def _raw_manifest(content: bytes) -> Setup:
    def setup(root: Path) -> dict[str, Any]:
        faces(root)
        (root / "faces.csv").write_bytes(content)
        return manifest_data(root / "faces.csv")

    return setup


def _append(row: str) -> Callable[[list[str]], list[str]]:
    return lambda rows: [*rows, row]


def _recase(rows: list[str]) -> list[str]:
    """The last row spells its expression "Happy" while the others say "happy"."""
    *rest, last = rows
    path, subject, _ = last.split(",")
    return [*rest, f"{path},{subject},Happy"]


def _only_test_subject_fears(rows: list[str]) -> list[str]:
    """Expression "fear" only for p0, who is in the test fold (fold 0 of 3 over p0..p5)."""
    return [r.replace(",sad", ",fear") if ",p0," in r else r for r in rows]


def _line(n: int, *reasons: str) -> tuple[str, ...]:
    return (f"faces.csv line {n}", *reasons)


BAD_MANIFESTS: list[tuple[str, str, Setup, tuple[str, ...]]] = [
    (
        "manifest",
        "missing column",
        _rows(lambda r: [x.rsplit(",", 1)[0] for x in r], header="path,subject"),
        _line(1, "missing column(s) ['expression']"),
    ),
    (
        "manifest",
        "misnamed column",
        _rows(lambda r: r, header="file,subject,expression"),
        _line(1, "missing column(s) ['path']"),
    ),
    (
        "manifest",
        "misspelt required column",
        _rows(lambda r: r, header="path,subjects,expression"),
        _line(1, "missing column(s) ['subject']", "'subjects': did you mean 'subject'?"),
    ),
    (
        "manifest",
        "semicolon header over comma rows",
        _rows(lambda r: r, header="path;subject;expression"),
        _line(1, "missing column(s)", "seems to be semicolon-separated"),
    ),
    (
        "manifest",
        "repeated column",
        _rows(lambda r: [f"{x},p" for x in r], header="path,subject,expression,subject"),
        _line(1, "repeated column(s) ['subject']"),
    ),
    (
        "manifest",
        "empty cell",
        _rows(_append("img/p0_happy_0.png,,happy")),
        _line(EXTRA_LINE, "empty cell(s) in required column(s) ['subject']"),
    ),
    (
        "manifest",
        "too few fields",
        _rows(_append("img/p0_happy_0.png,p0")),
        _line(EXTRA_LINE, "2 fields, the header has 3"),
    ),
    (
        "manifest",
        "duplicate path",
        _rows(_append("img/p0_happy_0.png,p3,sad")),
        _line(EXTRA_LINE, "duplicate path 'img/p0_happy_0.png' (first at line 2)"),
    ),
    (
        "manifest",
        "duplicate path spelled differently",
        _rows(_append("img/./../img/p0_happy_0.png,p3,sad")),
        _line(EXTRA_LINE, "duplicate path"),
    ),
    (
        "manifest",
        "relative path escaping the folder",
        _rows(_append("../x.png,p0,happy")),
        _line(EXTRA_LINE, "path '../x.png' leads outside the manifest's folder"),
    ),
    (
        "manifest",
        "absolute path",
        _rows(_append("/etc/passwd,p0,happy")),
        _line(EXTRA_LINE, "path '/etc/passwd' leads outside the manifest's folder"),
    ),
    (
        "manifest",
        "unknown expression label",
        _rows(_append("img/p0_happy_0x.png,p0,angry"), expressions=list(EXPR)),
        _line(EXTRA_LINE, "unknown expression 'angry'"),
    ),
    (
        "manifest",
        "inconsistent label spelling",
        _rows(_recase),
        _line(EXTRA_LINE - 1, "expression 'Happy' differs from 'happy' (line 2) only in case"),
    ),
    (
        "manifest",
        "header only",
        _rows(lambda r: []),
        ("faces.csv", "no rows"),
    ),
    ("manifest", "zero-byte manifest", _raw_manifest(b""), _line(1, "missing column(s)")),
    (
        "manifest",
        "not UTF-8",
        _raw_manifest("path,subject,expression\nimg/é.png,p0,happy\n".encode("latin-1")),
        ("faces.csv", "not UTF-8 text"),
    ),
    ("manifest", "a PNG instead of a CSV", _raw_manifest(png_bytes()), ("faces.csv", "not UTF-8")),
    (
        "manifest",
        "field over the CSV size limit",
        _raw_manifest(b"path,subject,expression\n" + b"x" * 200_000 + b",p0,happy\n"),
        ("faces.csv", "malformed CSV", "field larger than field limit"),
    ),
    (
        "manifest",
        "manifest missing",
        lambda root: manifest_data(root / "nope.csv"),
        ("nope.csv", "does not exist"),
    ),
    (
        "manifest",
        "manifest is a folder",
        lambda root: (root / "dir.csv").mkdir() or manifest_data(root / "dir.csv"),
        ("dir.csv", "is not a file"),
    ),
]


# --- labels and splits ----------------------------------------------------------------------


def _all_unreadable(root: Path) -> dict[str, Any]:
    rows = faces(root)
    for row in rows:
        (root / row.split(",")[0]).write_bytes(b"")
    return manifest_data(manifest(root, rows), on_bad_image="skip")


BAD_LABELS: list[tuple[str, str, Setup, tuple[str, ...]]] = [
    (
        "labels and split",
        "expression class with no images",
        _rows(lambda r: r, expressions=[*EXPR, "fear"]),
        ("expression class(es) ['fear'] have no images",),
    ),
    (
        "labels and split",
        "split leaves a class out of training",
        _rows(_only_test_subject_fears),
        ("subject-kfold", "['fear'] have no training images in this split"),
    ),
    (
        "labels and split",
        "more folds than subjects",
        _rows(lambda r: r, num_folds=7),
        ("num_folds=7 exceeds the 6 subjects",),
    ),
    (
        "labels and split",
        "fold out of range",
        _rows(lambda r: r, fold=3),
        ("fold 3 is out of range for num_folds=3",),
    ),
    (
        "labels and split",
        "sequence holdout with one sequence per subject",
        lambda root: manifest_data(
            manifest(root, faces(root, expressions=("happy",))), protocol="sequence-holdout"
        ),
        ("sequence-holdout needs subjects with 2 or more sequences",),
    ),
    (
        "labels and split",
        "every image unreadable, skipped",
        _all_unreadable,
        ("no readable images (24 skipped)",),
    ),
]


# --- CK+48 folders --------------------------------------------------------------------------


def ck48(root: Path, subjects: int = SUBJECTS) -> Path:
    """The CK+48 layout: ``<root>/<expression>/S<subject>_<sequence>_<frame>.png``."""
    for e, expr in enumerate(EXPR):
        (root / expr).mkdir(parents=True, exist_ok=True)
        for s in range(subjects):
            for f in range(PER):
                im = Image.fromarray(pixels(100 * s + 10 * e + f)).convert("L")
                im.save(root / expr / f"S{s + 10:03d}_{e + 1:03d}_{f + 1:08d}.png")
    return root


def _ck48_with(make: Callable[[Path], None], **options: Any) -> Setup:
    def setup(root: Path) -> dict[str, Any]:
        folder = ck48(root / "ck48")
        make(folder)
        return {"name": "ck48", "root": str(folder), **options}

    return setup


def _copy(src: str, dst: str) -> Callable[[Path], None]:
    return lambda root: (root / dst).write_bytes((root / src).read_bytes())


BAD_CK48: list[tuple[str, str, Setup, tuple[str, ...]]] = [
    (
        "ck48 folder",
        "badly named file",
        _ck48_with(lambda r: (r / "happy" / "IMG_0001.png").write_bytes(png_bytes())),
        ("IMG_0001.png", "does not match S<subject>_<sequence>_<frame>"),
    ),
    (
        "ck48 folder",
        "root missing",
        lambda root: {"name": "ck48", "root": str(root / "nowhere")},
        ("nowhere", "does not exist or is not a folder"),
    ),
    (
        "ck48 folder",
        "root is a file",
        lambda root: (root / "f").write_text("x") and {"name": "ck48", "root": str(root / "f")},
        ("does not exist or is not a folder",),
    ),
    (
        "ck48 folder",
        "root without expression folders",
        lambda root: (root / "empty").mkdir() or {"name": "ck48", "root": str(root / "empty")},
        ("ck48: no images found",),
    ),
    (
        "ck48 folder",
        "expression folder missing",
        _ck48_with(lambda r: None, expressions=["happy", "fear"]),
        ("expression folder(s) ['fear'] are missing",),
    ),
    (
        "ck48 folder",
        "one sequence in two expression folders",
        _ck48_with(_copy("happy/S010_001_00000001.png", "sad/S010_001_00000009.png")),
        ("sequence 'S010_001' is labelled both 'happy'", "S010_001_00000009.png"),
    ),
    (
        "ck48 folder",
        "truncated image",
        _ck48_with(lambda r: (r / "sad" / "S012_002_00000001.png").write_bytes(png_bytes()[:300])),
        ("S012_002_00000001.png", "is truncated or corrupt"),
    ),
    (
        "ck48 folder",
        "dangling symlink named like a frame",
        _ck48_with(lambda r: (r / "sad" / "S012_002_00000005.png").symlink_to(r / "gone")),
        ("S012_002_00000005.png", "broken symbolic link"),
    ),
    (
        "ck48 folder",
        "folder named like a frame",
        _ck48_with(lambda r: (r / "sad" / "S012_002_00000005.png").mkdir()),
        ("S012_002_00000005.png", "is a folder"),
    ),
]


CASES = BAD_FILES + BAD_MANIFESTS + BAD_LABELS + BAD_CK48


# --- running ----------------------------------------------------------------------------------


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    """A one-epoch run: a flat MLP over 3x16x16 images, identity + expression heads."""
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
        "trainer": {"epochs": 1, "batch_size": 8, "progress": "off", "plot": False},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "backbone": {"name": "mlp", "in_features": 3 * 16 * 16, "hidden": [16]},
        "tasks": [{"name": "face_identity", "embedding_dim": 8}, {"name": "expression"}],
        "weighter": {"name": "equal"},
        "data": {"image_size": 16, "num_folds": 3, "augment": False, **data},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(tmp_path: Path, setup: Setup) -> int:
    root = tmp_path / "data"
    root.mkdir()
    return main(["train", str(write_config(tmp_path, setup(root)))])


@pytest.mark.parametrize(
    "setup, fragments",
    [pytest.param(s, f, id=i, marks=pytest.mark.bad_input(c)) for c, i, s, f in CASES],
)
def test_bad_data_is_a_named_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    setup: Setup,
    fragments: tuple[str, ...],
) -> None:
    monkeypatch.delenv("MTLKIT_CK48", raising=False)
    code = train(tmp_path, setup)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mtlkit: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "run" / "results.json").exists()


# --- unusual but valid images train ----------------------------------------------------------


def _as(mode: str, ext: str = "png", **save: Any) -> Callable[[Image.Image, Path], Path]:
    def convert(im: Image.Image, path: Path) -> Path:
        out = path.with_suffix(f".{ext}")
        if mode == "I;16":
            arr = np.asarray(im.convert("L"), dtype=np.uint16) * 16  # 12-bit data in 16 bits
            Image.fromarray(arr).save(out, **save)
        elif mode == "F":
            Image.fromarray(np.asarray(im.convert("L"), dtype=np.float32) / 255).save(out, **save)
        elif mode == "P+transparency":
            im.convert("P").save(out, transparency=0, **save)
        else:
            im.convert(mode).save(out, **save)
        return out

    return convert


MODES = [
    ("palette P", _as("P")),
    ("palette P with transparency", _as("P+transparency")),
    ("16-bit I;16", _as("I;16")),
    ("32-bit float F", _as("F", "tif")),
    ("RGBA", _as("RGBA")),
    ("CMYK JPEG", _as("CMYK", "jpg")),
    ("CMYK TIFF", _as("CMYK", "tif")),
    ("LA", _as("LA")),
    ("bilevel 1", _as("1")),
    ("grayscale JPEG", _as("L", "jpg")),
    ("animated GIF", _as("P", "gif", save_all=True)),
    ("1x1 pixel", lambda im, p: im.resize((1, 1)).save(p) or p),
    ("larger than the input", lambda im, p: im.resize((40, 24)).save(p) or p),
]


@pytest.mark.parametrize(
    "save",
    [pytest.param(s, id=i, marks=pytest.mark.bad_input("unusual image mode")) for i, s in MODES],
)
def test_unusual_image_modes_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], save: Callable
) -> None:
    def setup(root: Path) -> dict[str, Any]:
        return manifest_data(manifest(root, faces(root, save=save)))

    code = train(tmp_path, setup)
    err = capsys.readouterr().err
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data"]["total"]["images"] == SUBJECTS * len(EXPR) * PER
    assert results["data"]["skipped"] == 0


# --- the skip policy -------------------------------------------------------------------------


@pytest.mark.bad_input("bad image file, skipped by policy")
def test_skip_policy_trains_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def setup(root: Path) -> dict[str, Any]:
        rows = faces(root)
        (root / "img" / "empty.png").write_bytes(b"")
        (root / "img" / "text.png").write_bytes(b"hello")
        rows += ["img/empty.png,p2,happy", "img/text.png,p3,sad"]
        return manifest_data(manifest(root, rows), on_bad_image="skip")

    code = train(tmp_path, setup)
    err = capsys.readouterr().err
    assert code == 0, err
    data = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
    assert data["skipped_images"] == data["skipped"] == 2
    first, second = data["skipped_files"]
    assert f"line {EXTRA_LINE}" in first and "empty.png" in first and "empty" in first
    assert f"line {EXTRA_LINE + 1}" in second and "text.png" in second and "not an image" in second
    assert data["total"]["images"] == SUBJECTS * len(EXPR) * PER


@pytest.mark.bad_input("bad image file, skipped by policy")
def test_skip_policy_announces_the_count_at_setup(tmp_path: Path) -> None:
    def setup(root: Path) -> dict[str, Any]:
        rows = faces(root)
        (root / "img" / "half.png").write_bytes(small_png()[: len(small_png()) // 2])
        return manifest_data(manifest(root, [*rows, "img/half.png,p2,happy"]), on_bad_image="skip")

    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) \(on_bad_image=skip\)"):
        assert train(tmp_path, setup) == 0
    data = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
    assert data["skipped_images"] == 1 and "half.png" in data["skipped_files"][0]


# --- manifests that must load (with a warning where something is ignored) ----------------------


def _delimited(sep: str) -> Setup:
    return _rows(
        lambda r: [x.replace(",", sep) for x in r], header=f"path{sep}subject{sep}expression"
    )


def _sequences(cells: Callable[[int], str]) -> Setup:
    """A ``sequence`` column whose i-th cell is ``cells(i)`` (an empty string: unknown)."""
    return _rows(
        lambda r: [f"{x},{cells(i)}" for i, x in enumerate(r)],
        header="path,subject,expression,sequence",
        protocol="sequence-holdout",
    )


VALID_MANIFESTS: list[tuple[str, Setup, str | None]] = [
    # (id, setup, a warning the run must give, if any)
    ("semicolon-separated manifest", _delimited(";"), None),
    ("tab-separated manifest", _delimited("\t"), None),
    ("empty optional sequence cells", _sequences(lambda i: "" if i % 4 < 2 else "rec"), None),
    ("every sequence cell empty", _sequences(lambda i: ""), None),
    (
        "misspelt optional column",
        _rows(lambda r: [f"{x},take1" for x in r], header="path,subject,expression,sequnce"),
        "'sequnce': did you mean 'sequence'?",
    ),
    (
        "unknown extra column",
        _rows(lambda r: [f"{x},ok" for x in r], header="path,subject,expression,notes"),
        r"ignoring unknown column\(s\) \['notes'\]",
    ),
]


@pytest.mark.parametrize(
    "setup, warning",
    [
        pytest.param(s, w, id=i, marks=pytest.mark.bad_input("manifest"))
        for i, s, w in VALID_MANIFESTS
    ],
)
def test_manifest_variants_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: Setup, warning: str | None
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = train(tmp_path, setup)
    err = capsys.readouterr().err
    assert code == 0, err
    data = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
    assert data["total"]["images"] == SUBJECTS * len(EXPR) * PER
    notices = [str(w.message) for w in caught if "unknown column" in str(w.message)]
    if warning is None:
        assert not notices
    else:
        assert len(notices) == 1 and re.search(warning, notices[0]), notices


@pytest.mark.bad_input("labels and split")
def test_single_subject_test_fold_warns_at_setup(tmp_path: Path) -> None:
    def setup(root: Path) -> dict[str, Any]:
        return manifest_data(manifest(root, faces(root)), num_folds=SUBJECTS, val_fraction=0.4)

    with pytest.warns(UserWarning, match="fold 0 has one subject in its test split: verification"):
        assert train(tmp_path, setup) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    face = results["metrics"]["test"]["face_identity"]
    assert face["num_pairs_all_pairs"] == face["num_pairs_cross_sequence"] == 0
