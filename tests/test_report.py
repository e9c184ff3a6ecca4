"""``mtlkit report`` on hand-written results: every number checked against a hand computation."""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from mtlkit.cli import main
from mtlkit.report import (
    build_report,
    collect,
    describe,
    metric_bounds,
    render_markdown,
    sign_test,
    t_quantile_975,
    tradeoff_figure,
    weights_figure,
    wilcoxon,
)

TASKS = [{"name": "classification", "id": "a"}, {"name": "classification", "id": "b"}]


def _cell(
    root: Path,
    label: str,
    fold: int,
    test: dict[str, dict[str, float]],
    kind: str = "weighter",
    task: str | None = None,
    weight: float | None = None,
    weights: list[tuple[float, float]] | None = None,
    val: dict[str, dict[str, float]] | None = None,
) -> None:
    """A finished cell as a sweep leaves it: cell.json, results.json, steps.jsonl."""
    run = root / f"{label.replace(':', '-')}_fold{fold}-0123456789"
    run.mkdir(parents=True)
    method: dict[str, Any] = {"kind": kind}
    if task is not None:
        method["task"] = task
    if weight is not None:
        method["weight"] = weight
    cell = {"name": run.name, "label": label, "method": method, "fold": fold, "seed": 0,
            "axes": {}, "context": ""}
    (run / "cell.json").write_text(json.dumps(cell))
    config = {"seed": 0, "tasks": TASKS, "weighter": {"name": "x"}, "data": {"name": "synthetic"}}
    results = {"metrics": {"test": test, **({"val": val} if val else {})}, "config": config}
    (run / "results.json").write_text(json.dumps(results))
    if weights:
        rows = [
            {"step": i, "epoch": i // 2, "weight/a": wa, "weight/b": wb}
            for i, (wa, wb) in enumerate(weights)
        ]
        (run / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


# a/accuracy per fold (6 folds): the baseline, and the other method = baseline + DIFFS
EQUAL_A = [0.70, 0.72, 0.74, 0.70, 0.71, 0.73]
DIFFS = [0.10, 0.20, -0.05, 0.30, 0.0, 0.15]
EQUAL_B = [0.8, 0.9, 0.7, 0.8, 0.9, 0.7]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for f in range(6):
        _cell(root, "equal", f, {"a": {"accuracy": EQUAL_A[f], "loss": 1.0},
                                 "b": {"accuracy": EQUAL_B[f], "loss": 0.5}},
              weights=[(1.0, 1.0)] * 4)
        _cell(root, "dyn", f, {"a": {"accuracy": EQUAL_A[f] + DIFFS[f], "loss": 0.9},
                               "b": {"accuracy": EQUAL_B[f], "loss": 0.5}},
              weights=[(0.2 + 0.1 * f, 1.8 - 0.1 * f), (0.4, 1.6), (0.6, 1.4), (1.0, 1.0)])
        for w, acc in ((0.3, 0.75), (0.7, 0.85)):
            _cell(root, f"static:a={w}", f, {"a": {"accuracy": acc - 0.01 * f, "loss": 1.0},
                                             "b": {"accuracy": 0.8, "loss": 0.5}},
                  kind="static", task="a", weight=w)
    return root


@pytest.fixture(params=["scipy", "by hand"])
def stats_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each statistics test twice: through scipy.stats, and by hand as without SciPy."""
    if request.param == "scipy":
        pytest.importorskip("scipy")
    else:
        monkeypatch.setattr("mtlkit.report._scipy_stats", lambda: None)
    return str(request.param)


def test_scipy_and_the_hand_computation_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("scipy")
    rng = random.Random(0)
    cases = [[rng.choice([-3, -2, -1, 0, 1, 2, 3, 0.5]) / 100 for _ in range(n)]
             for n in range(0, 30)]
    cases += [[rng.gauss(0, 1) for _ in range(n)] for n in range(0, 30)]

    def numbers() -> list[float]:
        return ([wilcoxon(d) for d in cases] + [t_quantile_975(df) for df in range(1, 200)]
                + [sign_test(k, n - k) for n in range(25) for k in range(n + 1)])

    with_scipy = numbers()
    monkeypatch.setattr("mtlkit.report._scipy_stats", lambda: None)
    assert numbers() == pytest.approx(with_scipy, rel=1e-6)


def test_t_quantiles_are_the_textbook_values(stats_path: str) -> None:
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(5) == pytest.approx(2.571, abs=1e-3)
    assert t_quantile_975(30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile_975(40) == pytest.approx(2.021, abs=1e-3)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    assert t_quantile_975(10**6) == pytest.approx(1.95996, abs=1e-4)


def test_sign_and_wilcoxon_against_enumeration_by_hand(stats_path: str) -> None:
    # sign test: 4 wins, 1 loss -> 2 * (C(5,0) + C(5,1)) / 2^5
    assert sign_test(4, 1) == pytest.approx(2 * (1 + 5) / 32)
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    # Wilcoxon, ranks 1..5, W+ = 14: sums >= 14 are {all} and {all but rank 1}: p = 2 * 2/32
    assert wilcoxon(DIFFS) == pytest.approx(0.125)
    # tied magnitudes get average ranks 1.5, 1.5, 3, 4; W+ = 7; enumerate the 16 sign patterns
    diffs = [1.0, 1.0, -2.0, 3.0]
    ranks = [1.5, 1.5, 3.0, 4.0]
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in
            itertools.product([0, 1], repeat=4)]
    upper = sum(s >= 7 for s in sums)
    lower = sum(s <= 7 for s in sums)
    assert (upper, lower) == (5, 13)
    assert wilcoxon(diffs) == pytest.approx(2 * 5 / 16)
    # beyond 20 pairs: the normal approximation, z = (W+ - n(n+1)/4) / sqrt(n(n+1)(2n+1)/24)
    d = [float(i) if i % 3 else -float(i) for i in range(1, 26)]
    w_plus = sum(i for i in range(1, 26) if i % 3)
    z = (w_plus - 25 * 26 / 4) / math.sqrt(25 * 26 * 51 / 24)
    assert wilcoxon(d) == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))


def test_report_numbers_against_hand_computation(runs: Path, host) -> None:
    records, root, missing = collect(runs)
    assert len(records) == 24 and root == runs and missing == []
    report = build_report(records, baseline="equal")
    # the tasks' declared metrics (accuracy, macro_f1) that the results hold
    assert report["metrics"] == ["a/accuracy", "b/accuracy"]
    ctx = report["contexts"][0]
    stats = {m["label"]: m["stats"] for m in ctx["methods"]}

    # b/accuracy of equal: 0.8, 0.9, 0.7 twice: mean 0.8, std sqrt(0.04 / 5), t(5) = 2.5706
    s = stats["equal"]["b/accuracy"]
    std = math.sqrt(4 * 0.01 / 5)
    half = 2.570581836 * std / math.sqrt(6)
    assert s["n"] == 6 and s["mean"] == pytest.approx(0.8) and s["std"] == pytest.approx(std)
    assert s["ci95"] == pytest.approx([0.8 - half, 0.8 + half])
    dyn = [e + d for e, d in zip(EQUAL_A, DIFFS)]
    assert stats["dyn"]["a/accuracy"]["mean"] == pytest.approx(sum(dyn) / 6)

    # best static weight by the first metric's mean: static:a=0.7 (0.85 - 0.01 f); no cell has
    # validation metrics, so it is picked on test and the report says so
    assert ctx["best_static"] == "static:a=0.7" and ctx["best_static_split"] == "test"
    rows = {(c["reference"], c["method"], c["metric"]): c for c in ctx["comparisons"]}
    c = rows[("equal", "dyn", "a/accuracy")]
    assert (c["pairs"], c["wins"], c["ties"], c["losses"]) == (6, 4, 1, 1)
    assert c["sign_p"] == pytest.approx(0.375)  # 2 * (1 + 5) / 32
    assert c["wilcoxon_p"] == pytest.approx(0.125)
    assert c["mean_diff"] == pytest.approx(sum(DIFFS) / 6)
    c = rows[("equal", "dyn", "b/accuracy")]
    assert (c["wins"], c["ties"], c["losses"], c["sign_p"], c["wilcoxon_p"]) == (0, 6, 0, 1, 1)
    # against the best static: dyn - (0.85 - 0.01 f) = 0.70+0.10-0.85 = -0.05, ... per fold
    c = rows[("static:a=0.7", "dyn", "a/accuracy")]
    vs = [d - (0.85 - 0.01 * f) for f, d in enumerate(dyn)]
    assert (c["wins"], c["losses"]) == (sum(v > 0 for v in vs), sum(v < 0 for v in vs))
    assert ("static:a=0.7", "static:a=0.3", "a/accuracy") not in rows  # grid points: the plot

    # weight trajectories: epoch means per cell, then the mean over the 6 folds
    traj = ctx["trajectories"]["dyn"]
    assert traj["epoch"] == [0, 1]
    first = [((0.2 + 0.1 * f) + 0.4) / 2 for f in range(6)]
    assert traj["weight/a"] == pytest.approx([sum(first) / 6, 0.8])
    assert ctx["delta_m"] == {}  # no single-task cells


def test_delta_m_on_two_tasks_with_a_lower_is_better_metric(tmp_path: Path, host) -> None:
    root = tmp_path / "runs"
    # fold 0: single a acc 0.8, single b loss 0.5; mtl acc 0.84, loss 0.45
    # fold 1: single a acc 0.9, single b loss 0.4; mtl acc 0.81, loss 0.5
    for f, (sa, sb, ma, mb) in enumerate([(0.8, 0.5, 0.84, 0.45), (0.9, 0.4, 0.81, 0.5)]):
        _cell(root, "single:a", f, {"a": {"accuracy": sa, "loss": 1.0},
                                    "b": {"accuracy": 0.1, "loss": 9.0}}, kind="single", task="a")
        _cell(root, "single:b", f, {"a": {"accuracy": 0.1, "loss": 9.0},
                                    "b": {"accuracy": 0.5, "loss": sb}}, kind="single", task="b")
        _cell(root, "mtl", f, {"a": {"accuracy": ma, "loss": 1.0},
                               "b": {"accuracy": 0.5, "loss": mb}})
    report = build_report(collect(root)[0], metrics=["a/accuracy", "b/loss"])
    assert report["higher_is_better"] == {"a/accuracy": True, "b/loss": False}
    dm = report["contexts"][0]["delta_m"]["mtl"]
    # 100/2 * [(0.84-0.8)/0.8 - (0.45-0.5)/0.5] = 7.5;  100/2 * [(0.81-0.9)/0.9 - (0.5-0.4)/0.4]
    assert dm["values"] == pytest.approx([7.5, 50 * (-0.1 - 0.25)])
    assert dm["mean"] == pytest.approx(-5.0)
    assert dm["std"] == pytest.approx(math.sqrt(2 * 12.5**2))
    assert report["contexts"][0]["delta_m"]["single:a"]["values"] == pytest.approx(
        [50 * (0 - (9.0 - 0.5) / 0.5), 50 * (0 - (9.0 - 0.4) / 0.4)]
    )


def test_report_command_writes_markdown_json_and_plots(
    runs: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    out = runs.parent / "rep"
    assert main(["report", str(runs), "--baseline", "equal", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| `dyn` | a/accuracy | 6 | 4 / 1 / 1 |" in text
    assert "0.8000 ± 0.0894 [0.7061, 0.8939]" in text  # equal, b/accuracy
    assert json.loads((out / "report.json").read_text())["baseline"] == "equal"
    assert (out / "report.md").read_text() in text
    assert {p.name for p in out.glob("*.png")} == {"static_weight.png", "tradeoff.png",
                                                  "weights.png"}


def test_report_without_matplotlib_says_so_and_writes_no_png(
    runs: Path, host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = runs.parent / "rep"
    assert main(["report", str(runs), "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["plots"] == []
    assert "matplotlib is not installed" in captured.err
    assert not list(out.glob("*.png")) and (out / "report.md").is_file()


@pytest.mark.bad_input("report arguments")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baseline", "nope"], "--baseline 'nope' is not a method here"),
        (["--metrics", "a/acc"], "not among the test metrics"),
        (["--metrics", "c/accuracy"], "not among the test metrics"),
    ],
)
def test_bad_report_arguments_are_named_errors(
    runs: Path, host, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["report", str(runs), "--out", str(runs.parent / "rep"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtlkit: error: report: ") and message in err


@pytest.mark.bad_input("report arguments")
def test_report_on_an_empty_folder_is_an_error(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished cells" in capsys.readouterr().err


def test_trajectories_carry_the_gradient_cosine_when_logged(tmp_path: Path) -> None:
    """Runs with ``trainer.diagnostics`` log ``diag/cos_mean`` on some steps: the report averages
    the logged ones per epoch next to the weights; runs without it have no such column."""
    from mtlkit.report import _trajectory

    root = tmp_path / "runs"
    _cell(root, "dyn", 0, {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.5}},
          weights=[(1.0, 1.0)] * 4)
    run = next(root.iterdir())
    rows = [json.loads(x) for x in (run / "steps.jsonl").read_text().splitlines()]
    for r, cos in zip(rows, (0.5, None, -0.1, None)):
        r["diag/cos_mean"] = cos
    (run / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, _, _ = collect(root)
    traj = _trajectory(records[0])
    assert traj is not None and traj["diag/cos_mean"] == [0.5, -0.1]
    assert traj["weight/a"] == [1.0, 1.0]


def test_trajectories_come_from_the_epoch_means_without_a_step_log(tmp_path: Path) -> None:
    """A committed sweep keeps ``epochs.jsonl`` (with each epoch's training means) and leaves the
    bulky ``steps.jsonl`` out: the report's trajectories come from the epoch means."""
    from mtlkit.report import _trajectory

    root = tmp_path / "runs"
    _cell(root, "dyn", 0, {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.5}})
    run = next(root.iterdir())
    rows = [
        {"epoch": 0, "step": 3, "train": {"weight/a": 0.3, "weight/b": 1.7, "diag/cos_mean": 0.2}},
        {"epoch": 1, "step": 6, "val": {}},  # no training means: left out
        {"epoch": 2, "step": 9, "train": {"weight/a": 0.9, "weight/b": 1.1, "diag/cos_mean": -0.4}},
    ]
    (run / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, _, _ = collect(root)
    traj = _trajectory(records[0])
    assert traj is not None and traj["epoch"] == [0, 2]
    assert traj["weight/a"] == [0.3, 0.9] and traj["diag/cos_mean"] == [0.2, -0.4]


def test_cost_per_cell_counts_every_epoch_and_the_evaluation(tmp_path: Path) -> None:
    """``epoch_seconds`` (summed across resumes) is preferred to this process's
    ``train_seconds``; runs from before it fall back to ``train_seconds``."""
    root = tmp_path / "runs"
    timings = [
        {"train_seconds": 10.0, "epoch_seconds": 90.0, "eval_seconds": 30.0},  # resumed: 2 min
        {"train_seconds": 60.0, "eval_seconds": 0.0},  # an older run: 1 min
    ]
    for fold, timing in enumerate(timings):
        _cell(root, "dyn", fold, {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.5}})
        run = next(p for p in root.iterdir() if f"fold{fold}" in p.name)
        results = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**results, "timing": timing}))
    records, _, _ = collect(root)
    report = build_report(records, metrics=["a/accuracy"], trajectories=False)
    minutes = report["contexts"][0]["methods"][0]["minutes"]
    assert minutes["n"] == 2 and minutes["mean"] == pytest.approx(1.5)
    assert "| 1.50 | 3.0 |" in render_markdown(report, "runs")


def test_best_static_is_picked_on_validation(tmp_path: Path, host) -> None:
    """Validation prefers w=0.3, test w=0.7: the reference is w=0.3, and the heading names the
    split; without validation metrics the test pick is labelled an upper bound."""
    root = tmp_path / "runs"
    for f in range(3):
        _cell(root, "dyn", f, {"a": {"accuracy": 0.8}, "b": {"accuracy": 0.8}},
              val={"a": {"accuracy": 0.8}})
        for w, v, t in ((0.3, 0.9, 0.7), (0.7, 0.6, 0.95)):
            _cell(root, f"static:a={w}", f, {"a": {"accuracy": t}, "b": {"accuracy": 0.8}},
                  kind="static", task="a", weight=w, val={"a": {"accuracy": v}})
    records, _, _ = collect(root)
    ctx = build_report(records)["contexts"][0]
    assert (ctx["best_static"], ctx["best_static_split"]) == ("static:a=0.3", "val")
    c = next(c for c in ctx["comparisons"] if c["metric"] == "a/accuracy")
    assert c["reference"] == "static:a=0.3" and c["mean_diff"] == pytest.approx(0.1)
    md = render_markdown(build_report(records), "runs")
    assert "(best static weight by validation a/accuracy)" in md
    for r in records:
        r.val = {}
    ctx = build_report(records)["contexts"][0]
    assert (ctx["best_static"], ctx["best_static_split"]) == ("static:a=0.7", "test")
    assert "a test-set upper bound" in render_markdown(build_report(records), "runs")


def test_interval_is_cut_to_the_metrics_range_and_mean_std_n_stay() -> None:
    # two folds of accuracy 0.99 and 0.93: the t interval (t(1) = 12.7) runs to 1.23
    raw, cut = describe([0.99, 0.93]), describe([0.99, 0.93], bounds=(0.0, 1.0))
    assert raw["ci95"][1] > 1.2
    assert cut["ci95"][0] == pytest.approx(raw["ci95"][0]) and cut["ci95"][1] == 1.0
    assert {k: cut[k] for k in ("n", "mean", "std")} == {k: raw[k] for k in ("n", "mean", "std")}
    both = describe([0.5, 0.1], bounds=(0.0, 1.0))["ci95"]  # wider than the range on both sides
    assert both == [0.0, 1.0]


def test_bounds_come_from_the_plugin_else_from_a_fraction_name(host) -> None:
    from mtlkit.task import MetricSpec

    specs = {"a": {"accuracy": MetricSpec("accuracy", bounds=(0.0, 1.0)),
                   "score": MetricSpec("score", bounds=(-1.0, 1.0))}}
    got = metric_bounds(specs, ["a/accuracy", "a/score", "a/loss", "b/verification_auc",
                                "b/tar_at_far_1e-2", "b/verification_threshold"])
    assert got == {"a/accuracy": (0.0, 1.0), "a/score": (-1.0, 1.0), "a/loss": None,
                   "b/verification_auc": (0.0, 1.0), "b/tar_at_far_1e-2": (0.0, 1.0),
                   "b/verification_threshold": None}


def test_accuracy_intervals_of_two_folds_stay_in_unit_range(tmp_path: Path, host) -> None:
    root = tmp_path / "runs"
    for f, (a, b) in enumerate([(0.99, 0.60), (0.93, 0.70)]):
        _cell(root, "equal", f, {"a": {"accuracy": a}, "b": {"accuracy": b}})
    report = build_report(collect(root)[0])
    stats = report["contexts"][0]["methods"][0]["stats"]
    assert report["bounds"] == {"a/accuracy": [0.0, 1.0], "b/accuracy": [0.0, 1.0]}
    for s in stats.values():
        assert s["n"] == 2 and 0.0 <= s["ci95"][0] <= s["ci95"][1] <= 1.0
    assert stats["a/accuracy"]["mean"] == pytest.approx(0.96)
    md = render_markdown(report, "runs")
    # both t intervals run past 1 (0.96 + 0.38, 0.65 + 0.64); the report says so, and that
    # two cells are too few for the interval to compare methods
    assert "2 interval(s) reach past the metric's range ([0, 1]) and are cut" in md
    assert "n = 2 for `equal`" in md


def _figure_text(fig: Any) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]


def test_weights_plot_labels_fit_every_panel_has_a_legend(runs: Path) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    report = build_report(collect(runs)[0], metrics=["a/accuracy", "b/accuracy"],
                          directions={"a": {}, "b": {}})
    ctx = report["contexts"][0]
    fig = weights_figure(plt, ctx, "", columns=1)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert len(panels) == 2  # equal and dyn; the static cells' constant weights left out
        for ax in panels:
            lines = [ln.get_label() for ln in ax.get_lines()]
            assert ax.get_legend() is not None
            assert [t.get_text() for t in ax.get_legend().get_texts()] == lines == ["a", "b"]
            label = ax.yaxis.label
            box = label.get_window_extent(renderer)
            assert label.get_text() == "task weight"  # no dashed series drawn, none mentioned
            assert box.x0 >= 0 and box.y0 >= 0 and box.y1 <= fig.bbox.height
        assert not any("dashed" in t for t in _figure_text(fig))
        # equal gives both tasks weight 1: the first line is wider, so neither hides the other
        first, second = panels[0].get_lines()
        assert first.get_linewidth() > second.get_linewidth()
    finally:
        plt.close(fig)


def test_tradeoff_points_differ_in_marker_or_colour_per_method(runs: Path) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    records = collect(runs)[0]
    report = build_report(records, metrics=["a/accuracy", "b/accuracy"],
                          directions={"a": {}, "b": {}})
    fig = tradeoff_figure(plt, report, report["contexts"][0], records, "")
    try:
        ax = fig.axes[0]
        styles = set()
        for coll in ax.collections:
            path = coll.get_paths()[0]
            styles.add((path.vertices.tobytes(), tuple(coll.get_edgecolor()[0])))
            assert len(coll.get_facecolor()) == 0  # hollow: a point under another still shows
        assert len(styles) == len(ax.collections) == 4
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sorted(legend) == ["dyn", "equal", "static:a=0.3", "static:a=0.7"]
    finally:
        plt.close(fig)


def test_the_fold_of_a_run_is_the_option_its_data_plugin_declares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs not made by a sweep: the core names no data option; the plugin's ``fold_option``."""
    from mtlkit.data import DataModule
    from mtlkit.report import _fold_of

    class Folded(DataModule):
        fold_option = "split_index"

        def setup(self, tasks: Any, data_config: Any) -> Any:
            raise NotImplementedError

    class Plain(Folded):
        fold_option = None

    class Host:
        class datasets:  # the registry attribute of the plugin manager
            @staticmethod
            def resolve(name: str) -> Any:
                return {"folded": Folded, "plain": Plain}[name]

    monkeypatch.setattr("mtlkit.plugins.get_plugin_manager", lambda: Host)
    assert _fold_of({"data": {"name": "folded", "split_index": 3, "fold": 9}}) == 3
    assert _fold_of({"data": {"name": "plain", "fold": 9}}) is None
    assert _fold_of({"data": {"name": "unknown", "fold": 9}}) is None  # no plugin: no fold
    assert _fold_of({}) is None
