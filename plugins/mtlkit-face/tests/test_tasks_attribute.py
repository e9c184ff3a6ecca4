"""The binary_attribute task, and 40 of them trained together through the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from mtlkit_face.tasks.attribute import BinaryAttributeTask

from mtlkit.cli import main
from mtlkit.errors import ConfigError
from mtlkit.task import MISSING_LABEL
from mtlkit.testing import check_task

REPO = Path(__file__).resolve().parents[3]


def test_conformance() -> None:
    info = {"num_classes": 2, "attribute": "smiling", "positive_rate": 0.5}
    check_task(BinaryAttributeTask, [{}, {"hidden_dim": 8, "label_smoothing": 0.1}], info=info)


def test_metrics_and_refuses_non_binary() -> None:
    task = BinaryAttributeTask("smiling")
    task.build_head(4, {"num_classes": 2})
    meter = task.new_meter()
    logits = torch.tensor([[1.0, 0], [0, 1], [0, 1], [1, 0], [0, 1]])
    target = torch.tensor([0, 1, 0, 1, MISSING_LABEL])  # TN, TP, FP, FN, unlabelled
    meter.update(logits, target, {})
    m = meter.compute()
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5 and m["f1"] == 0.5
    assert m["count"] == 4
    assert float(task.step_metric(logits, target)) == 0.5
    with pytest.raises(ConfigError, match="binary"):
        BinaryAttributeTask("x").build_head(4, {"num_classes": 3})


def test_config_generator_is_fresh() -> None:
    import runpy

    gen = runpy.run_path(str(REPO / "configs" / "gen_attribute_configs.py"))
    assert gen["OUT"].read_text() == gen["render"](), "rerun configs/gen_attribute_configs.py"


def test_forty_tasks_one_epoch(tmp_path: Path) -> None:
    """configs/synthetic_attributes_40.yaml: T = 40, equal weights, the core mlp trunk."""
    overrides = [
        f"output_dir={tmp_path / 'run'}", "trainer.epochs=1", "trainer.max_steps=4",
        "trainer.batch_size=32", "trainer.progress=off", "trainer.plot=false",
        "backbone={name: mlp, in_features: 768, hidden: [64]}",
        "data.image_size=16", "data.num_identities=12", "data.images_per_identity=8",
        "data.num_folds=4", "data.val_fraction=0.2",
    ]
    start = time.perf_counter()
    args = ["train", str(REPO / "configs" / "synthetic_attributes_40.yaml")]
    assert main(args + [x for o in overrides for x in ("-o", o)]) == 0
    elapsed = time.perf_counter() - start
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    test = results["metrics"]["test"]
    assert len(test) == 40 and 1 <= results["steps"] <= 4
    for metrics in test.values():
        assert {"accuracy", "balanced_accuracy", "f1"} <= set(metrics)
    assert elapsed < 60, elapsed  # ~5 s on an idle laptop core; generous for shared runners
