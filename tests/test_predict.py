"""The core of predict/export: Task prediction hooks, the recorded threshold lookup, exporting a
core-only run, and the errors of a run whose dataset cannot read files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from mtlkit.builtin.classification import ClassificationTask
from mtlkit.cli import main
from mtlkit.export import SUFFIXES, TOLERANCE, run_exported, sidecar_path
from mtlkit.predict import format_rows, output_paths, recorded_metrics
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
        _, heads = run.trainer.model(x)
    for value, ref in zip(run_exported(fmt, out, x), (heads["a"], heads["b"])):
        assert torch.allclose(value, ref, **TOLERANCE)


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
