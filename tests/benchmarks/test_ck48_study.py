"""benchmarks/ck48_study.py: the split-point table against a hand computation, and every
committed CK+48 report against the committed cells it was computed from (no hand-edited
figure survives)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from mtlkit.report import Record, collect

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))
ck48_study = pytest.importorskip("ck48_study")

EXPR, VERIF = ck48_study.EXPR, ck48_study.VERIF


def _rec(label: str, arch: str, fold: int, expr: float, verif: float, seconds: float) -> Record:
    return Record(
        name=f"{label}-{arch}-{fold}", dir=Path("."), label=label, kind="weighter", task=None,
        weight=None, fold=fold, seed=0, context=f"architecture={arch}",
        test={"expression": {"accuracy": expr},
              "face_identity": {"verification_accuracy": verif}},
        tasks=["face_identity", "expression"], config={}, seconds=seconds,
    )


def test_split_points_against_a_hand_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ck48_study, "_params", lambda rec: {"total": 2, "shared": 1})
    records = [
        _rec("equal", "hps", 0, 0.80, 0.90, 60), _rec("equal", "hps", 1, 0.70, 0.95, 120),
        _rec("equal", "branch,split_at=act1", 0, 0.90, 0.90, 120),
        _rec("equal", "branch,split_at=act1", 1, 0.60, 0.99, 240),
    ]
    rows = {r["context"]: r for r in ck48_study.split_points(records)["rows"]}
    hps, act1 = rows["architecture=hps"], rows["architecture=branch,split_at=act1"]
    assert hps[f"{EXPR} vs hps"] is None  # the reference is not compared with itself
    assert act1[EXPR]["mean"] == pytest.approx(0.75)
    assert act1[EXPR]["std"] == pytest.approx(math.sqrt(0.045))  # (0.15^2 + 0.15^2) / 1
    assert act1["minutes"]["mean"] == pytest.approx(3.0)
    e = act1[f"{EXPR} vs hps"]
    assert (e["wins"], e["ties"], e["losses"]) == (1, 0, 1)
    assert e["mean_diff"] == pytest.approx((0.10 - 0.10) / 2)
    v = act1[f"{VERIF} vs hps"]
    assert (v["wins"], v["ties"], v["losses"]) == (1, 1, 0)
    assert v["mean_diff"] == pytest.approx(0.04 / 2)
    text = ck48_study.render_split_points({"rows": list(rows.values())})
    assert "| `equal` | `branch,split_at=act1` | 0.00 / 0.00 | 0.7500 ± 0.2121 |" in text
    assert "1 / 0 / 1, +0.0000 | 1 / 1 / 0, +0.0200 | 3.0 |" in text
    assert "- `equal`: expression is best at `hps` (0.7500)" in text  # ties: the first listed


COMMITTED = sorted(
    p for p in (BENCH / "results").glob("ck48_*.json")
    if "report" in json.loads(p.read_text())
)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_reports_match_their_cells(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each method's mean and std in a committed report, recomputed from the committed cells it
    lists (cells finished since are left out, so this holds between report runs too)."""
    monkeypatch.chdir(REPO)  # the specs' output_dir is relative to the repository root
    stored: dict[str, Any] = json.loads(path.read_text())["report"]
    records, _, _ = collect(BENCH / "sweeps" / f"{path.stem}.yaml")
    by_name = {(r.context, r.name): r for r in records}
    checked = 0
    for ctx in stored["contexts"]:
        for method in ctx["methods"]:
            recs = [by_name[(ctx["context"], n)] for n in method["cells"]]
            assert all(r.label == method["label"] for r in recs)
            for metric, stats in method["stats"].items():
                task, _, name = metric.partition("/")
                values = [r.test[task][name] for r in recs]
                assert stats["n"] == len(values)
                assert stats["mean"] == pytest.approx(math.fsum(values) / len(values))
                checked += 1
    assert checked
