"""The command line: fast --help, plugin listing, config commands, train/evaluate end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtlkit.cli import main

from .conftest import tiny_config


def _run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from mtlkit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
        "print('torch' in sys.modules)"
    )
    out = _run("-c", code)
    assert out.stdout.strip().endswith("False"), out.stderr


def test_plugins_listing_does_not_import_torch() -> None:
    code = (
        "import sys; from mtlkit.cli import main; main(['plugins', '--json']);"
        " print('TORCH', 'torch' in sys.modules)"
    )
    out = _run("-c", code)
    assert "TORCH False" in out.stdout, out.stdout + out.stderr
    data = json.loads(out.stdout.rsplit("TORCH", 1)[0])
    core = {p["name"]: p for p in data["plugins"]}["mtlkit"]
    assert core["weighters"] == ["equal", "static"]
    assert all(
        isinstance(n, str)
        for p in data["plugins"]
        for k in ("tasks", "weighters")
        for n in p.get(k, [])
    )


def test_python_m_mtlkit_version() -> None:
    out = _run("-m", "mtlkit", "--version")
    assert out.returncode == 0 and "mtlkit" in out.stdout


def test_config_validate_and_schema(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    assert main(["config", "validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["config", "validate", str(path), "-o", "weighter.name=nope"]) == 2
    assert "unknown weighter 'nope'" in capsys.readouterr().err
    assert main(["config", "schema"]) == 0
    assert "properties" in json.loads(capsys.readouterr().out)


def test_train_then_evaluate(tmp_path: Path, host, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    assert main(["train", str(path), "-o", "trainer.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "[test] a: accuracy=" in out
    ckpt = tmp_path / "run" / "last.pt"
    assert main(["evaluate", str(path), "--checkpoint", str(ckpt)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics["test"]) == {"a", "b"}
    assert main(["evaluate", str(path), "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.bad_input("checkpoint")
def test_evaluate_names_a_results_file_and_a_run_folder(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"metrics": {}}')
    args = ["evaluate", str(path), "--checkpoint"]
    assert main([*args, str(tmp_path / "run" / "results.json")]) == 2
    err = capsys.readouterr().err
    assert "results.json is not a checkpoint (it looks like JSON" in err
    assert "weights_only" not in err and "pickle" not in err
    assert main([*args, str(tmp_path / "run")]) == 2
    assert "is a folder, not a file; it holds no *.pt files" in capsys.readouterr().err


@pytest.mark.bad_input("override")
def test_override_help_tells_how_to_replace_and_delete(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--help"], ["train", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = " ".join(capsys.readouterr().out.split())
        assert "-o 'weighter={name: equal}'" in out and "weighter.lr=~" in out
    assert "replaces a whole section" in out and "deletes a key" in out


@pytest.mark.bad_input("quiet failure")
def test_print_metrics_counts_as_integers(capsys: pytest.CaptureFixture[str]) -> None:
    from mtlkit.cli import _print_metrics

    values = {
        "accuracy": 1.0,
        "num_pairs": 2100.0,
        "pair_count": 12.0,
        "num_ratio": 0.5,
        "support": 30,
        "flag": True,
        "name": "x",
    }
    _print_metrics({"test": {"face": values}})
    assert capsys.readouterr().out == (
        "[test] face: accuracy=1.0000, num_pairs=2100, pair_count=12, num_ratio=0.5000,"
        " support=30\n"
    )


@pytest.mark.bad_input("quiet failure")
def test_missing_matplotlib_noticed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtlkit import runlog

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(runlog, "_notified", set())
    steps = tmp_path / "steps.jsonl"
    for _ in range(2):
        assert runlog.plot_history(steps, tmp_path / "training.png", ["a"]) is None
    err = capsys.readouterr().err
    assert err == (
        "mtlkit: training.png not written: matplotlib is not installed"
        " (pip install 'mtlkit[plot]', or set trainer.plot=false)\n"
    )
    assert not (tmp_path / "training.png").exists()


def test_a_reader_that_leaves_early_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mtlkit sweep --dry-run | head``: a closed pipe is exit 141 (as SIGPIPE), no traceback,
    and stdout is pointed at /dev/null so the flush at exit cannot complain either."""
    import os

    import mtlkit.cli as cli

    def closed(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    redirected: list[int] = []
    monkeypatch.setitem(cli.COMMANDS, "plugins", closed)
    monkeypatch.setattr(os, "dup2", lambda fd, fd2: redirected.append(fd2))
    monkeypatch.setattr(cli.sys, "stdout", type("Out", (), {"fileno": lambda self: 1})())
    assert cli.main(["plugins"]) == 141
    assert redirected == [1]


# --- a run folder that already holds a run (issue 27 B2) ------------------------------------


def _train_args(tmp_path: Path, *extra: str, **changes: object) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, **changes)))
    return ["train", str(path), *extra]


@pytest.mark.bad_input("run folder")
def test_train_without_resume_over_an_interrupted_run_is_refused(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stopped run's folder (last.pt, steps.jsonl): a plain `mtlkit train` again must not
    replace them; the error names both ways on."""
    assert main(_train_args(tmp_path, trainer__max_steps=3)) == 0
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert main(_train_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.bad_input("run folder")
def test_train_of_another_data_set_into_a_finished_run_is_refused(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_train_args(tmp_path, trainer__epochs=1)) == 0
    results = (tmp_path / "run" / "results.json").read_bytes()
    assert main(_train_args(tmp_path, data__num_samples=96)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "run" / "results.json").read_bytes() == results


def test_overwrite_starts_afresh_and_removes_the_old_runs_files(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_train_args(tmp_path, trainer__epochs=1)) == 0
    run = tmp_path / "run"
    (run / "best.pt").write_bytes(b"an older run's best")
    (run / "notes.txt").write_text("mine")
    assert main(_train_args(tmp_path, "--overwrite", trainer__epochs=2)) == 0
    assert not (run / "best.pt").exists()  # never taken for the new run's
    assert (run / "notes.txt").read_text() == "mine"  # not a run file: kept
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


@pytest.mark.bad_input("run folder")
def test_a_failed_resume_leaves_no_empty_folder(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new" / "run"
    args = _train_args(tmp_path, "--resume", output_dir=str(target))
    assert main(args) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_the_resume_hint_drops_overwrite(monkeypatch: pytest.MonkeyPatch) -> None:
    """After an interrupted `--overwrite` run, the printed command resumes (the two flags
    cannot be given together)."""
    from mtlkit.cli import _resume_command

    monkeypatch.setattr(sys, "argv", ["mtlkit", "train", "c.yaml", "--overwrite"])
    assert _resume_command() == "mtlkit train c.yaml --resume"


@pytest.mark.bad_input("untrained result")
def test_zero_epochs_is_refused_not_reported_as_a_result(
    tmp_path: Path, host, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trainer.epochs=0` trained nothing and wrote the untrained model's metrics as the run's
    results with exit 0 (issue 27 B4); it is an error that says how to score without training."""
    assert main(_train_args(tmp_path, "-o", "trainer.epochs=0")) == 2
    err = capsys.readouterr().err
    assert "trainer.epochs" in err and "untrained" in err and "mtlkit evaluate" in err, err
    assert not (tmp_path / "run" / "results.json").exists()
