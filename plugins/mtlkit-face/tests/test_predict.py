"""``mtlkit predict`` on a tiny trained face run: rows, probabilities, embeddings, pairs, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from mtlkit.cli import main

from .conftest import expect_cli_error, face_config

pytest.importorskip("mtlkit_timm")


@pytest.fixture
def face_run(trained_face_run: dict[str, Any]) -> dict[str, Any]:
    return trained_face_run


def predict_args(face_run: dict[str, Any], *inputs: Any, out: Path | None = None) -> list[str]:
    args = ["predict", str(face_run["config"]), "--checkpoint", str(face_run["ckpt"])]
    args += [str(i) for i in inputs]
    return args + (["--out", str(out)] if out is not None else [])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_rows_match_the_model_on_the_same_pixels(
    face_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "pred.csv"
    assert main(predict_args(face_run, face_run["images"], out=out)) == 0
    rows = read_csv(out)
    names = [Path(r["path"]).name for r in rows]
    assert names == ["face0.png", "face1.png", "face2.png", "face3.png", "face4.png", "face5.png"]
    run, test = face_run["run"], face_run["test"]
    with torch.no_grad():
        _, heads = run.built.model(test.batch(torch.arange(6))["input"])
    probs = heads["expression"].softmax(-1)
    classes = run.built.tasks[1].class_names
    for i, row in enumerate(rows):
        got = torch.tensor([float(row[f"expression.prob.{c}"]) for c in classes])
        assert torch.allclose(got, probs[i], atol=1e-6)
        assert row["expression"] == classes[int(probs[i].argmax())]
        assert float(row["expression.confidence"]) == pytest.approx(float(probs[i].max()))
        assert row["face_identity"] in run.built.tasks[0].class_names
        assert row["error"] == ""
    emb = np.load(tmp_path / "pred.face_identity.embedding.npy")
    expected = F.normalize(heads["face_identity"]["embedding"], dim=1).numpy()
    assert emb.shape == (6, 128)
    np.testing.assert_allclose(emb, expected, atol=1e-5)


def test_jsonl_out_and_stdout(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pred.jsonl"
    assert main(predict_args(face_run, face_run["paths"][0], face_run["paths"][1], out=out)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    assert (tmp_path / "pred.face_identity.embedding.npy").exists()
    capsys.readouterr()
    assert main(predict_args(face_run, face_run["paths"][0])) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["expression"] == rows[0]["expression"]
    assert len(row["face_identity.embedding"]) == 128


def _colour_photo(face_run: dict[str, Any], folder: Path) -> Path:
    """A test face saved as an RGB JPEG of another size: what a user's camera gives."""
    folder.mkdir(exist_ok=True)
    path = folder / "b.jpg"
    Image.open(face_run["paths"][1]).convert("RGB").resize((50, 40)).save(path)
    return path


def test_manifest_input_and_converted_modes(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest's rows are read like the dataset's; an RGB image of another size is converted
    and resized as in training, so it predicts, and the conversion is named in its row, counted
    on stderr and in the closing line (the model is grayscale)."""
    folder = tmp_path / "data"
    folder.mkdir()
    Image.open(face_run["paths"][0]).save(folder / "a.png")
    _colour_photo(face_run, folder)
    manifest = folder / "list.csv"
    manifest.write_text("path,subject,expression\na.png,p1,happy\nb.jpg,p2,happy\n")
    out = tmp_path / "pred.csv"
    capsys.readouterr()
    assert main(predict_args(face_run, manifest, out=out)) == 0
    captured = capsys.readouterr()
    rows = read_csv(out)
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg"]
    assert all(r["error"] == "" and r["expression"] for r in rows)
    assert rows[0]["converted"] == ""
    assert rows[1]["converted"] == "colour (RGB) to grayscale; resized from 50x40 to 32x32"
    assert (
        "converted 1 of 2 input(s) to the model's grayscale 32x32 input (1 colour (RGB) to"
        " grayscale, 1 resized)" in captured.err
    )
    assert "--strict-inputs" in captured.err
    assert "1 converted to the model's grayscale 32x32" in captured.out


def test_inputs_already_in_the_models_layout_pass_strict_unconverted(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pred.csv"
    capsys.readouterr()
    assert main([*predict_args(face_run, face_run["images"], out=out), "--strict-inputs"]) == 0
    assert {r["converted"] for r in read_csv(out)} == {""}
    assert "converted" not in capsys.readouterr().err


def test_strict_inputs_with_skip_keeps_a_row_for_the_refused_image(
    face_run: dict[str, Any], tmp_path: Path
) -> None:
    photo = _colour_photo(face_run, tmp_path / "photos")
    out = tmp_path / "pred.csv"
    args = [*predict_args(face_run, face_run["paths"][0], photo, out=out), "--strict-inputs",
            "--on-bad-image", "skip"]
    assert main(args) == 0
    rows = read_csv(out)
    assert rows[0]["error"] == "" and rows[0]["expression"]
    assert "colour (RGB) to grayscale" in rows[1]["error"] and rows[1]["expression"] == ""


def test_pairs_use_the_recorded_threshold(face_run: dict[str, Any], tmp_path: Path) -> None:
    p = [str(x) for x in face_run["paths"]]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"first,second\n{p[0]},{p[1]}\n{p[2]},{p[3]}\n{p[0]},{p[0]}\n")
    out = tmp_path / "pred.csv"
    assert main([*predict_args(face_run, *p, out=out), "--pairs", str(pairs)]) == 0
    rows = read_csv(tmp_path / "pred.pairs.csv")
    emb = np.load(tmp_path / "pred.face_identity.embedding.npy")
    recorded = face_run["run"].recorded["face_identity"]["verification_threshold"]
    for row, (a, b) in zip(rows, [(0, 1), (2, 3), (0, 0)]):
        score = float(emb[a] @ emb[b])
        assert float(row["face_identity.score"]) == pytest.approx(score, abs=1e-5)
        assert float(row["face_identity.threshold"]) == pytest.approx(recorded)
        assert row["face_identity.same"] == str(score > recorded)
    assert rows[2]["face_identity.same"] == "True"  # an image is its own best match

    out2 = tmp_path / "again.csv"
    args = [*predict_args(face_run, *p, out=out2), "--pairs", str(pairs), "--threshold", "2"]
    assert main(args) == 0
    assert {r["face_identity.same"] for r in read_csv(tmp_path / "again.pairs.csv")} == {"False"}


def test_threshold_is_the_best_on_validation_pairs(face_run: dict[str, Any]) -> None:
    """What predict reads is the val metric at the checkpoint's step, a real cosine."""
    run = face_run["run"]
    history = json.loads((face_run["root"] / "run" / "results.json").read_text())["history"]
    last_val = history[-1]["val"]["face_identity"]
    assert run.recorded["face_identity"]["verification_threshold"] == pytest.approx(
        last_val["verification_threshold"]
    )
    assert -1.0 <= last_val["verification_threshold"] <= 1.0


def test_skip_policy_keeps_a_row_for_every_input(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 20)
    out = tmp_path / "pred.csv"
    args = [*predict_args(face_run, face_run["paths"][0], bad, face_run["paths"][1], out=out),
            "--on-bad-image", "skip"]
    assert main(args) == 0
    rows = read_csv(out)
    assert [r["error"] != "" for r in rows] == [False, True, False]
    assert "truncated or corrupt" in rows[1]["error"]
    assert rows[1]["expression"] == ""
    emb = np.load(tmp_path / "pred.face_identity.embedding.npy")
    assert np.isnan(emb[1]).all() and np.isfinite(emb[[0, 2]]).all()
    assert "skipped 1 unreadable input" in capsys.readouterr().err


# --- bad input: a named error, nothing written -------------------------------------------------


@pytest.mark.bad_input("predict or export")
def test_unreadable_image_stops_by_default(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "pred.csv"
    expect_cli_error(predict_args(face_run, face_run["paths"][0], bad, out=out), capsys,
                  "notes.png", "not an image", "--on-bad-image skip")
    assert not out.exists()


@pytest.mark.bad_input("predict or export")
def test_strict_inputs_refuses_a_colour_photo_for_a_grayscale_model(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _colour_photo(face_run, tmp_path / "photos")
    out = tmp_path / "pred.csv"
    expect_cli_error([*predict_args(face_run, face_run["paths"][0], photo, out=out),
                      "--strict-inputs"], capsys,
                     "b.jpg", "colour (RGB) to grayscale; resized from 50x40 to 32x32",
                     "--strict-inputs refuses", "grayscale 32x32", "--on-bad-image skip")
    assert not out.exists()


@pytest.mark.bad_input("predict or export")
def test_empty_folder(face_run: dict[str, Any], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / ".hidden" / "x.png").write_bytes(b"")
    expect_cli_error(predict_args(face_run, tmp_path / "empty"), capsys, "holds no image files")


@pytest.mark.bad_input("predict or export")
def test_missing_input(face_run: dict[str, Any], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    expect_cli_error(predict_args(face_run, tmp_path / "nope.png"), capsys, "nope.png",
                  "does not exist")


@pytest.mark.bad_input("predict or export")
def test_unknown_output_format(face_run: dict[str, Any], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    expect_cli_error(predict_args(face_run, face_run["images"], out=tmp_path / "p.xlsx"), capsys,
                  "unknown output format '.xlsx'", ".csv, .jsonl")


@pytest.mark.bad_input("predict or export")
def test_existing_output_is_refused_without_force(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pred.csv"
    out.write_text("precious\n")
    expect_cli_error(predict_args(face_run, face_run["paths"][0], out=out), capsys,
                  "output exists", "--force")
    assert out.read_text() == "precious\n"
    assert main([*predict_args(face_run, face_run["paths"][0], out=out), "--force"]) == 0
    assert read_csv(out)[0]["path"].endswith("face0.png")


@pytest.mark.bad_input("predict or export")
def test_existing_embedding_file_is_refused_too(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pred.face_identity.embedding.npy").write_text("precious")
    expect_cli_error(predict_args(face_run, face_run["paths"][0], out=tmp_path / "pred.csv"),
                  capsys, "pred.face_identity.embedding.npy")
    assert not (tmp_path / "pred.csv").exists()


@pytest.mark.bad_input("predict or export")
@pytest.mark.parametrize(("name", "hint"), [
    ("{folder}/face9.png", "did you mean"),
    # the docs promise the closest input name: a bare file name gets the path it stands for
    ("face1.png", "did you mean {face1!r}?"),
])
def test_pairs_naming_an_unknown_image(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
    hint: str,
) -> None:
    p = [str(x) for x in face_run["paths"]]
    name = name.format(folder=Path(p[0]).parent)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"first,second\n{p[0]},{p[1]}\n{p[0]},{name}\n")
    out = tmp_path / "pred.csv"
    expect_cli_error([*predict_args(face_run, *p, out=out), "--pairs", str(pairs)], capsys,
                  "line 3", f"{name!r} is not one of the 6 inputs", hint.format(face1=p[1]))
    assert not out.exists()


@pytest.mark.bad_input("predict or export")
def test_pairs_file_without_the_columns(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\nx,y\n")
    expect_cli_error([*predict_args(face_run, face_run["paths"][0]), "--pairs", str(pairs)],
                  capsys, "needs columns 'first' and 'second'")


@pytest.mark.bad_input("predict or export")
def test_missing_checkpoint(face_run: dict[str, Any], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["predict", str(face_run["config"]), "--checkpoint", str(tmp_path / "none.pt"),
            str(face_run["images"])]
    expect_cli_error(args, capsys, "checkpoint not found", "none.pt")


@pytest.mark.bad_input("predict or export")
def test_checkpoint_with_other_head_sizes(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another embedding width: the identity head does not fit; the message names the cause."""
    cfg = face_config(tmp_path / "o")
    cfg["tasks"][0]["embedding_dim"] = 64
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump(cfg))
    args = ["predict", str(config), "--checkpoint", str(face_run["ckpt"]), str(face_run["images"])]
    expect_cli_error(args, capsys, "does not fit", "size mismatch", "embedding_dim")


@pytest.mark.bad_input("predict or export")
def test_checkpoint_of_other_people(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Other training identities (another dataset): refused by their names."""
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump(face_config(tmp_path / "o", num_identities=12)))
    args = ["predict", str(config), "--checkpoint", str(face_run["ckpt"]), str(face_run["images"])]
    expect_cli_error(args, capsys, "task 'face_identity' was trained on classes")


@pytest.mark.bad_input("predict or export")
def test_checkpoint_with_other_class_names(
    face_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same head sizes, classes in another order: would load and mislabel, so it is refused."""
    classes = list(face_run["run"].built.tasks[1].class_names)
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump(face_config(tmp_path / "o", expressions=classes[::-1])))
    args = ["predict", str(config), "--checkpoint", str(face_run["ckpt"]), str(face_run["images"])]
    expect_cli_error(args, capsys, "task 'expression' was trained on classes", classes[-1])
