"""The core of predict/export: Task prediction hooks, the recorded threshold lookup, exporting a
core-only run, and the errors of a run whose dataset cannot read files."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from mtlkit.builtin.classification import ClassificationTask
from mtlkit.cli import main
from mtlkit.export import SUFFIXES, TOLERANCE, run_exported, sidecar_path
from mtlkit.predict import closest_inputs, format_rows, output_paths, recorded_metrics
from mtlkit.task import MetricMeter, MetricSpec, Task, class_columns

from .conftest import tiny_config


class ToyRegressionTask(Task):
    """A task that overrides none of the prediction hooks: the defaults are what it gets."""

    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        return nn.Linear(feature_dim, 1)

    def per_sample_loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        return (output.squeeze(1) - target) ** 2

    def metrics(self) -> list[MetricSpec]:
        return []

    def new_meter(self) -> MetricMeter:
        raise NotImplementedError


def test_default_hooks_turn_narrow_outputs_into_columns_and_wide_ones_into_arrays() -> None:
    task = ToyRegressionTask("r")
    outputs = task.inference_outputs(torch.tensor([[1.5], [2.5]]))
    assert list(outputs) == ["output"]
    pred = task.predict(outputs)
    assert pred.columns == {"": [1.5, 2.5]} and pred.arrays == {}
    both = task.predict({"mean": torch.zeros(2), "code": torch.ones(2, 4)})
    assert both.columns == {"mean": [0.0, 0.0]}
    assert both.arrays["code"].shape == (2, 4)
    assert task.describe_outputs({}) == {}
    assert task.score_pairs(outputs, torch.tensor([0]), torch.tensor([1]), {}) is None


def test_default_inference_outputs_keep_a_mappings_tensors_only() -> None:
    task = ToyRegressionTask("r")
    assert list(task.inference_outputs({"a": torch.zeros(1), "note": "x"})) == ["a"]


def test_classification_predicts_names_and_probabilities() -> None:
    task = ClassificationTask("c")
    task.build_head(4, {"num_classes": 3, "class_names": ["cat", "dog", "owl"]})
    logits = torch.tensor([[0.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
    cols = task.predict(task.inference_outputs(logits)).columns
    assert cols[""] == ["dog", "cat"]
    probs = logits.softmax(-1)
    assert cols["prob.owl"] == pytest.approx(probs[:, 2].tolist())
    assert cols["confidence"] == pytest.approx(probs.max(-1).values.tolist())
    assert task.describe_outputs({})["logits"]["class_names"] == ["cat", "dog", "owl"]


def test_classification_without_names_numbers_its_classes() -> None:
    task = ClassificationTask("c")
    task.build_head(4, {"num_classes": 2, "class_names": ["only one"]})
    assert class_columns(torch.zeros(1, 2), task.class_names)[""] == ["0"]


def _state(step: int, history: list[dict]) -> dict:
    return {"train_state": {"step": step, "history": json.dumps(history)}}


def test_recorded_metrics_are_those_of_the_checkpoints_step(tmp_path: Path) -> None:
    ckpt = tmp_path / "best.pt"
    rows = [{"step": 5, "val": {"t": {"x": 1.0}}}, {"step": 10, "val": {"t": {"x": 2.0}}}]
    assert recorded_metrics(_state(10, rows), ckpt)[0] == {"t": {"x": 2.0}}
    # best.pt is written before its epoch's row joins the history: epochs.jsonl has it
    (tmp_path / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    found, where = recorded_metrics(_state(5, []), ckpt)
    assert found == {"t": {"x": 1.0}} and "epochs.jsonl" in where
    # nothing at step 7: no guess from another step
    assert recorded_metrics(_state(7, rows), ckpt)[0] == {}


def test_output_rows_as_csv_and_jsonl(tmp_path: Path) -> None:
    rows = [{"index": 0, "path": "a.png", "t": "x", "error": ""},
            {"index": 1, "path": "b.png", "t": None, "error": "bad"}]
    assert format_rows(rows, "csv").splitlines() == [
        "index,path,t,error", "0,a.png,x,", "1,b.png,,bad"]
    assert json.loads(format_rows(rows, "jsonl").splitlines()[1])["t"] is None
    paths = output_paths(tmp_path / "p.csv", ["face.embedding"], pairs=True)
    assert paths["face.embedding"].name == "p.face.embedding.npy"
    assert paths["pairs"].name == "p.pairs.csv"


@pytest.fixture(scope="module")
def core_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("core_run")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root)))
    assert main(["train", str(config)]) == 0
    return config, root / "run" / "last.pt"


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_core_run_exports_and_matches(
    core_run: tuple[Path, Path], tmp_path: Path, fmt: str
) -> None:
    """Any run exports (an MLP over feature vectors): outputs named by the tasks' hooks."""
    config, ckpt = core_run
    out = tmp_path / f"m{SUFFIXES[fmt]}"
    assert main(["export", str(config), "--checkpoint", str(ckpt), "--format", fmt,
                 "--out", str(out)]) == 0
    side = json.loads(sidecar_path(out).read_text())
    assert [o["name"] for o in side["outputs"]] == ["a.logits", "b.logits"]
    assert side["input"]["shape"] == ["batch", 16]
    assert "not uint8 images" in side["input"]["normalisation"]
    from mtlkit import load_config
    from mtlkit.predict import load_run

    run = load_run(load_config(config), ckpt)
    x = torch.randn(3, 16)
    with torch.no_grad():
        _, heads = run.built.model(x)
    for value, ref in zip(run_exported(fmt, out, x), (heads["a"], heads["b"])):
        assert torch.allclose(value, ref, **TOLERANCE)


def test_predict_and_export_build_the_model_only(
    core_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Trainer, weighter or optimizer, and no run folder: the model from the checkpoint."""
    import mtlkit.build
    import mtlkit.trainer
    from mtlkit import load_config
    from mtlkit.predict import load_run

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("predict and export must build the model only")

    monkeypatch.setattr(mtlkit.trainer.Trainer, "__init__", refuse)
    monkeypatch.setattr(mtlkit.build, "build_run", refuse)
    monkeypatch.setattr(mtlkit.build, "make_optimizer", refuse)
    monkeypatch.setattr(torch.optim.Optimizer, "__init__", refuse)
    config, ckpt = core_run
    elsewhere = tmp_path / "not-made"
    run = load_run(load_config(config, [f"output_dir={elsewhere}"]), ckpt)
    assert not elsewhere.exists()
    assert not run.built.model.training and run.built.task_ids == ["a", "b"]
    state = torch.load(ckpt, weights_only=True)["model"]
    for key, value in run.built.model.state_dict().items():
        assert torch.equal(value, state[key])
    out = tmp_path / "m.pt"
    assert main(["export", str(config), "--checkpoint", str(ckpt), "--format", "torchscript",
                 "--out", str(out), "-o", f"output_dir={elsewhere}"]) == 0
    assert out.exists() and not elsewhere.exists()


@pytest.mark.bad_input("predict or export")
def test_predict_on_a_dataset_that_reads_no_files(
    core_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ckpt = core_run
    (tmp_path / "x.png").write_bytes(b"")
    code = main(["predict", str(config), "--checkpoint", str(ckpt), str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "dataset 'synthetic'" in err and "cannot read input files" in err


@pytest.mark.bad_input("predict or export")
def test_threshold_without_pairs(
    core_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, ckpt = core_run
    code = main(["predict", str(config), "--checkpoint", str(ckpt), "x.png", "--threshold",
                 "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "--threshold applies to --pairs" in err


# --- the input layout a checkpoint stores ------------------------------------------------------


def _normalise(
    mean: list[float], std: list[float], flat: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A face-style prepare: (x / 255 - mean) / std per channel, optionally flattened."""

    def prepare(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        m = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
        out = (x.float() / 255.0 - m) / s
        return out.flatten(1) if flat else out

    return prepare


@pytest.mark.parametrize(("shape", "flat"), [((3, 5, 7), False), ((1, 40, 40), True)])
def test_layout_table_gives_the_prepares_very_floats(shape: tuple[int, ...], flat: bool) -> None:
    """The stored table reproduces the dataset's prepare bit for bit (after a JSON round trip),
    on images it was not measured on, and yields the mean and std an export documents."""
    from mtlkit.data import InMemoryDataset
    from mtlkit.layout import InputLayout

    mean, std = [0.485, 0.456, 0.406][: shape[0]], [0.229, 0.224, 0.225][: shape[0]]
    prepare = _normalise(mean, std, flat)
    images = torch.randint(0, 256, (4, *shape), dtype=torch.uint8)
    data = InMemoryDataset(inputs=images, targets={}, prepare=prepare)
    layout = InputLayout.from_json(InputLayout.measure(data).to_json())
    assert layout.prepare == "table" and layout.sample_shape == shape
    assert layout.input_shape == ((shape[0] * shape[1] * shape[2],) if flat else shape)
    new = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    rebuilt = layout.prepare_fn()
    assert rebuilt is not None and torch.equal(rebuilt(new), prepare(new))
    found = layout.mean_std()
    assert found is not None
    assert found[0] == pytest.approx(mean, abs=1e-5) and found[1] == pytest.approx(std, abs=1e-5)
    assert layout.describe() == ("RGB 7x5" if shape[0] == 3 else "grayscale 40x40")


def test_layout_of_a_prepare_that_is_no_pixel_map_is_not_stored() -> None:
    """A prepare that looks at the whole image (here: centring on its mean) cannot be stored;
    using such a layout without the data is a named error."""
    from mtlkit.data import InMemoryDataset
    from mtlkit.errors import DataError
    from mtlkit.layout import InputLayout

    def centre(x: torch.Tensor) -> torch.Tensor:
        f = x.float()
        return f - f.mean(dim=(1, 2, 3), keepdim=True)

    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    layout = InputLayout.measure(InMemoryDataset(inputs=images, targets={}, prepare=centre))
    assert layout.prepare == "opaque" and layout.mean_std() is None
    with pytest.raises(DataError, match="training data must be available"):
        layout.prepare_fn()
    floats = InputLayout.measure(InMemoryDataset(inputs=torch.randn(2, 16), targets={}))
    assert floats.prepare == "float" and floats.prepare_fn() is None
    assert floats.describe() == "float32 [16]"


def _data_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the core synthetic dataset fail to set up, as a dataset whose files are gone does."""
    from mtlkit.builtin.synthetic import SyntheticData
    from mtlkit.errors import DataError

    def gone(self: Any, tasks: Any, data_config: Any) -> Any:
        raise DataError("synthetic: the data folder is gone")

    monkeypatch.setattr(SyntheticData, "setup", gone)


def test_export_from_the_checkpoint_alone_matches_the_export_with_data(
    core_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without its data a run exports from what its checkpoint stores: same heads, same input
    description, the same outputs."""
    config, ckpt = core_run
    args = ["export", str(config), "--checkpoint", str(ckpt), "--format", "torchscript"]
    assert main([*args, "--out", str(tmp_path / "with.pt")]) == 0
    _data_gone(monkeypatch)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "without.pt")]) == 0
    err = capsys.readouterr().err
    assert "export: the data could not be set up (synthetic: the data folder is gone)" in err
    assert "stored in last.pt" in err
    with_data = json.loads(sidecar_path(tmp_path / "with.pt").read_text())
    without = json.loads(sidecar_path(tmp_path / "without.pt").read_text())
    assert without["input"] == with_data["input"]
    assert without["outputs"] == with_data["outputs"]
    assert without["class_names_and_layout_from"] == "checkpoint"
    assert "random" in without["check"]["inputs"]
    x = torch.randn(5, 16)
    for a, b in zip(run_exported("torchscript", tmp_path / "with.pt", x),
                    run_exported("torchscript", tmp_path / "without.pt", x)):
        assert torch.equal(a, b)


@pytest.mark.bad_input("predict or export")
def test_older_checkpoint_without_its_layout_needs_the_data(
    core_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A checkpoint written before the layout was stored still exports with the data; without
    the data the error says what the checkpoint lacks and what to do."""
    from mtlkit.checkpoint import load_checkpoint, save_checkpoint

    config, ckpt = core_run
    state = load_checkpoint(ckpt)
    del state["input_layout"], state["format_version"]
    old = save_checkpoint(state, tmp_path / "old.pt")
    args = ["export", str(config), "--checkpoint", str(old), "--format", "torchscript"]
    assert main([*args, "--out", str(tmp_path / "a.pt")]) == 0
    _data_gone(monkeypatch)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b.pt")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "mtlkit: error: " in err
    assert "the data folder is gone" in err and "does not record its input layout" in err
    assert "make the training data available" in err
    assert not (tmp_path / "b.pt").exists()


@pytest.mark.parametrize(("command", "wording"), [("export", "exporting"),
                                                  ("predict", "predicting with")])
def test_another_configs_checkpoint_is_noticed_in_the_commands_words(
    core_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    command: str, wording: str,
) -> None:
    config, ckpt = core_run
    args = [command, str(config), "-o", "seed=11", "--checkpoint", str(ckpt)]
    args += (["--format", "torchscript", "--out", str(tmp_path / "m.pt")] if command == "export"
             else [str(tmp_path)])
    capsys.readouterr()
    main(args)
    err = capsys.readouterr().err
    assert f"mtlkit: {wording} a checkpoint trained with another config:" in err
    assert "seed" in err and "evaluating" not in err


def test_a_bare_file_name_is_matched_to_the_inputs_with_that_name() -> None:
    known = ["data/images/face1.png", "data/images/face2.png", "other/face1.png"]
    # whole-path difflib found nothing for a bare name: the folders outweigh it
    assert closest_inputs("face1.png", known) == ["data/images/face1.png", "other/face1.png"]
    assert closest_inputs("face2.png", known) == ["data/images/face2.png"]
    assert closest_inputs("fase2.png", known) == ["data/images/face2.png"]  # a typo, by name
    assert closest_inputs("data/images/face2.pgn", known) == ["data/images/face2.png"]
    assert closest_inputs("zzz.txt", known) == []


def test_the_input_file_interface_lives_with_the_other_interfaces() -> None:
    """Beside DataModule in mtlkit.data, exported from mtlkit; the documented old path works."""
    import mtlkit
    import mtlkit.data
    import mtlkit.predict

    for name in ("ReadsInputFiles", "UsesDataInfo", "InputFile", "InputSample", "Conversion"):
        assert getattr(mtlkit, name) is getattr(mtlkit.data, name) is getattr(mtlkit.predict, name)
