"""Confusion-matrix artifacts: a CSV always, a PNG when matplotlib is installed.

matplotlib (the optional extra ``mtlkit-face[plot]``) is imported inside ``plot_confusion`` only,
and figures go to an Agg canvas without pyplot: no global backend or figure state is touched.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtlkit_face.metrics.verification import as_numpy

CORNER = "true\\predicted"
"""Top-left cell of the CSV: rows are true classes, columns predicted ones."""


def class_labels(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    """The given names, or ``"0".."K-1"`` when none (or the wrong number) are known."""
    if class_names is not None and len(class_names) == num_classes:
        return [str(n) for n in class_names]
    return [str(i) for i in range(num_classes)]


def write_confusion_csv(matrix: Any, class_names: Sequence[str] | None, path: str | Path) -> Path:
    """Write counts with a header row of predicted class names and the true name on each row."""
    m = as_numpy(matrix).astype(np.int64)
    names = class_labels(m.shape[0], class_names)
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([CORNER, *names])
        for name, row in zip(names, m.tolist()):
            writer.writerow([name, *row])
    return path


def plot_confusion(
    matrix: Any, class_names: Sequence[str] | None, path: str | Path, title: str = ""
) -> Path | None:
    """Draw counts over a row-normalised (recall) colour scale; None if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    m = as_numpy(matrix).astype(np.int64)
    k = m.shape[0]
    names = class_labels(k, class_names)
    rows = m.sum(axis=1, keepdims=True)
    recall = m / np.where(rows > 0, rows, 1)
    side = max(4.0, 0.6 * k + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                color = "white" if recall[i, j] > 0.5 else "black"
                ax.text(j, i, str(m[i, j]), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def save_confusion(
    matrix: Any,
    class_names: Sequence[str] | None,
    directory: str | Path,
    prefix: str = "",
    title: str = "",
) -> list[str]:
    """Write ``<prefix>confusion.csv`` and ``<prefix>confusion.png``; returns the paths written.

    Without matplotlib only the CSV is written, with a warning saying so.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [str(write_confusion_csv(matrix, class_names, directory / f"{prefix}confusion.csv"))]
    png = plot_confusion(matrix, class_names, directory / f"{prefix}confusion.png", title)
    if png is None:
        warnings.warn(
            "matplotlib is not installed: wrote the confusion matrix as CSV only"
            " (pip install 'mtlkit-face[plot]' for the PNG)",
            stacklevel=2,
        )
    else:
        written.append(str(png))
    return written
