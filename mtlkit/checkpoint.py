"""Atomic, pickle-free checkpoints: written to a temp file then renamed, read weights-only."""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mtlkit.errors import CheckpointError

FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (pre-1.6) format opens with a pickled magic number (protocol 2, a 10-byte long)
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_SHOWN_KEYS = 3


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` so that a crash at any point leaves the previous file intact."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format_version": FORMAT_VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a file carrying arbitrary pickled objects is refused."""
    p = Path(path)
    _check_is_torch_file(p)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {p}: it holds objects other than tensors, numbers and strings"
            f"{_refused_object(exc)}, and mtlkit never unpickles arbitrary objects"
            " (they can run code); re-save it from a trusted run with mtlkit"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {p} (truncated or corrupt?): {_short_reason(exc)}"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{p} is not an mtlkit checkpoint")
    return state


def _check_is_torch_file(p: Path) -> None:
    """Name what the path is (a folder, JSON, text...) before torch gets to misreport it."""
    if p.is_dir():
        found = sorted(c.name for c in p.glob("*.pt") if c.is_file())
        listing = f"its checkpoints: {', '.join(found)}" if found else "it holds no *.pt files"
        raise CheckpointError(f"checkpoint {p} is a folder, not a file; {listing}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    with p.open("rb") as fh:
        head = fh.read(512)
    if head.startswith((_ZIP_MAGIC, _LEGACY_MAGIC)):
        return
    raise CheckpointError(f"{p} is not a checkpoint ({_looks_like(head)})")


def _looks_like(head: bytes) -> str:
    """A short guess at a non-checkpoint file's kind, from its first bytes."""
    if not head:
        return "the file is empty"
    if head[:1] == b"\x80":
        return "it looks like a plain Python pickle, not a torch file; mtlkit does not load those"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary content; mtlkit checkpoints are torch zip files (*.pt)"
    if "\x00" in text:
        return "unrecognised binary content; mtlkit checkpoints are torch zip files (*.pt)"
    kind = "JSON" if text.lstrip()[:1] in ("{", "[") else "text"
    return f"it looks like {kind}; mtlkit checkpoints are the *.pt files in a run directory"


def _refused_object(exc: pickle.UnpicklingError) -> str:
    """The refused global's name from torch's message, and nothing of torch's advice."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f" (a pickled {match.group(1)})" if match else ""


def _short_reason(exc: BaseException) -> str:
    """The first sentence of an error: torch appends advice that must not reach the user."""
    first = (str(exc).strip().splitlines() or [""])[0]
    first = first.split(". ")[0].rstrip(".")
    if "weights_only" in first or not first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {first}"


# --- state-dict mismatches -----------------------------------------------------------------


_KEYS_LINE = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SIZE = re.compile(
    r"size mismatch for (\S+?): copying a param with shape torch\.Size\((\[[^\]]*\])\) from"
    r" checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)"
)


def parse_load_error(exc: RuntimeError) -> tuple[list[str], list[str]] | None:
    """(missing, unexpected) keys from ``load_state_dict``'s error; None for any other error."""
    text = str(exc)
    if "Error(s) in loading state_dict" not in text:
        return None
    found: dict[str, list[str]] = {"Missing": [], "Unexpected": []}
    for line in text.splitlines():
        match = _KEYS_LINE.search(line)
        if match:
            found[match.group(1)] += _QUOTED.findall(match.group(2))
    return found["Missing"], found["Unexpected"]


def parse_size_mismatches(exc: RuntimeError) -> list[str]:
    """``load_state_dict``'s "size mismatch" entries, as ``key (checkpoint [..], model [..])``."""
    return [
        f"{key} (checkpoint {ckpt}, model {model})" for key, ckpt, model in _SIZE.findall(str(exc))
    ]


def stored_config(state: dict[str, Any]) -> dict[str, Any] | None:
    """The config a checkpoint was trained with (saved as JSON text), or None if unreadable."""
    raw = state.get("config")
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def describe_mismatch(
    missing: list[str],
    unexpected: list[str],
    stored_config: dict | None,
    current_config: dict | None,
    size_mismatches: Sequence[str] = (),
) -> str:
    """A short account of why a state dict does not fit: key counts, examples, the likely cause."""
    lines = ["checkpoint does not fit this model:"]
    if missing:
        lines.append(_count(missing, "missing key", note=" (in the model, not the checkpoint)"))
    if unexpected:
        lines.append(
            _count(unexpected, "unexpected key", note=" (in the checkpoint, not the model)")
        )
    if size_mismatches:
        lines.append(_count(list(size_mismatches), "size mismatch", "size mismatches", "; "))
    lines += _likely_cause(stored_config, current_config)
    return "\n  ".join(lines)


def _count(items: list[str], one: str, many: str = "", sep: str = ", ", note: str = "") -> str:
    """``N things: a, b, c, ... and M more`` (the first few only)."""
    shown = sep.join(items[:_SHOWN_KEYS])
    more = f" ... and {len(items) - _SHOWN_KEYS} more" if len(items) > _SHOWN_KEYS else ""
    noun = one if len(items) == 1 else (many or f"{one}s")
    return f"{len(items)} {noun}{note}: {shown}{more}"


def _likely_cause(stored: dict | None, current: dict | None) -> list[str]:
    """The backbone/weighter/tasks sections that differ between the two configs."""
    if stored is None or current is None:
        return ["likely cause unknown: there is no stored config to compare with"]
    diffs = [_section_diff("backbone", stored.get("backbone"), current.get("backbone"))]
    diffs.append(_section_diff("weighter", stored.get("weighter"), current.get("weighter")))
    diffs.append(_tasks_diff(stored.get("tasks"), current.get("tasks")))
    found = [d for d in diffs if d]
    if not found:
        return [
            "likely cause unknown: backbone, weighter and tasks are the same in both configs"
            " (a plugin or mtlkit upgrade may have changed the model)"
        ]
    first, *rest = found
    return [
        f"likely cause: the checkpoint was trained with {first}",
        *(f"and with {d}" for d in rest),
    ]


def _section_diff(label: str, old: Any, new: Any) -> str:
    """``label {stored} but the config has {current}``, showing the name and differing keys."""
    if old == new:
        return ""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return f"{label} {_flow(old)} but the config has {_flow(new)}"
    differ = {k for k in old.keys() | new.keys() if old.get(k, _UNSET) != new.get(k, _UNSET)}
    keys = ["name", *(k for k in {**old, **new} if k in differ and k != "name")]
    return f"{label} {_flow(old, keys)} but the config has {_flow(new, keys)}"


def _tasks_diff(old: Any, new: Any) -> str:
    """Different task lists by id, else the first task whose options differ."""
    if old == new:
        return ""
    if not (isinstance(old, list) and isinstance(new, list)):
        return _section_diff("tasks", old, new)
    old_ids, new_ids = [_task_id(t) for t in old], [_task_id(t) for t in new]
    if old_ids != new_ids:
        return f"tasks {_flow(old_ids)} but the config has {_flow(new_ids)}"
    diffs = [_section_diff(f"task {i!r}", a, b) for i, a, b in zip(old_ids, old, new)]
    return next((d for d in diffs if d), "")


def _task_id(task: Any) -> str:
    if not isinstance(task, dict):
        return str(task)
    return str(task.get("id") or task.get("name"))


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


_UNSET = _Unset()


def _flow(value: Any, keys: list[str] | None = None) -> str:
    """YAML flow style, e.g. ``{name: timm, model_name: resnet18}``; ``keys`` picks the fields."""
    if isinstance(value, dict):
        chosen = keys if keys is not None else list(value)
        return "{" + ", ".join(f"{k}: {_flow(value.get(k, _UNSET))}" for k in chosen) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, _Unset):
        return repr(value)
    return value if isinstance(value, str) else json.dumps(value)
