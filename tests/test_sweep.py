"""``mtlkit sweep``: cells named by their config, skipped when finished, resumed after a kill,
new when the config changes; failed cells recorded; parallel jobs; dry runs; bad specs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtlkit.cli import main
from mtlkit.sweep import cpu_count, load_sweep

from .conftest import tiny_config


def _write(tmp_path: Path, axes: dict[str, Any], **spec: Any) -> Path:
    """A base config (tiny, 1 epoch of 7 steps) and a spec beside it; cells under tmp/sw."""
    base = tiny_config(tmp_path, trainer__epochs=1)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    data = {"base": "base.yaml", "output_dir": str(tmp_path / "sw"), "axes": axes, **spec}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sweep_json(tmp_path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    return {c["label"] + str(c["axes"] or ""): c for c in data["cells"]}


def _events(out: str) -> list[tuple[str, str]]:
    """(event, cell name) of each progress line."""
    rows = []
    for line in out.splitlines():
        if line.startswith("["):
            _, event, name, *_ = line.split()
            rows.append((event, name))
    return rows


def test_sweep_runs_then_skips_then_resumes_an_interrupted_and_a_deleted_cell(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _write(
        tmp_path,
        {"weighter": [{"name": "equal"}], "static_grid": {"task": "a", "values": [0.25, 0.75]}},
        overrides=["trainer.epochs=2"],
    )
    from mtlkit.trainer import Trainer

    real_step = Trainer.train_step

    def ctrl_c_in_second_cell(self: Trainer, batch: Any) -> Any:
        out = real_step(self, batch)
        if self.run_dir.name.startswith("static-a=0.25") and self.state.step == 4:
            signal.raise_signal(signal.SIGINT)  # the trainer's handler: checkpoint after the step
        return out

    monkeypatch.setattr(Trainer, "train_step", ctrl_c_in_second_cell)
    assert main(["sweep", str(spec)]) == 75
    out = capsys.readouterr().out
    assert [e for e, _ in _events(out)] == ["running", "done", "running", "interrupted"]
    cells = _sweep_json(tmp_path)
    assert [c["status"] for c in cells.values()] == ["done", "interrupted", "pending"]
    killed = Path(cells["static:a=0.25"]["dir"])
    assert (killed / "last.pt").is_file() and not (killed / "results.json").exists()
    assert (killed / "cell.json").is_file() and (killed / "config.yaml").is_file()

    monkeypatch.setattr(Trainer, "train_step", real_step)
    done_before = (Path(cells["equal"]["dir"]) / "results.json").stat().st_mtime_ns
    assert main(["sweep", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "resuming from its checkpoint" in out
    assert [e for e, _ in _events(out)] == ["skipped", "running", "done", "running", "done"]
    assert (Path(cells["equal"]["dir"]) / "results.json").stat().st_mtime_ns == done_before
    results = json.loads((killed / "results.json").read_text())
    assert results["steps"] == 14  # 2 epochs of 7 steps: 5 before the stop, 9 after
    assert len((killed / "steps.jsonl").read_text().splitlines()) == 14
    assert results["config"]["weighter"] == {"name": "static", "weights": {"a": 0.25, "b": 0.75}}

    # a finished cell whose results.json is gone: only it runs again (from its last.pt)
    (Path(cells["static:a=0.75"]["dir"]) / "results.json").unlink()
    assert main(["sweep", str(spec)]) == 0
    events = _events(capsys.readouterr().out)
    assert [e for e, _ in events] == ["skipped", "skipped", "running", "done"]
    assert events[-1][1] == Path(cells["static:a=0.75"]["dir"]).name


def test_changed_config_makes_new_cells_and_keeps_the_old(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write(tmp_path, {"override": {"optimizer.lr": [0.01, 0.02]}})
    assert main(["sweep", str(spec)]) == 0
    old = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir())
    assert len(old) == 2 and all(n.startswith("equal_lr=0.0") for n in old)
    capsys.readouterr()

    text = spec.read_text().replace("0.02", "0.03")
    spec.write_text(text)
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert " done" in listed and " new" in listed  # lr=0.01 is the same cell, lr=0.03 is new
    assert main(["sweep", str(spec)]) == 0
    events = _events(capsys.readouterr().out)
    assert [e for e, _ in events] == ["skipped", "running", "done"]
    now = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir())
    assert set(old) < set(now) and len(now) == 3  # the lr=0.02 cell is kept, not reused

    # any change of what a run computes is a new hash, even outside the axes
    other = tmp_path / "other.yaml"
    other.write_text(text + "overrides: [trainer.batch_size=32]\n")
    hashes = {c.hash for c in load_sweep(other).cells}
    assert not hashes & {n.rsplit("-", 1)[1] for n in now}
    # results of another config in a cell's folder are never taken as finished
    cell = load_sweep(spec).cells[0]
    results = json.loads((cell.dir / "results.json").read_text())
    results["config"]["seed"] = 99
    (cell.dir / "results.json").write_text(json.dumps(results))
    assert main(["sweep", str(spec), "--dry-run", "--json"]) == 0
    states = [c["status"] for c in json.loads(capsys.readouterr().out)["cells"]]
    assert states == ["stale", "done"]


@pytest.mark.bad_input("sweep rerun after a plugin default changed")
def test_results_computed_under_another_plugin_default_are_rerun_not_reused(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config as written is the same, but the plugin's default is not what the results were
    computed with (an upgrade changed it): the cell says why and trains afresh."""
    spec = _write(tmp_path, {"override": {"optimizer.lr": [0.01, 0.02]}})
    assert main(["sweep", str(spec)]) == 0
    capsys.readouterr()
    cell = load_sweep(spec).cells[0]
    path = cell.dir / "results.json"
    results = json.loads(path.read_text())
    assert "missing_fraction" not in results["config"]["data"]  # left to the plugin's default
    assert results["resolved_config"]["data"]["missing_fraction"] == 0.0
    results["resolved_config"]["data"]["missing_fraction"] = 0.2  # the default it ran under
    results["resolved_config"]["data"]["gone_option"] = 1  # dropped since: cannot be compared
    path.write_text(json.dumps(results))

    assert main(["sweep", str(spec), "--dry-run", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["cells"]
    assert [r["status"] for r in rows] == ["stale", "done"]
    assert "data.missing_fraction: 0.2 -> 0.0" in rows[0]["error"]
    assert "gone_option" not in rows[0]["error"]

    assert main(["sweep", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "a plugin default changed since it ran (data.missing_fraction: 0.2 -> 0.0)" in out
    assert [e for e, _ in _events(out)] == ["skipped", "running", "done"]  # skips print first
    rerun = json.loads(path.read_text())
    assert rerun["resolved_config"]["data"]["missing_fraction"] == 0.0


def test_a_finished_run_of_the_same_config_under_another_name_is_reused(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two specs sharing an output folder: a cell that is the same config (here the default
    architecture spelled out as an axis) is skipped, not run twice; a different one is new."""
    spec = _write(tmp_path, {})
    assert main(["sweep", str(spec)]) == 0
    first = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir())
    capsys.readouterr()
    data = yaml.safe_load(spec.read_text())
    data["axes"] = {"override": {"architecture": [{"name": "hps"}], "optimizer.lr": [0.01, 0.07]}}
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    cells = load_sweep(other).cells
    assert cells[0].name.startswith("equal_architecture=hps_lr=0.01-")
    assert cells[0].context == "architecture=hps, optimizer.lr=0.01"
    base_lr = yaml.safe_load((tmp_path / "base.yaml").read_text())["optimizer"]["lr"]
    assert base_lr == 0.01, "the test needs the base lr as one axis value"
    assert cells[0].dir.name == first[0]  # the finished run, found by its config
    assert main(["sweep", str(other)]) == 0
    events = _events(capsys.readouterr().out)
    assert [e for e, _ in events] == ["skipped", "running", "done"]
    now = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir())
    assert len(now) == 2 and first[0] in now
    # the report of the second spec labels the reused cell with its own axes
    from mtlkit.report import collect

    records, _, missing = collect(other)
    assert not missing and {r.context for r in records} == {
        "architecture=hps, optimizer.lr=0.01", "architecture=hps, optimizer.lr=0.07"
    }
    # the folder's sweep.json is the last spec's: a folder report names what it leaves out
    assert main(["sweep", str(spec)]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "sw"), "--json"]) == 0
    err = capsys.readouterr().err
    assert "1 other finished run(s) in the folder are left out" in err, err


@pytest.mark.bad_input("sweep cell with an invalid option")
def test_failed_cells_are_recorded_and_the_others_run(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write(
        tmp_path,
        {
            "weighter": [
                {"name": "equal"},
                {"label": "bad", "name": "static", "weights": {"a": -1.0, "b": 1.0}},
            ],
            "override": {"trainer.batch_size": [16, 0]},
        },
    )
    assert main(["sweep", str(spec)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    cells = _sweep_json(tmp_path)
    good = cells["equal{'trainer.batch_size': 16}"]
    assert good["status"] == "done" and (Path(good["dir"]) / "results.json").is_file()
    failed = [c for c in cells.values() if c is not good]
    assert [c["status"] for c in failed] == ["failed"] * 3
    bad_option = cells["bad{'trainer.batch_size': 16}"]
    assert "weighter.weights: Value error, weights must be finite and >= 0" in bad_option["error"]
    assert "trainer.batch_size: Input should be greater than 0" in failed[1]["error"]
    for c in failed:
        assert (Path(c["dir"]) / "error.txt").read_text().strip() == c["error"].strip()
    assert sum(" failed " in ln for ln in captured.out.splitlines()) == 3


def test_parallel_jobs_run_cells_as_processes_with_split_threads(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write(tmp_path, {"weighter": [{"name": "equal"}], "seeds": [0, 1, 2, 3]})
    assert main(["sweep", str(spec), "--jobs", "2", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["counts"] == {"done": 4} and summary["jobs"] == 2
    assert sum(" running " in ln for ln in captured.err.splitlines()) == 4
    threads = max(1, cpu_count() // 2)
    for cell in summary["cells"]:
        run = Path(cell["dir"])
        results = json.loads((run / "results.json").read_text())
        assert results["config"]["trainer"]["num_threads"] == threads
        assert results["config"]["seed"] == cell["seed"]
        assert "results:" in (run / "train.log").read_text()
    # the thread count is how a cell ran, not what it computes: one job later skips them all
    assert main(["sweep", str(spec)]) == 0
    assert [e for e, _ in _events(capsys.readouterr().out)] == ["skipped"] * 4


def test_dry_run_lists_cells_and_runs_nothing(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write(
        tmp_path,
        {"single_task": True, "folds": {"path": "data.seed", "values": [0, 1]}},
    )
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "sw").exists()
    lines = out.splitlines()
    assert lines[0].split() == ["cell", "hash", "state"]
    names = [ln.split()[0] for ln in lines[1:-1]]
    assert [n.rsplit("-", 1)[0] for n in names] == [
        "single-a_fold0", "single-b_fold0", "single-a_fold1", "single-b_fold1"
    ]
    assert all(ln.split()[2] == "new" for ln in lines[1:-1])
    assert lines[-1].endswith("4 new")
    cells = load_sweep(spec).cells
    assert cells[0].config is not None
    assert cells[0].config.weighter.options() == {"weights": {"a": 1.0, "b": 0.0}}
    assert cells[2].config.data.options()["seed"] == 1  # type: ignore[union-attr]


BAD_SPECS = [
    ({"axes": {"wieghter": [{"name": "equal"}]}}, "axes.wieghter: unknown field"),
    ({"axes": {"static_grid": {"task": "a", "values": [0.5, 1.5]}}}, "axes.static_grid.values"),
    ({"axes": {"static_grid": {"task": "c", "values": [0.5]}}}, "axes.static_grid.task: 'c'"),
    ({"axes": {"weighter": [{"label": "x"}]}}, "axes.weighter.0.name: Field required"),
    ({"axes": {"weighter": [{"name": "equal"}, {"name": "equal"}]}}, "label 'equal' appears twice"),
    ({"axes": {"seeds": [0], "override": {"seed": [1]}}}, "'seed' is already the seeds axis"),
    ({"axes": {"override": {"optimizer.lr": []}}}, "at least one value"),
    ({"base": "missing.yaml"}, "base: config file not found"),
    ({"overrides": ["trainer.epochs=-1"]}, "trainer.epochs: Input should be greater than"),
]


@pytest.mark.bad_input("sweep spec")
@pytest.mark.parametrize(("change", "message"), BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_bad_spec_is_a_config_error_naming_the_field(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    spec = _write(tmp_path, {})
    data = {**yaml.safe_load(spec.read_text()), **change}
    spec.write_text(yaml.safe_dump(data))
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtlkit: error: ") and message in err, err
    assert "Traceback" not in err


def test_sweep_then_report_from_the_spec(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write(
        tmp_path,
        {
            "weighter": [{"name": "equal"}],
            "static_grid": {"task": "a", "values": [0.5]},
            "single_task": True,
            "folds": {"path": "data.seed", "values": [0, 1]},
        },
    )
    assert main(["sweep", str(spec)]) == 0
    capsys.readouterr()
    assert main(["report", str(spec), "--baseline", "equal", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ctx = report["contexts"][0]
    assert [m["label"] for m in ctx["methods"]] == ["equal", "static:a=0.5", "single:a", "single:b"]
    assert all(m["stats"]["a/accuracy"]["n"] == 2 for m in ctx["methods"])
    assert ctx["delta_m"]["equal"]["n"] == 2
    assert ctx["best_static"] == "static:a=0.5"
    assert ctx["trajectories"]["static:a=0.5"]["weight/a"] == [0.5]
    assert (tmp_path / "sw" / "report" / "report.md").is_file()


def test_ctrl_c_stops_parallel_cells_cleanly_and_exits_75(tmp_path: Path) -> None:
    """SIGINT to the sweep: nothing more is launched, the running cells get it forwarded,
    checkpoint and exit 75; the sweep records them as interrupted and exits 75."""
    spec = _write(
        tmp_path,
        {"seeds": [0, 1, 2]},
        overrides=["trainer.epochs=500", "backbone.hidden=[256, 256]"],
    )
    cmd = [sys.executable, "-m", "mtlkit", "sweep", str(spec), "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while sum(1 for _ in (tmp_path / "sw").glob("*/epochs.jsonl")) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, out + err
    assert "Traceback" not in out + err
    cells = json.loads((tmp_path / "sw" / "sweep.json").read_text())["cells"]
    assert sorted(c["status"] for c in cells) == ["interrupted", "interrupted", "pending"]
    for c in cells:
        run = Path(c["dir"])
        if c["status"] == "interrupted":
            assert (run / "last.pt").is_file() and not (run / "results.json").exists()
            assert "stopped by SIGINT" in (run / "train.log").read_text()
        else:
            assert not run.exists()


def test_packed_cells_are_done_and_report_as_their_folders(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--pack`, then the cell folders removed (a clean clone of a committed sweep): the sweep
    runs nothing, the dry run says where the cells are, and the report is the same."""
    import shutil

    spec = _write(tmp_path, {"weighter": [{"name": "equal"}],
                             "static_grid": {"task": "a", "values": [0.5]}})
    assert main(["sweep", str(spec)]) == 0
    capsys.readouterr()
    assert main(["report", str(spec), "--json", "--out", str(tmp_path / "r1")]) == 0
    from_folders = json.loads(capsys.readouterr().out)
    assert main(["sweep", str(spec), "--pack"]) == 0
    assert "2 added" in capsys.readouterr().out
    assert main(["sweep", str(spec), "--pack"]) == 0  # again: nothing changes
    assert "0 added, 0 replaced, 2 unchanged" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "sw")

    assert main(["sweep", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"done  (packed in {tmp_path / 'sw.jsonl'})") == 2, out
    assert main(["sweep", str(spec)]) == 0
    out = capsys.readouterr().out
    assert [e for e, _ in _events(out)] == ["skipped", "skipped"], out
    assert "packed in" in out
    for source in (spec, tmp_path / "sw.jsonl"):
        assert main(["report", str(source), "--json", "--out", str(tmp_path / "r2")]) == 0
        report = json.loads(capsys.readouterr().out)
        for key in ("source", "plots"):
            report.pop(key), from_folders.get(key)
        assert report == {k: v for k, v in from_folders.items() if k not in ("source", "plots")}


def test_a_spec_reporting_a_cell_packed_under_another_name(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two specs share the output folder and a cell (same config, another label, so another
    name): with only the packed file left, the second spec's report finds the cell under the
    name it was packed as (a clean clone of ck48_branch, which reuses ck48_paper's cells)."""
    import shutil

    spec = _write(tmp_path, {"weighter": [{"name": "equal"}]})
    assert main(["sweep", str(spec)]) == 0
    assert main(["sweep", str(spec), "--pack"]) == 0
    shutil.rmtree(tmp_path / "sw")
    other = tmp_path / "other.yaml"
    data = yaml.safe_load(spec.read_text())
    data["axes"] = {"weighter": [{"name": "equal", "label": "eq"}]}
    other.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert main(["report", str(other), "--json", "--out", str(tmp_path / "r")]) == 0
    report = json.loads(capsys.readouterr().out)
    cells = [c for ctx in report["contexts"] for m in ctx["methods"] for c in m["cells"]]
    assert len(cells) == 1 and cells[0].startswith("equal-"), report
