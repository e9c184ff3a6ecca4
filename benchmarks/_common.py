"""Shared helpers for benchmark scripts: timing rounds, machine description, result files."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PLOTS = Path(__file__).resolve().parents[1] / "docs" / "img"
"""Benchmark plots go straight where the docs site serves them (results/ keeps the JSON)."""


def machine() -> str:
    """One line naming the machine a figure came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def timing_arguments(p: argparse.ArgumentParser) -> None:
    """The model, batch and round options every timing script shares (resnet18, 48 px, 64)."""
    p.add_argument("--backbone", default="resnet18", help="timm model name, or 'mlp'")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="steps per side per round")
    p.add_argument("--rounds", type=int, default=7)


def summary(values: list[float]) -> dict[str, float]:
    """Median with min and max: what every table reports."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def write_results(
    name: str, payload: dict[str, Any], markdown: str, meta: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` with the command, machine and date.

    ``meta`` keeps those of an earlier run when a table is only re-rendered from its JSON.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = meta or {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "date": _dt.date.today().isoformat(),
    }
    payload = {**meta, **payload}
    json_path = RESULTS / f"{name}.json"
    md_path = RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2))
    header = (
        f"Command: `{meta['command']}`  \nMachine: {meta['machine']}  \nDate: {meta['date']}\n\n"
    )
    md_path.write_text(header + markdown)
    return json_path, md_path
