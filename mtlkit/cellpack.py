"""Packed sweep cells: a sweep folder's finished cells as one JSON-lines file beside it.

A sweep writes one folder per cell (``cell.json``, ``config.yaml``, ``results.json``,
``epochs.jsonl``, task artifacts such as confusion CSVs). Committed as they are, hundreds of cells
swamp the source tree, so ``mtlkit sweep SPEC --pack`` packs the finished ones into
``<output_dir>.jsonl`` (:func:`pack_path`): one line per cell, sorted by cell name, keys sorted,
so a new or changed cell is one added or changed line in a diff.

One file per sweep *folder*, not per spec: specs that share an output folder share its cells
(a spec reuses a finished cell of the same config, :func:`mtlkit.sweep.load_sweep`), and so
they share its packed file.

Each line is a JSON object:

- ``name``: the cell's folder name; ``hash``: its config hash (the name's suffix);
- ``cell``: ``cell.json`` (None for a run not made by a sweep);
- ``results``: ``results.json``, less its ``history`` when that equals ``epochs`` (always, for a
  run of this version: the trainer writes the same rows to both);
- ``epochs``: the rows of ``epochs.jsonl`` (the per-epoch history);
- ``files``: the other small text files of the folder by name (the confusion CSVs).

``config.yaml`` is left out: it is ``results["config"]``. Floats are written by :mod:`json`,
whose text round-trips every finite float exactly, so a packed metric is the bit-identical
value the cell wrote (:func:`folder_record` of a rerun cell compares equal to its line).

Packing merges: lines already in the file stay, a folder adds its line or replaces the line of
its name (the folder is newer), and packing again changes nothing. Readers
(:func:`mtlkit.report.collect`, the sweep's finished-cell check) take a cell folder first and
its packed line where the folder is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mtlkit.errors import ConfigError

SUFFIX = ".jsonl"
CELL_FILES = ("cell.json", "results.json", "epochs.jsonl", "config.yaml")
"""What a record holds in its own keys (``config.yaml`` as ``results["config"]``)."""
SKIPPED = ("sweep.json", "error.txt", "train.log", "steps.jsonl", "steps.csv")
"""Files of a cell folder never packed: the sweep's status, logs, per-step logs."""
TEXT_SUFFIXES = (".csv", ".json", ".txt")
"""Other files packed under ``files``: small text artifacts (checkpoints and images never)."""


def pack_path(output_dir: str | Path) -> Path:
    """The packed file of a sweep folder: ``<output_dir>.jsonl`` beside it."""
    out = Path(output_dir)
    return out.parent / f"{out.name}{SUFFIX}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def folder_record(folder: Path) -> dict[str, Any] | None:
    """The packed record of a finished cell folder (None without a readable ``results.json``)."""
    results = _read_json(folder / "results.json")
    if not isinstance(results, dict):
        return None
    cell = _read_json(folder / "cell.json")
    epochs_file = folder / "epochs.jsonl"
    epochs: list[Any] = []
    if epochs_file.is_file():
        text = epochs_file.read_text(encoding="utf-8")
        epochs = [json.loads(line) for line in text.splitlines() if line.strip()]
    results = dict(results)
    if "history" in results and results["history"] == epochs:
        del results["history"]
    files = {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in CELL_FILES and p.name not in SKIPPED
        and p.suffix in TEXT_SUFFIXES and not p.name.startswith(".")
    }
    name = folder.name
    return {
        "name": name,
        "hash": name.rsplit("-", 1)[-1] if "-" in name else None,
        "cell": cell if isinstance(cell, dict) else None,
        "results": results,
        "epochs": epochs,
        "files": files,
    }


def full_results(record: dict[str, Any]) -> dict[str, Any]:
    """``results.json`` of a packed record as the cell wrote it (its ``history`` restored)."""
    results = dict(record["results"])
    results.setdefault("history", record.get("epochs") or [])
    return results


def read_pack(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of a packed file by cell name; a missing file: none. A line that is not a
    record, or a name on two lines, is a :class:`ConfigError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{where}: not a JSON line ({exc}); the packed cells are"
                                  " damaged: restore the file from git") from None
            if not isinstance(record, dict) or not isinstance(record.get("name"), str) \
                    or not isinstance(record.get("results"), dict):
                raise ConfigError(f"{where}: not a packed cell (needs 'name' and 'results')")
            if record["name"] in out:
                raise ConfigError(f"{where}: the cell {record['name']!r} is packed twice")
            out[record["name"]] = record
    return out


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def write_pack(path: str | Path, records: dict[str, dict[str, Any]]) -> None:
    """Write ``records`` sorted by name, one line each, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(_line(records[k]) + "\n" for k in sorted(records)), encoding="utf-8")
    os.replace(tmp, path)


def pack(output_dir: str | Path) -> dict[str, list[str]]:
    """Merge the finished cell folders under ``output_dir`` into :func:`pack_path`.

    Returns the names ``added``, ``replaced`` (a folder whose record differs from its line),
    ``unchanged`` and ``kept`` (lines without a folder here)."""
    out = Path(output_dir)
    target = pack_path(out)
    records = read_pack(target)
    done: dict[str, list[str]] = {"added": [], "replaced": [], "unchanged": [], "kept": []}
    folders = sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
    seen = set()
    for folder in folders:
        record = folder_record(folder)
        if record is None:
            continue
        seen.add(record["name"])
        before = records.get(record["name"])
        if before is None:
            done["added"].append(record["name"])
        elif _line(before) != _line(record):
            done["replaced"].append(record["name"])
        else:
            done["unchanged"].append(record["name"])
        records[record["name"]] = record
    done["kept"] = sorted(set(records) - seen)
    if done["added"] or done["replaced"] or not target.exists():
        write_pack(target, records)
    return done
