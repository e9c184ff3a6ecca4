"""Per-step and per-epoch logs (JSONL or CSV) buffered as tensors and flushed in groups."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class RunLog:
    """Step rows (losses, weights, lr) and epoch rows (metrics) in the run directory.

    Step values stay on the device until a flush, so logging every step costs no host sync.
    """

    def __init__(
        self,
        directory: Path,
        task_names: list[str],
        fmt: str = "jsonl",
        flush_every: int = 1,
        enabled: bool = True,
        extra_columns: tuple[str, ...] = (),
    ) -> None:
        self.enabled = enabled
        self.directory = directory
        self.tasks = task_names
        self.fmt = fmt
        self.flush_every = flush_every
        self.steps_path = directory / f"steps.{fmt}"
        self.epochs_path = directory / "epochs.jsonl"
        self._pending: list[tuple[int, int, float, Tensor]] = []
        self.columns = ["step", "epoch", "lr"]
        self.columns += [f"loss/{t}" for t in task_names] + [f"weight/{t}" for t in task_names]
        self.extra = list(extra_columns)
        self.columns += self.extra

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows of steps the checkpoint does not include."""
        if not self.enabled:
            return
        for path in (self.steps_path,):
            if not path.exists():
                continue
            rows = read_steps(path)
            kept = [r for r in rows if int(r["step"]) < step]
            path.unlink()
            for r in kept:
                self._write_rows([r])
        if self.epochs_path.exists():
            lines = self.epochs_path.read_text().splitlines()
            keep = [ln for ln in lines if ln and json.loads(ln).get("step", 0) <= step]
            self.epochs_path.write_text("".join(ln + "\n" for ln in keep))

    def log_step(
        self, step: int, epoch: int, lr: float, losses: Tensor, weights: Tensor,
        extra: Tensor | None = None,
    ) -> None:
        """One row; ``extra`` fills ``extra_columns`` (left empty on steps without it)."""
        if not self.enabled:
            return
        parts = [losses.float(), weights.float()]
        if self.extra:
            parts.append(
                extra.float().to(losses.device) if extra is not None
                else torch.full((len(self.extra),), float("nan"), device=losses.device)
            )
        self._pending.append((step, epoch, lr, torch.cat(parts)))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        values = torch.stack([v for *_, v in self._pending]).cpu().tolist()
        rows = []
        for (step, epoch, lr, _), vals in zip(self._pending, values):
            row: dict[str, Any] = {"step": step, "epoch": epoch, "lr": lr}
            row.update(dict(zip(self.columns[3:], vals)))
            rows.append(row)
        self._pending.clear()
        self._write_rows(rows)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.fmt == "csv":
            new = not self.steps_path.exists()
            with self.steps_path.open("a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.columns)
                if new:
                    writer.writeheader()
                writer.writerows(rows)
        else:
            with self.steps_path.open("a") as fh:
                fh.writelines(json.dumps(_clean(r)) + "\n" for r in rows)

    def log_epoch(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.flush()
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.epochs_path.open("a") as fh:
            fh.write(json.dumps(_clean(row)) + "\n")


def _clean(obj: Any) -> Any:
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def read_steps(path: Path) -> list[dict[str, Any]]:
    """Read a steps log written by RunLog (either format)."""
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return [
                {k: float(v) if v not in ("", None) else math.nan for k, v in r.items()}
                for r in csv.DictReader(fh)
            ]
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


_notified: set[str] = set()


def _notice_no_matplotlib(out: Path) -> None:
    """Say once per process why the plot is missing: the core install leaves matplotlib out."""
    if "matplotlib" in _notified:
        return
    _notified.add("matplotlib")
    print(
        f"mtlkit: {out.name} not written: matplotlib is not installed"
        " (pip install 'mtlkit[plot]', or set trainer.plot=false)",
        file=sys.stderr,
    )


def plot_history(steps_path: Path, out: Path, tasks: list[str]) -> Path | None:
    """PNG of task weights and task losses over training; None (and a notice) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _notice_no_matplotlib(out)
        return None
    rows = read_steps(steps_path) if steps_path.exists() else []
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, (ax_w, ax_l) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for t in tasks:
        ax_w.plot(steps, [r[f"weight/{t}"] for r in rows], label=t)
        ax_l.plot(steps, [r[f"loss/{t}"] for r in rows], label=t)
    ax_w.set_ylabel("task weight")
    ax_l.set_ylabel("task loss")
    ax_l.set_xlabel("step")
    ax_w.legend()
    ax_w.grid(alpha=0.3)
    ax_l.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
