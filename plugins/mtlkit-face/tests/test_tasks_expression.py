"""The expression task: builtin classification behaviour plus confusion-matrix artifacts (the
generic task contract is checked by the conformance kit in test_conformance.py)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from mtlkit_face.metrics.confusion import CORNER
from mtlkit_face.tasks.expression import ExpressionTask

from mtlkit.builtin.classification import ClassificationTask
from mtlkit.task import MISSING_LABEL

NAMES = ["anger", "happy", "surprise"]
INFO = {"num_classes": 3, "class_names": NAMES}


def filled_meter(task: ExpressionTask):
    """Five labelled samples (4 right, happy once taken for surprise) and one unlabelled."""
    meter = task.new_meter()
    target = torch.tensor([0, 1, 1, 2, 2, MISSING_LABEL])
    pred = torch.tensor([0, 1, 2, 2, 2, 0])
    meter.update(torch.nn.functional.one_hot(pred, 3).float(), target, {"meta": {}})
    return meter


def test_is_the_builtin_classification_task() -> None:
    task = ExpressionTask("expression")
    assert isinstance(task, ClassificationTask)
    head = task.build_head(10, INFO)
    assert head(torch.randn(4, 10)).shape == (4, 3)
    assert [m.name for m in task.metrics()] == ["accuracy", "macro_f1"]
    assert ExpressionTask("e", ExpressionTask.Options(label_smoothing=0.1)).options.label_smoothing


def test_meter_metrics_and_confusion_artifacts(tmp_path: Path) -> None:
    task = ExpressionTask("expression")
    task.build_head(10, INFO)
    meter = filled_meter(task)
    m = meter.compute()
    assert m["accuracy"] == pytest.approx(0.8) and m["count"] == 5
    assert meter.matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 2]]

    paths = meter.save_artifacts(tmp_path / "run", "test_expression_")
    csv_path = tmp_path / "run" / "test_expression_confusion.csv"
    png_path = tmp_path / "run" / "test_expression_confusion.png"
    assert paths == [str(csv_path), str(png_path)]
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [CORNER, *NAMES]
    assert rows[2] == ["happy", "0", "1", "1"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_only_the_csv_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    task = ExpressionTask("expression")
    task.build_head(4, INFO)
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        paths = filled_meter(task).save_artifacts(tmp_path, "")
    assert paths == [str(tmp_path / "confusion.csv")]
    assert not (tmp_path / "confusion.png").exists()


def test_class_names_fall_back_to_indices(tmp_path: Path) -> None:
    task = ExpressionTask("expression")
    task.build_head(4, {"num_classes": 3})
    filled_meter(task).save_artifacts(tmp_path, "x_")
    header = (tmp_path / "x_confusion.csv").read_text().splitlines()[0]
    assert header == f"{CORNER},0,1,2"


def test_the_plugin_registers_both_tasks() -> None:
    from mtlkit_face import plugin
    from mtlkit_face.tasks.identity import FaceIdentityTask

    from mtlkit.plugins import PluginHost

    host = PluginHost(load_entry_points=False)
    host.add(plugin, "face", dist="mtlkit-face")
    assert host.tasks.resolve("expression") is ExpressionTask
    assert host.tasks.resolve("face_identity") is FaceIdentityTask
