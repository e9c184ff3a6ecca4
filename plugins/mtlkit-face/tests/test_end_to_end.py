"""End to end through the CLI: the shipped configs train for one epoch and report every metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlkit.cli import main

REPO = Path(__file__).resolve().parents[3]

pytest.importorskip("mtlkit_timm")
pytest.importorskip("mtlkit_dynamic")


def _overrides(tmp_path: Path) -> list[str]:
    small = [
        f"output_dir={tmp_path / 'run'}",
        "trainer.epochs=1",
        "trainer.progress=off",
        "backbone.model_name=test_resnet",
    ]
    return [x for o in small for x in ("-o", o)]


@pytest.mark.parametrize(
    "config", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_configs_are_valid(config: Path) -> None:
    assert main(["config", "validate", str(config)]) == 0


def test_authors_recipe_trains_one_step(tmp_path: Path, ck48: Path) -> None:
    """configs/paper/ck48_authors.yaml runs as written: RMSProp network and unit, no detach."""
    args = ["train", str(REPO / "configs" / "paper" / "ck48_authors.yaml"), *_overrides(tmp_path)]
    args += ["-o", f"data.root={ck48}", "-o", "trainer.plot=false", "-o", "trainer.max_steps=2"]
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == 2
    assert results["resolved_config"]["weighter"]["detach"] is False


def test_demo_one_epoch_on_synthetic_faces(tmp_path: Path) -> None:
    args = ["train", str(REPO / "configs" / "demo.yaml"), *_overrides(tmp_path)]
    args += ["-o", "data.num_identities=10"]
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    test = results["metrics"]["test"]
    face = test["face_identity"]
    assert {"verification_auc_cross_sequence", "verification_auc_all_pairs"} <= set(face)
    # two test people: no threshold can be chosen without one of them, so no accuracy
    assert results["data"]["splits"]["test"]["subjects"] == 2
    assert not [k for k in face if k.startswith("verification_accuracy")]
    assert {"accuracy", "macro_f1"} <= set(test["expression"])
    assert (tmp_path / "run" / "training.png").stat().st_size > 0
    assert (tmp_path / "run" / "test_expression_confusion.csv").exists()


def test_ck48_one_epoch(tmp_path: Path, ck48: Path) -> None:
    args = ["train", str(REPO / "configs" / "ck48.yaml"), *_overrides(tmp_path)]
    args += ["-o", f"data.root={ck48}", "-o", "trainer.plot=false"]
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data"]["dataset"] == "ck48"
    assert results["data"]["protocol"] == "subject-kfold"
    test = results["metrics"]["test"]
    assert 0.0 <= test["expression"]["accuracy"] <= 1.0
    assert test["face_identity"]["num_pairs_cross_sequence"] > 100
    # the held-out subjects are never training identities
    assert "identification_accuracy" not in test["face_identity"]


SPECS = sorted((REPO / "benchmarks" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_committed_sweep_specs_are_valid(spec: Path) -> None:
    """Every committed study spec expands, and every cell's plugin options validate."""
    from mtlkit.plugins import get_plugin_manager
    from mtlkit.sweep import load_sweep, validate_cells

    sweep = load_sweep(spec)
    validate_cells(sweep, get_plugin_manager())
    assert sweep.cells and not [c.error for c in sweep.cells if c.error]


def test_the_weighters_study_runs_every_registered_weighter() -> None:
    """benchmarks/sweeps/ck48_weighters.yaml names every weighter mtlkit-weighters registers."""
    import yaml

    from mtlkit.plugins import get_plugin_manager

    registry = get_plugin_manager().weighters
    shipped = {e.name for e in registry.entries() if e.dist == "mtlkit-weighters"}
    spec = yaml.safe_load((REPO / "benchmarks" / "sweeps" / "ck48_weighters.yaml").read_text())
    listed = {w["name"] for w in spec["axes"]["weighter"]}
    assert shipped and shipped <= listed, f"missing from the spec: {sorted(shipped - listed)}"
