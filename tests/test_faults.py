"""Faults: SIGKILL at random steps, each resumed, ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mtlkit.checkpoint import load_checkpoint

from .conftest import tiny_config


def _config(tmp_path: Path, name: str) -> Path:
    cfg = tiny_config(tmp_path / name)
    cfg["backbone"]["hidden"] = [256, 256]
    cfg["trainer"].update(epochs=12, checkpoint_every=2, num_threads=1)
    cfg["scheduler"] = {"name": "cosine"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mtlkit", "train", str(config), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _logged_steps(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.mark.bad_input("kill -9 during training")
def test_sigkill_at_random_steps_then_resume_is_bit_identical(tmp_path: Path) -> None:
    full = _train(_config(tmp_path, "full"))
    assert full.wait(timeout=300) == 0, full.stderr.read().decode() if full.stderr else ""

    config = _config(tmp_path, "killed")
    steps_log = tmp_path / "killed" / "run" / "steps.jsonl"
    rng = random.Random(1234)
    kills = 0
    for attempt in range(20):
        proc = _train(config, "--resume-if-possible")
        target = _logged_steps(steps_log) + rng.randint(3, 15)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _logged_steps(steps_log) < target:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if proc.poll() is None and attempt < 4:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode() if proc.stderr else ""
        break
    assert kills >= 3, "the run finished before it could be killed three times"
    a = load_checkpoint(tmp_path / "full" / "run" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "run" / "last.pt")
    assert int(a["train_state"]["step"]) == int(b["train_state"]["step"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["weighter"].items():
        assert torch.equal(value, b["weighter"][key]), key
    # the step log was rewound at each resume: one row per step, none duplicated
    steps = [int(line.split(",")[0].split(":")[1]) for line in steps_log.read_text().splitlines()]
    assert steps == list(range(int(a["train_state"]["step"])))
