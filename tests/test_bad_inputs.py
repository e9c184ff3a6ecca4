"""A catalogue of bad inputs through the CLI: each is a named error (exit 2), never a traceback.

Every case is marked ``bad_input(category)``; ``benchmarks/reliability_counts.py`` counts them
for ``docs/reliability.md``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from mtlkit.cli import main

from .conftest import tiny_config

Case = Callable[[Path], list[str]]


def _write(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _cfg_with(*overrides: str) -> Case:
    def case(tmp_path: Path) -> list[str]:
        args = ["config", "validate", _write(tmp_path, tiny_config(tmp_path))]
        for o in overrides:
            args += ["-o", o]
        return args

    return case


def _train_with(*overrides: str) -> Case:
    def case(tmp_path: Path) -> list[str]:
        args = ["train", _write(tmp_path, tiny_config(tmp_path))]
        for o in overrides:
            args += ["-o", o]
        return args

    return case


def _raw_file(name: str, text: str) -> Case:
    def case(tmp_path: Path) -> list[str]:
        path = tmp_path / name
        path.write_text(text)
        return ["config", "validate", str(path)]

    return case


def _evaluate_with(payload: Callable[[Path], None]) -> Case:
    def case(tmp_path: Path) -> list[str]:
        ckpt = tmp_path / "ckpt.pt"
        payload(ckpt)
        return ["evaluate", _write(tmp_path, tiny_config(tmp_path)), "--checkpoint", str(ckpt)]

    return case


class _Evil:
    def __reduce__(self):  # executed by an unsafe unpickler
        return (print, ("pwned",))


def _evil(path: Path) -> None:
    torch.save({"format_version": 1, "model": _Evil()}, path)


def _raw_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(_Evil()))


def _other_tasks(path: Path) -> None:
    torch.save({"format_version": 1, "task_ids": ["x"], "model": {}}, path)


def _truncated(path: Path) -> None:
    torch.save({"format_version": 1, "x": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:200])


def _not_mtlkit(path: Path) -> None:
    torch.save({"weights": torch.ones(2)}, path)


CASES: list[tuple[str, str, Case, str]] = [
    # (category, id, case, expected fragment of the message)
    (
        "config file",
        "missing file",
        lambda p: ["config", "validate", str(p / "nope.yaml")],
        "config file not found",
    ),
    ("config file", "yaml syntax", _raw_file("c.yaml", "a: [unclosed"), "cannot parse"),
    ("config file", "toml syntax", _raw_file("c.toml", "a = = 1"), "cannot parse"),
    ("config file", "top-level list", _raw_file("c.yaml", "- 1\n"), "must be a mapping"),
    (
        "config file",
        "unsafe yaml tag",
        _raw_file("c.yaml", "seed: !!python/object/apply:os.system ['echo pwned']\n"),
        "cannot parse",
    ),
    ("config file", "empty file", _raw_file("c.yaml", ""), "backbone: Field required"),
    ("config field", "unknown top-level field", _cfg_with("bogus=1"), "bogus: unknown field"),
    ("config field", "negative epochs", _cfg_with("trainer.epochs=-1"), "trainer.epochs"),
    (
        "config field",
        "batch size not a number",
        _cfg_with("trainer.batch_size=many"),
        "trainer.batch_size",
    ),
    ("config field", "zero learning rate", _cfg_with("optimizer.lr=0"), "optimizer.lr"),
    ("config field", "unknown optimizer", _cfg_with("optimizer.name=lion"), "optimizer.name"),
    ("config field", "unknown scheduler", _cfg_with("scheduler.name=magic"), "scheduler.name"),
    ("config field", "unknown precision", _cfg_with("trainer.precision=fp8"), "trainer.precision"),
    ("config field", "duplicate task ids", _cfg_with("tasks.1.id=a"), "task ids must be unique"),
    ("config field", "no tasks", _cfg_with("tasks=[]"), "tasks: List should have at least 1"),
    ("config field", "best without metric", _cfg_with("trainer.select=best"), "select_metric"),
    ("config field", "tasks not a list", _cfg_with("tasks=3"), "tasks"),
    ("override", "no equals sign", _cfg_with("trainer.epochs"), "not of the form"),
    ("override", "list index out of range", _cfg_with("tasks.9.id=x"), "not an index"),
    ("override", "path through a scalar", _cfg_with("seed.x=1"), "not a mapping"),
    ("plugin name", "unknown weighter", _cfg_with("weighter.name=equl"), "did you mean 'equal'"),
    ("plugin name", "unknown backbone", _cfg_with("backbone.name=mpl"), "did you mean 'mlp'"),
    (
        "plugin name",
        "unknown task",
        _cfg_with("tasks.0.name=clasification"),
        "did you mean 'classification'",
    ),
    (
        "plugin name",
        "unknown dataset",
        _cfg_with("data.name=synthetik"),
        "did you mean 'synthetic'",
    ),
    (
        "plugin option",
        "unknown dataset option",
        _cfg_with("data.bogus=1"),
        "data.bogus: unknown field (dataset 'synthetic' from mtlkit)",
    ),
    ("plugin option", "wrong option type", _cfg_with("backbone.hidden=oops"), "backbone.hidden"),
    ("plugin option", "option out of range", _cfg_with("data.noise=-1"), "data.noise"),
    (
        "plugin option",
        "static weights missing a task",
        _train_with("weighter.name=static", "weighter.weights={a: 1}"),
        "missing: ['b']",
    ),
    (
        "plugin option",
        "static weights negative",
        _train_with("weighter.name=static", "weighter.weights={a: -1, b: 1}"),
        "weights",
    ),
    (
        "run setup",
        "output dir is a file",
        _train_with("output_dir=/dev/null/x"),
        "output_dir: cannot write",
    ),
    ("run setup", "fp16 on CPU", _train_with("trainer.precision=fp16"), "fp16 needs a CUDA device"),
    (
        "run setup",
        "select metric unknown",
        _train_with("trainer.select=best", "trainer.select_metric=a/nope"),
        "trainer.select_metric",
    ),
    ("checkpoint", "missing checkpoint", _evaluate_with(lambda p: None), "checkpoint not found"),
    ("checkpoint", "malicious pickle in checkpoint", _evaluate_with(_evil), "refusing to load"),
    ("checkpoint", "raw pickle file", _evaluate_with(_raw_pickle), "ckpt.pt"),
    ("checkpoint", "truncated checkpoint", _evaluate_with(_truncated), "cannot read checkpoint"),
    (
        "checkpoint",
        "not an mtlkit checkpoint",
        _evaluate_with(_not_mtlkit),
        "not an mtlkit checkpoint",
    ),
    (
        "checkpoint",
        "checkpoint of other tasks",
        _evaluate_with(_other_tasks),
        "do not match the config",
    ),
]
if not torch.cuda.is_available():
    CASES.append(
        (
            "run setup",
            "cuda on a machine without one",
            _train_with("trainer.device=cuda"),
            "CUDA was requested",
        )
    )


@pytest.mark.parametrize(
    "category, case, expected",
    [pytest.param(c, f, e, id=i, marks=pytest.mark.bad_input(c)) for c, i, f, e in CASES],
)
def test_bad_input_is_a_named_error(
    tmp_path: Path,
    host,
    capsys: pytest.CaptureFixture[str],
    category: str,
    case: Case,
    expected: str,
) -> None:
    code = main(case(tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("mtlkit: error: ")
    assert expected in err, err
    assert "pwned" not in capsys.readouterr().out
