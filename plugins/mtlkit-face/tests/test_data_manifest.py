"""CSV-manifest dataset: every PIL mode converted right, every bad row/file named precisely."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from mtlkit_face.data.images import BadImage, clear_cache, decode, open_image
from mtlkit_face.data.manifest import ManifestData
from mtlkit_face.data.manifest_csv import read_manifest
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
        "img/p0_happy_0.png,,happy": r"line 18: empty cell.* in required column.*\[.subject.\]",
        "img/p0_happy_0.png,p0,": r"line 18: empty cell.*\['expression'\]",
        ",p0,happy": r"line 18: empty cell.*\['path'\]",
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
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable image\(s\) \(on_bad_image=skip\)"):
        data, splits = setup(m, on_bad_image="skip")
    s = splits.summary
    assert s["skipped_images"] == s["skipped"] == 3 and len(s["skipped_files"]) == 3
    assert "missing.png" in s["skipped_files"][0] and "line 18" in s["skipped_files"][0]
    assert s["total"]["images"] == 16 and len(data.records) == 19
    indices = sorted(int(i) for ds in splits.named().values() for i in ds.meta["index"])
    assert indices == list(range(16))  # the bad rows (16..18) are the ones left out


def test_missing_manifest(tmp_path: Path) -> None:
    expect(tmp_path / "none.csv", "does not exist")
    (tmp_path / "empty.csv").write_text("path,subject,expression\n")
    expect(tmp_path / "empty.csv", "no rows")


@pytest.mark.bad_input("bad image file, skipped by policy")
def test_skipped_images_notice_names_the_first_few_paths(tmp_path: Path) -> None:
    build(tmp_path)
    m = tmp_path / "faces.csv"
    m.write_text(m.read_text() + "".join(f"gone{i}.png,p1,happy\n" for i in range(5)))
    with pytest.warns(UserWarning) as caught:
        _, splits = setup(m, on_bad_image="skip")
    notice = next(str(w.message) for w in caught if "skipped" in str(w.message))
    assert "manifest: skipped 5 unreadable image(s)" in notice
    assert "gone0.png" in notice and "gone2.png" in notice and "gone3.png" not in notice
    assert "2 more" in notice
    assert splits.summary["skipped_images"] == 5
    assert isinstance(splits.summary["skipped_images"], int)


def test_no_skip_notice_when_nothing_is_skipped(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, splits = setup(build(tmp_path), on_bad_image="skip")
    assert splits.summary["skipped_images"] == 0
    assert not [w for w in caught if "skipped" in str(w.message)]


# --- optional columns, delimiters, unknown columns -------------------------------------------


def with_sequences(folder: Path, cells: list[str]) -> Path:
    """``build`` with a sequence column whose 16 cells are ``cells`` (empty = unknown)."""
    m = build(folder, sequence=True)
    header, *rows = m.read_text().splitlines()
    rows = [r.rsplit(",", 1)[0] + f",{c}" for r, c in zip(rows, cells, strict=True)]
    m.write_text("\n".join([header, *rows]) + "\n")
    return m


@pytest.mark.bad_input("manifest")
def test_empty_optional_sequence_cell_is_a_singleton_sequence(tmp_path: Path) -> None:
    cells = ["", "", "take1", "take1"] * 4  # happy frames: unknown; sad frames: one recording
    data, splits = setup(with_sequences(tmp_path, cells), protocol="sequence-holdout")
    seqs = [r.sequence for r in data.records]
    assert seqs[:4] == ["p0/ (line 2)", "p0/ (line 3)", "p0/take1", "p0/take1"]
    assert splits.summary["total"]["sequences"] == 4 * 3  # two singletons + take1, per person
    sizes = np.bincount(data.table.sequence_idx)
    singletons = [i for i, q in enumerate(data.table.sequences) if " (line " in q]
    assert len(singletons) == 8 and (sizes[singletons] == 1).all()
    test = splits.test.meta
    for person in range(4):  # one whole sequence held out per person: a singleton or take1
        held = test["sequence"][test["subject"] == person].unique()
        assert len(held) == 1


@pytest.mark.bad_input("manifest")
def test_all_sequence_cells_empty_still_loads(tmp_path: Path) -> None:
    _, splits = setup(with_sequences(tmp_path, [""] * 16))
    assert splits.summary["total"] == {"images": 16, "subjects": 4, "sequences": 16}


def test_singleton_never_collides_with_a_real_sequence_name(tmp_path: Path) -> None:
    cells = ["", "(line 2)"] + ["x"] * 14  # a real cell spelled like the singleton's name
    data, _ = setup(with_sequences(tmp_path, cells), tasks=("expression",))
    assert data.records[0].sequence != data.records[1].sequence


@pytest.mark.parametrize("delimiter", [";", "\t"], ids=["semicolon", "tab"])
@pytest.mark.bad_input("manifest")
def test_semicolon_and_tab_delimiters_are_detected(tmp_path: Path, delimiter: str) -> None:
    m = build(tmp_path, sequence=True)
    m.write_text(m.read_text().replace(",", delimiter))
    data, splits = setup(m, protocol="sequence-holdout")
    assert splits.summary["total"] == {"images": 16, "subjects": 4, "sequences": 8}
    assert data.records[0].sequence == "p0/take0"


def test_comma_manifest_with_semicolons_in_paths_stays_comma(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    lines = ["path,subject,expression"]
    for s in range(4):
        for e in EXPR:
            Image.new("L", (8, 8), 9 * s).save(tmp_path / "img" / f"a;{s};{e}.png")
            lines.append(f"img/a;{s};{e}.png,p{s},{e}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    _, splits = setup(tmp_path / "m.csv", tasks=("expression",))
    assert splits.summary["total"]["images"] == 8


@pytest.mark.bad_input("manifest")
def test_undetected_semicolon_delimiter_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path;subject;expression\na.png,p0,happy\nb.png,p1,sad\n")
    expect(tmp_path / "m.csv", "missing column.*seems to be semicolon-separated")


@pytest.mark.bad_input("manifest")
def test_undetected_tab_delimiter_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path\tsubject\texpression\na.png\tp0\nb.png\n")
    expect(tmp_path / "m.csv", "missing column.*seems to be tab-separated")


@pytest.mark.bad_input("manifest")
def test_unknown_columns_are_listed_with_the_closest_known_name(tmp_path: Path) -> None:
    m = build(tmp_path, sequence=True)
    m.write_text(m.read_text().replace("sequence", "sequnce", 1).replace("\n", ",1\n"))
    with pytest.warns(UserWarning, match="unknown column") as caught:
        records = read_manifest(m)
    notices = [str(w.message) for w in caught if "unknown column" in str(w.message)]
    assert len(notices) == 1  # listed once, not per row
    assert "['sequnce', '1']" in notices[0]
    assert "'sequnce': did you mean 'sequence'?" in notices[0]
    assert records[0].sequence == "p0/happy"  # the misspelt column is ignored, not used


def test_unknown_column_without_a_close_name_has_no_suggestion(tmp_path: Path) -> None:
    m = build(tmp_path)
    header, *rows = m.read_text().splitlines()
    m.write_text("\n".join([f"{header},comment", *(f"{r},ok" for r in rows)]) + "\n")
    with pytest.warns(UserWarning, match=r"ignoring unknown column\(s\) \['comment'\]; known"):
        read_manifest(m)


def test_known_columns_only_give_no_notice(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_manifest(build(tmp_path, sequence=True))


@pytest.mark.bad_input("manifest")
def test_misspelt_required_column_suggests_the_known_name(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,Subject,expression\na.png,p0,happy\n")
    expect(tmp_path / "m.csv", r"missing column.*'Subject': did you mean 'subject'\?")


# --- damaged versus non-image files ----------------------------------------------------------


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (12, 12), 40),  # tiny: half the bytes ends inside the chunk list
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), np.uint8)),
    ],
    ids=["small", "noisy"],
)
@pytest.mark.bad_input("bad image file")
def test_png_truncated_to_half_is_truncated_or_corrupt(tmp_path: Path, image: Image.Image) -> None:
    data = png(image)
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="is truncated or corrupt") as info:
        open_image(str(tmp_path / "half.png"))
    assert "not an image" not in str(info.value)


def test_non_image_file_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"path,subject,expression\n")
    with pytest.raises(BadImage, match="is not an image PIL can read"):
        open_image(str(tmp_path / "x.png"))


# --- a mistyped label (issue 27 B3) ------------------------------------------------------------


def _typo_on_a_training_row(folder: Path) -> Path:
    """Six people, fold 0 of 2 tests p0..p2; one of p4's rows says 'hapy' for 'happy'."""
    path = build(folder, subjects=6)
    text = path.read_text()
    path.write_text(text.replace("p4,happy", "p4,hapy", 1))
    return path


@pytest.mark.bad_input("labels and split")
def test_a_label_typo_on_a_training_row_is_named_not_silent(tmp_path: Path) -> None:
    """`hapy` trained a 3-class head without a word; now a notice names it, its line, the label
    it is close to and that it is never tested."""
    with pytest.warns(UserWarning) as caught:
        _, splits = setup(_typo_on_a_training_row(tmp_path), val_fraction=0.0)
    notes = " | ".join(str(w.message) for w in caught)
    assert "expression 'hapy' has 1 image(s) and is close to 'happy' (11 images)" in notes, notes
    assert "faces.csv line 18" in notes and "'expressions' option" in notes, notes
    assert "['hapy'] have no test images in fold 0" in notes, notes
    assert splits.info["expression"]["class_names"] == ["happy", "hapy", "sad"]


@pytest.mark.bad_input("labels and split")
def test_the_class_list_makes_a_typo_an_error_with_the_close_name(tmp_path: Path) -> None:
    expect(
        _typo_on_a_training_row(tmp_path),
        r"faces.csv line 18: unknown expression 'hapy'; expected one of \['happy', 'sad'\]"
        r" \('hapy': did you mean 'happy'\?\)",
        expressions=["happy", "sad"],
    )


def test_distinct_labels_of_any_size_give_no_typo_notice(tmp_path: Path) -> None:
    """A small class whose name is close to no other (and that every split holds) is no typo."""
    path = build(tmp_path, subjects=4)
    with path.open("a") as f:
        for s in range(4):
            Image.new("L", (12, 12), 200 + s).save(tmp_path / "img" / f"q{s}.png")
            f.write(f"img/q{s}.png,p{s},surprise\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup(path, val_fraction=0.0)
