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
