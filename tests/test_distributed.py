"""DDP equivalence: 2 ranks with batch B end where 1 rank with batch 2B ends (gloo, CPU).

Tolerance: the two runs differ only in float summation order (a mean over 2B samples versus the
mean of two means over B, and an all-reduce), about 1 ulp of float32 per step. Over 14 SGD steps
that stays far below 1e-5 absolute on weights of order 0.1-1; 2e-5 leaves room for BLAS
blocking differences between batch sizes while still catching any real error (a wrong shard, a
missing all-reduce or rank-local weights all move parameters by more than 1e-3).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtlkit.checkpoint import load_checkpoint

from .conftest import tiny_config

RUNNER = Path(__file__).parent / "helpers" / "ddp_runner.py"
ATOL = 2e-5


def _run(cfg: dict, nproc: int) -> dict[str, torch.Tensor]:
    path = Path(cfg["output_dir"]).with_suffix(".json")
    Path(cfg["output_dir"]).parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(RUNNER),
        str(path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return load_checkpoint(Path(cfg["output_dir"]) / "last.pt")


def _cfg(tmp_path: Path, name: str, batch: int, weighter: dict) -> dict:
    cfg = tiny_config(tmp_path / name, weighter=weighter)
    cfg["trainer"].update(batch_size=batch, epochs=2, num_threads=1)
    cfg["optimizer"] = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    return cfg


WEIGHTERS = [
    pytest.param({"name": "equal"}, id="equal"),
    pytest.param({"name": "rec-rep"}, id="representation-grads"),
    pytest.param({"name": "rec-param"}, id="parameter-grads"),
    pytest.param(
        {"name": "dynamic"},
        id="dynamic",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("mtlkit_dynamic") is None,
            reason="mtlkit-dynamic not installed",
        ),
    ),
    pytest.param(
        {"name": "mgda"},
        id="mgda",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("mtlkit_weighters") is None,
            reason="mtlkit-weighters not installed",
        ),
    ),
]


@pytest.mark.parametrize("weighter", WEIGHTERS)
def test_two_ranks_match_one_rank_with_double_batch(tmp_path: Path, weighter: dict) -> None:
    one = _run(_cfg(tmp_path, "one", 16, weighter), 1)
    two = _run(_cfg(tmp_path, "two", 8, weighter), 2)
    assert int(one["train_state"]["step"]) == int(two["train_state"]["step"]) == 14
    for key, a in one["model"].items():
        b = two["model"][key]
        assert torch.allclose(a, b, atol=ATOL, rtol=0), (key, (a - b).abs().max().item())
    for key, a in one["weighter"].items():
        assert torch.allclose(a, two["weighter"][key], atol=ATOL, rtol=0), key
    moved = (one["model"]["heads.a.weight"] - two["model"]["heads.a.weight"]).abs().max()
    assert moved < ATOL


@pytest.mark.parametrize("weighter", WEIGHTERS[:3])
def test_labels_missing_unevenly_over_ranks_match_one_process(tmp_path: Path,
                                                              weighter: dict) -> None:
    """40% of each task's labels are missing, drawn per sample, so the two ranks' halves of a
    global batch hold different numbers of labels for a task. Each rank's loss is weighted by its
    share of the labelled samples: 2 ranks end where 1 process on the global batch ends (with
    the ranks averaged equally, the trunk's weights ended 0.038 apart)."""
    runs = {}
    for name, batch, nproc in (("one", 16, 1), ("two", 8, 2)):
        cfg = _cfg(tmp_path, name, batch, weighter)
        cfg["data"]["missing_fraction"] = 0.4
        runs[name] = _run(cfg, nproc)
    one, two = runs["one"], runs["two"]
    assert int(one["train_state"]["step"]) == int(two["train_state"]["step"]) == 14
    for key, a in one["model"].items():
        b = two["model"][key]
        assert torch.allclose(a, b, atol=ATOL, rtol=0), (key, (a - b).abs().max().item())


def test_cli_nproc_launch_and_resume_under_ddp(tmp_path: Path) -> None:
    """`mtlkit train --nproc 2`, interrupted and resumed, ends where an uninterrupted run ends."""
    import yaml

    def train(name: str, *extra: str) -> None:
        cfg = _cfg(tmp_path, name, 8, {"name": "equal"})
        cfg["trainer"]["checkpoint_every"] = 5
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "mtlkit", "train", str(path), "--nproc", "2", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]

    train("full")
    train("part", "-o", "trainer.max_steps=5")
    part = load_checkpoint(tmp_path / "part" / "run" / "last.pt")
    assert int(part["train_state"]["step"]) == 5
    train("part", "--resume", "--allow-config-change")  # max_steps is lifted
    full = load_checkpoint(tmp_path / "full" / "run" / "last.pt")
    resumed = load_checkpoint(tmp_path / "part" / "run" / "last.pt")
    assert int(resumed["train_state"]["step"]) == 14
    for key, a in full["model"].items():
        assert torch.equal(a, resumed["model"][key]), key
    results = json.loads((tmp_path / "full" / "run" / "results.json").read_text())
    assert results["world_size"] == 2


@pytest.mark.bad_input("signal during training")
def test_sigterm_under_nproc_stops_every_rank_at_one_step_then_resumes(tmp_path: Path) -> None:
    """`mtlkit train --nproc 2` gets SIGTERM: every rank finishes the same step, rank 0 writes
    last.pt, the launcher exits 75 and names the resume command; resuming ends where an
    uninterrupted run ends."""
    import signal
    import time

    import yaml

    def config(name: str) -> Path:
        cfg = _cfg(tmp_path, name, 8, {"name": "equal"})
        cfg["trainer"]["epochs"] = 40
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(path: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "mtlkit", "train", str(path), "--nproc", "2", *extra]

    full = subprocess.run(cmd(config("full")), capture_output=True, text=True, timeout=600,
                          env=env)
    assert full.returncode == 0, full.stderr[-3000:]
    path = config("part")
    steps = tmp_path / "part" / "run" / "steps.jsonl"
    proc = subprocess.Popen(cmd(path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 240
    while not (steps.exists() and len(steps.read_text().splitlines()) >= 5):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 75, err[-3000:]
    assert "stopped by SIGTERM" in err and "--nproc 2 --resume" in err
    part = load_checkpoint(tmp_path / "part" / "run" / "last.pt")
    stopped = int(part["train_state"]["step"])
    assert 5 <= stopped < 40 * 7
    resumed = subprocess.run(cmd(path, "--resume"), capture_output=True, text=True,
                             timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_checkpoint(tmp_path / "full" / "run" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "run" / "last.pt")
    assert int(a["train_state"]["step"]) == int(b["train_state"]["step"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
