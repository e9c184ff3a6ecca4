"""benchmarks/ck48_study.py: the split-point table against a hand computation, and every
committed CK+48 report against the committed cells it was computed from (no hand-edited
figure survives)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from mtlkit.cellpack import pack_path
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


def _cell(label: str, kind: str, fold: int, expr: float, verif: float) -> Record:
    return Record(
        name=f"{label}-{fold}", dir=Path("."), label=label, kind=kind, task=None, weight=None,
        fold=fold, seed=0, context="",
        test={"expression": {"accuracy": expr},
              "face_identity": {"verification_accuracy": verif}},
        tasks=["face_identity", "expression"], config={},
    )


def test_plain_summary_against_a_hand_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five folds: `dyn` wins every expression pair against both references and loses every
    verification pair; `other` is better on verification only; static's grid spans 0.2/0.05."""
    monkeypatch.setattr(ck48_study, "_val", ck48_study._test)  # validation = test here
    rows = {  # label: (kind, expression, verification), the same on every fold
        "single:expression": ("single", 0.70, 0.50),
        "single:face_identity": ("single", 0.10, 0.90),
        "static:face_identity=0.1": ("static", 0.75, 0.85),
        "static:face_identity=0.9": ("static", 0.55, 0.90),
        "dyn": ("weighter", 0.80, 0.60),
        "other": ("weighter", 0.60, 0.95),
    }
    records = [_cell(label, kind, f, e + f / 1000, v + f / 1000)
               for label, (kind, e, v) in rows.items() for f in range(5)]
    c = ck48_study.claims(records, ["dyn", "other"])
    text = ck48_study.plain_summary(c, ck48_study._by_label(records), ["dyn", "other"])
    # 5 of 5 pairs better: exact Wilcoxon p = 2 / 2^5 = 0.0625, not < 0.05: partly shown at best
    assert "- `dyn` beats single-task learning on both tasks: **no**; expression +0.100" in text
    assert "(5/0/0, p=0.0625), verification -0.300 (0/0/5, p=0.0625)." in text
    assert "- `other` beats the best static weight picked on validation: **no**;" in text
    assert "expression -0.150 (0/0/5, p=0.0625), verification +0.050 (5/0/0, p=0.0625)" in text
    # variants span 0.2 on expression (= the grid's 0.2, not wider) and 0.35 on verification
    assert "It needs no tuning: **no**;" in text
    assert "a span of 0.350 against 0.050 for the whole static grid" in text
    assert "no variant is best on both tasks" in text
    assert "is not met by any one method with this recipe: the best mean expression accuracy is" \
        " 0.802 (`dyn`)" in text
    assert "the best verification accuracy 0.952 (`other`)" in text


COMMITTED = sorted(
    p for p in (BENCH / "results").glob("ck48_*.json")
    if "report" in json.loads(p.read_text())
)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_reports_match_their_cells(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each method's mean and std in a committed report, recomputed from the committed cells it
    lists (cells finished since are left out, so this holds between report runs too): the
    packed lines (``<output folder>.jsonl``), what a clone has, whether or not cell folders are
    here too; a folder here must be packed with the same results."""
    monkeypatch.chdir(REPO)  # the specs' output_dir is relative to the repository root
    stored: dict[str, Any] = json.loads(path.read_text())["report"]
    records, root, _ = collect(BENCH / "sweeps" / f"{path.stem}.yaml")
    packed = {r.name: r for r in collect(pack_path(root))[0]}
    by_name = {(r.context, r.name): r for r in records}
    checked = 0
    for ctx in stored["contexts"]:
        for method in ctx["methods"]:
            recs = [by_name[(ctx["context"], n)] for n in method["cells"]]
            for r in recs:  # what a clone has: the packed line, equal to a folder here
                assert r.name in packed, f"{r.name}: not packed: run mtlkit sweep SPEC --pack"
                assert (r.test, r.val) == (packed[r.name].test, packed[r.name].val), r.name
            assert all(r.label == method["label"] for r in recs)
            for metric, stats in method["stats"].items():
                task, _, name = metric.partition("/")
                values = [r.test[task][name] for r in recs]
                assert stats["n"] == len(values)
                assert stats["mean"] == pytest.approx(math.fsum(values) / len(values))
                checked += 1
    assert checked


def _pair(method: str, metric: str, wins: int, losses: int, p: float) -> dict[str, Any]:
    return {"reference": "equal", "why": "baseline", "method": method, "metric": metric,
            "pairs": wins + losses, "wins": wins, "ties": 0, "losses": losses,
            "mean_diff": 0.0, "sign_p": p, "wilcoxon_p": p}


def test_weighters_summary_against_a_hand_computation() -> None:
    """Three folds: `a` wins both accuracies in every fold, `b` loses both, `c` has two folds;
    the ranking follows Δm% and no p-value can fall under 0.05 with three pairs."""
    def method(label: str, kind: str, folds: int) -> dict[str, Any]:
        return {"label": label, "kind": kind, "folds": [str(f) for f in range(folds)]}

    report = {"contexts": [{
        "context": "",
        "methods": [method("equal", "weighter", 3), method("a", "weighter", 3),
                    method("b", "weighter", 3), method("c", "weighter", 2),
                    method("single:expression", "single", 3)],
        "delta_m": {"equal": {"n": 3, "mean": -1.0}, "a": {"n": 3, "mean": 2.5},
                    "b": {"n": 3, "mean": -9.0}, "c": {"n": 2, "mean": 0.25},
                    "single:expression": {"n": 3, "mean": -20.0}},
        "comparisons": [
            _pair("a", EXPR, 3, 0, 0.25), _pair("a", VERIF, 3, 0, 0.25),
            _pair("b", EXPR, 0, 3, 0.25), _pair("b", VERIF, 0, 3, 0.25),
            _pair("c", EXPR, 2, 0, 0.5), _pair("c", VERIF, 2, 0, 0.5),  # two folds: not every
        ],
    }]}
    text = ck48_study.weighters_summary(report, "equal")
    ranked = "`a` +2.50, `c` +0.25 (2 of 3 folds), `equal` -1.00, `b` -9.00."
    assert f"- Ranked by mean Δm%: {ranked}" in text
    assert "in every fold: `a`. Worse on both in every fold: `b`." in text
    assert "with 3 folds the smallest possible two-sided exact p" in text
    assert "(sign test or Wilcoxon) is 0.25" in text
    assert "single:expression" not in text
    # a spec of the baseline alone has nothing to compare
    alone = {"contexts": [{**report["contexts"][0], "methods": [method("equal", "weighter", 3)]}]}
    assert ck48_study.weighters_summary(alone, "equal") == ""


def test_recipe_pairs_against_a_hand_computation() -> None:
    """`equal` under two recipes: this one has folds 0-2, the other 1-3; only folds 1 and 2 are
    compared, and a method missing from the other spec is left out."""
    def cells(label: str, folds: range, expr: float, verif: float, minutes: float) -> list:
        return [dataclasses.replace(_cell(label, "weighter", f, expr + f / 100, verif),
                                    seconds=minutes * 60) for f in folds]

    mine = cells("equal", range(3), 0.80, 0.95, 6.0) + cells("only-here", range(3), 0.5, 0.5, 1)
    other = cells("equal", range(1, 4), 0.70, 0.96, 3.0)
    rows = ck48_study.recipe_pairs(mine, other)
    assert [(r["method"], r["metric"]) for r in rows] == [("equal", EXPR), ("equal", VERIF)]
    expr, verif = rows
    assert expr["pairs"] == 2
    assert expr["this"]["mean"] == pytest.approx(0.815)  # folds 1, 2: 0.81, 0.82
    assert expr["other"]["mean"] == pytest.approx(0.715)
    e = expr["paired"]
    assert (e["wins"], e["ties"], e["losses"]) == (2, 0, 0)
    assert e["mean_diff"] == pytest.approx(0.10)
    v = verif["paired"]
    assert (v["wins"], v["ties"], v["losses"]) == (0, 0, 2)
    assert v["mean_diff"] == pytest.approx(-0.01)
    assert expr["minutes"]["this"]["mean"] == pytest.approx(6.0)
    text = ck48_study.render_recipe_pairs(rows, "ck48_paper")
    assert "| `equal` | expression/accuracy | 0.8150 ± 0.0071 | 0.7150 ± 0.0071 | 2 / 0 / 0" in text
    assert "| +0.1000 | 0.5 | 6.00 / 3.00 |" in text


def _recipe(spec: str, val: tuple[float, float], test: tuple[float, float]) -> dict[str, Any]:
    return {"spec": spec, "recipe": spec, "variant": "-",
            f"val {EXPR}": val[0], f"val {VERIF}": val[1],
            f"test {EXPR}": test[0], f"test {VERIF}": test[1]}


def test_recipes_are_chosen_on_validation_only() -> None:
    """`ck48_recipe` is best on test, `ck48_recipe_bs32` on validation: the study recipe is the
    latter; the 40-epoch recipe is over the 20-epoch budget, so only the accuracy pick."""
    rows = [_recipe("ck48_recipe", (0.70, 0.90), (0.95, 0.99)),
            _recipe("ck48_recipe_bs32", (0.80, 0.92), (0.70, 0.90)),
            _recipe("ck48_recipe_plain40", (0.90, 0.95), (0.60, 0.80))]
    chosen = ck48_study.pick_recipes(rows)
    assert chosen["study"]["spec"] == "ck48_recipe_bs32"
    assert chosen["accuracy"]["spec"] == "ck48_recipe_plain40"
    assert ck48_study.pick_recipes([{**rows[0], f"val {VERIF}": None}]) == {
        "study": None, "accuracy": None}  # no validation numbers: no choice, never test's


def test_committed_recipe_table_names_its_choice_and_protocol() -> None:
    text = (BENCH / "results" / "ck48_recipe.md").read_text()
    assert "- the study recipe (within 20 epochs): batch 32, 20 epochs" in text
    assert "chosen on the validation split only" in text
    assert "round-robin threshold folds" in text


def test_reports_say_which_pair_protocol_the_cells_used() -> None:
    old = _cell("equal", "weighter", 0, 0.8, 0.9)
    assert "round-robin folds" in ck48_study.pair_protocol_note([old])
    new = dataclasses.replace(old, test={"face_identity": {
        "verification_accuracy_cross_sequence": 0.9, "verification_accuracy_all_pairs": 0.95}})
    note = ck48_study.pair_protocol_note([new])
    assert "two different sequences" in note and "round-robin" not in note


@pytest.mark.parametrize("name", ["ck48_paper", "ck48_accuracy", "ck48_weighters", "ck48_branch"])
def test_committed_reports_state_their_pair_protocol(name: str) -> None:
    text = (BENCH / "results" / f"{name}.md").read_text()
    assert "all same-person pairs of the split (two frames of one sequence included)" in text
    assert "round-robin folds of the pairs" in text


def test_the_accuracy_goal_needs_one_method_to_reach_both(monkeypatch: pytest.MonkeyPatch) -> None:
    """The best expression of one method and the best verification of another do not meet the
    goal together; a method reaching both does, and is named."""
    monkeypatch.setattr(ck48_study, "_val", ck48_study._test)
    rows = {
        "single:expression": ("single", 0.96, 0.50),
        "single:face_identity": ("single", 0.10, 0.985),
        "static:face_identity=0.5": ("static", 0.90, 0.95),
        "a": ("weighter", 0.97, 0.90),
        "b": ("weighter", 0.80, 0.99),
    }

    def summary(extra: dict[str, tuple[str, float, float]]) -> str:
        records = [_cell(label, kind, f, e, v)
                   for label, (kind, e, v) in {**rows, **extra}.items() for f in range(3)]
        c = ck48_study.claims(records, ["a", "b"])
        return ck48_study.plain_summary(c, ck48_study._by_label(records), ["a", "b"])

    assert "is not met by any one method with this recipe" in summary({})
    assert "is met by `c` with this recipe" in summary({"c": ("weighter", 0.955, 0.975)})
