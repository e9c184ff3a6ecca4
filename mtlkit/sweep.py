"""Sweeps: one base config times a few axes, one ordinary run directory per cell.

A *spec* (YAML or TOML) names a base config and its axes; :func:`load_sweep` validates it and
expands the cells. Each cell directory is named from its config (a readable name plus a short hash
of the config without the execution-only fields in :data:`EXECUTION_ONLY`), so a finished cell is
recognised and skipped, and a changed config is a new cell, never a silent reuse.
:class:`SweepRunner` runs the cells in this process (``jobs=1``) or as ``mtlkit train``
subprocesses (``jobs>1``), records each outcome in ``<output_dir>/sweep.json`` and prints one line
per cell event. No torch import here: the trainer is imported when a cell runs in this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mtlkit.cellpack import full_results, pack_path, read_pack
from mtlkit.config import (
    ResolvedRun,
    RunConfig,
    config_to_dict,
    flatten,
    load_config,
    read_config_file,
    reread_resolved,
    resolved_config_dict,
)
from mtlkit.errors import EXIT_INTERRUPTED, ConfigError, MtlkitError

EXECUTION_ONLY = ("output_dir", "trainer.num_threads", "trainer.progress")
"""Config fields left out of a cell's hash and of the finished-cell check: where a run writes and
how it uses the machine, not what it computes."""

SWEEP_FILE = "sweep.json"
CELL_FILE = "cell.json"
CELL_CONFIG = "config.yaml"
ERROR_FILE = "error.txt"
LOG_FILE = "train.log"


# --- the spec ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeighterVariant(BaseModel):
    """A whole weighter section; ``label`` names the method (default: ``name``)."""

    model_config = ConfigDict(extra="allow")

    name: str
    label: str | None = None

    def section(self) -> dict[str, Any]:
        return {"name": self.name, **(self.model_extra or {})}

    @property
    def method_label(self) -> str:
        return self.label or self.name


class StaticGrid(_Strict):
    """Static weights ``w`` for ``task`` and ``1 - w`` for the other task (two tasks only)."""

    task: str
    values: list[float] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _unit_interval(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"static weights must lie in [0, 1], got {bad}")
        if len(set(values)) != len(values):
            raise ValueError(f"repeated values: {values}")
        return values


class PathAxis(_Strict):
    """Values of one config path (``-o path=value`` for each)."""

    path: str = Field(min_length=1)
    values: list[Any] = Field(min_length=1)


class Axes(_Strict):
    weighter: list[WeighterVariant] = Field(default_factory=list)
    static_grid: StaticGrid | None = None
    single_task: bool = False
    folds: PathAxis | None = None
    seeds: list[int] = Field(default_factory=list)
    override: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("override")
    @classmethod
    def _non_empty(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, v in value.items() if not v]
        if empty:
            raise ValueError(f"an axis needs at least one value; empty: {empty}")
        return value

    @model_validator(mode="after")
    def _distinct_paths(self) -> Axes:
        taken = {"seed": "seeds"} if self.seeds else {}
        if self.folds is not None:
            taken[self.folds.path] = "folds"
        if self.weighter or self.static_grid or self.single_task:
            taken["weighter"] = "method (weighter, static_grid, single_task)"
        for path in self.override:
            if path in taken:
                raise ValueError(f"override axis {path!r} is already the {taken[path]} axis")
        return self


class SweepSpec(_Strict):
    """The sweep spec file; ``mtlkit sweep`` documents it in docs/sweeps.md."""

    base: str
    output_dir: str | None = None
    overrides: list[str] = Field(default_factory=list)
    axes: Axes = Field(default_factory=Axes)


def _spec_error(path: Path, exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {loc}: {msg}")
    return ConfigError(f"{path}: invalid sweep spec:\n" + "\n".join(lines))


# --- cells -------------------------------------------------------------------------------------


@dataclass
class Method:
    """One value of the combined method axis: a weighter section and its label."""

    label: str
    kind: str  # "base", "weighter", "static" or "single"
    section: dict[str, Any] | None  # None: the base config's weighter
    task: str | None = None  # static: the task weighted w; single: the task trained
    weight: float | None = None  # static: w

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.task is not None:
            out["task"] = self.task
        if self.weight is not None:
            out["weight"] = self.weight
        return out


@dataclass
class Cell:
    """One run of the sweep. ``config`` is None when its overrides do not make a valid config."""

    name: str
    hash: str
    dir: Path
    method: Method
    fold: Any
    seed: int | None
    axes: dict[str, Any]
    overrides: list[str]
    config: RunConfig | None
    error: str | None = None
    resolved: ResolvedRun | None = None
    """Its plugins and their validated options (set by :func:`validate_cells`)."""
    packed: dict[str, Any] | None = None
    """Its line in the sweep folder's packed file (:mod:`mtlkit.cellpack`), if it has one: a
    finished cell whose folder is not here (a clean clone) is done, not run again."""

    @property
    def context(self) -> str:
        """The values of the override axes, as text: cells of one context are compared."""
        return ", ".join(f"{k}={_show(v)}" for k, v in self.axes.items())

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hash": self.hash,
            "dir": str(self.dir),
            "label": self.method.label,
            "method": self.method.as_dict(),
            "fold": self.fold,
            "seed": self.seed,
            "axes": self.axes,
            "context": self.context,
            "overrides": self.overrides,
        }


@dataclass
class Sweep:
    spec_path: Path
    spec: SweepSpec
    base: Path
    output_dir: Path
    cells: list[Cell]
    task_ids: list[str]


def _show(value: Any) -> str:
    """An axis value as text: a section ``{name: branch, split_at: layer3}`` reads
    ``branch,split_at=layer3``; other values as JSON."""
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        rest = [f"{k}={_show(v)}" for k, v in value.items() if k != "name"]
        return ",".join([value["name"], *rest])
    return value if isinstance(value, str) else json.dumps(value)


def _readable(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-") or "x"


def config_hash(data: dict[str, Any]) -> str:
    """A short hash of a config dict without the :data:`EXECUTION_ONLY` fields."""
    blob = json.dumps(comparable(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config dict without the :data:`EXECUTION_ONLY` fields."""
    out = json.loads(json.dumps(data))
    for path in EXECUTION_ONLY:
        *parents, last = path.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def _methods(axes: Axes, base: RunConfig) -> list[Method]:
    tasks = base.task_ids()
    methods = [Method(v.method_label, "weighter", v.section()) for v in axes.weighter]
    if axes.static_grid is not None:
        grid = axes.static_grid
        if grid.task not in tasks:
            raise ConfigError(
                f"axes.static_grid.task: {grid.task!r} is not a task of the base config"
                f" (tasks: {tasks})"
            )
        if len(tasks) != 2:
            raise ConfigError(
                f"axes.static_grid: needs exactly two tasks (w and 1 - w); the base config has"
                f" {len(tasks)}: {tasks}"
            )
        other = next(t for t in tasks if t != grid.task)
        for w in grid.values:
            weights = {grid.task: float(w), other: round(1.0 - w, 12)}
            section = {"name": "static", "weights": {t: weights[t] for t in tasks}}
            methods.append(Method(f"static:{grid.task}={w:g}", "static", section, grid.task, w))
    if axes.single_task:
        for t in tasks:
            section = {"name": "static", "weights": {u: float(u == t) for u in tasks}}
            methods.append(Method(f"single:{t}", "single", section, t))
    if not methods:
        methods = [Method(base.weighter.name, "base", None)]
    seen: set[str] = set()
    for m in methods:
        if m.label in seen:
            raise ConfigError(
                f"axes.weighter: the method label {m.label!r} appears twice (give each variant"
                " its own 'label')"
            )
        seen.add(m.label)
    return methods


def _packed_match(
    packed: dict[str, dict[str, Any]], name: str, digest: str, config: RunConfig
) -> dict[str, Any] | None:
    """The packed line of this cell: its own name, else a line of the same config under
    another name (as :func:`_finished_elsewhere` for folders)."""
    if name in packed:
        return packed[name]
    want = comparable(config_to_dict(config))  # type: ignore[arg-type]
    for other in sorted(k for k in packed if k.endswith(f"-{digest}")):
        stored = packed[other]["results"].get("config")
        if isinstance(stored, dict) and comparable(stored) == want:
            return packed[other]
    return None


def _finished_elsewhere(out_dir: Path, digest: str, config: RunConfig) -> Path | None:
    """A finished run of this same config under another name (another spec sharing the output
    folder, or a renamed axis): a cell is its config, so it is reused rather than run twice."""
    want = comparable(config_to_dict(config))  # type: ignore[arg-type]
    for other in sorted(out_dir.glob(f"*-{digest}")):
        results = _read_json(other / "results.json")
        stored = results.get("config") if isinstance(results, dict) else None
        if isinstance(stored, dict) and comparable(stored) == want:
            return other
    return None


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a spec, then expand its cells (no run directory is touched)."""
    spec_path = Path(path)
    raw = read_config_file(spec_path)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise _spec_error(spec_path, exc) from None
    base = spec_path.parent / spec.base
    if not base.is_file():
        raise ConfigError(f"{spec_path}: base: config file not found: {base}")
    try:
        base_config = load_config(base, spec.overrides)
    except ConfigError as exc:
        raise ConfigError(
            f"{spec_path}: base {base} with overrides {spec.overrides}: {exc}"
        ) from None
    out_dir = Path(spec.output_dir or f"runs/sweeps/{spec_path.stem}")
    packed = read_pack(pack_path(out_dir))
    axes = spec.axes
    methods = _methods(axes, base_config)
    folds: list[Any] = axes.folds.values if axes.folds else [None]
    seeds: list[int | None] = list(axes.seeds) or [None]
    paths = list(axes.override)
    combos = list(itertools.product(*(axes.override[p] for p in paths))) or [()]
    cells: list[Cell] = []
    names: dict[str, str] = {}
    for fold, seed, combo, method in itertools.product(folds, seeds, combos, methods):
        over = list(spec.overrides)
        parts = [method.label]
        if method.section is not None:
            over.append(f"weighter={json.dumps(method.section)}")
        if axes.folds is not None:
            over.append(f"{axes.folds.path}={json.dumps(fold)}")
            parts.append(f"fold{_show(fold)}")
        if axes.seeds:
            over.append(f"seed={seed}")
            parts.append(f"seed{seed}")
        values = dict(zip(paths, combo))
        for p, v in values.items():
            over.append(f"{p}={json.dumps(v)}")
            parts.append(f"{p.rsplit('.', 1)[-1]}={_show(v)}")
        readable = "_".join(_readable(p) for p in parts)[:80]
        error = None
        try:
            config: RunConfig | None = load_config(base, over)
            digest = config_hash(config_to_dict(config))  # type: ignore[arg-type]
        except ConfigError as exc:
            config, error = None, str(exc)
            digest = "x" + hashlib.sha256(json.dumps(over).encode()).hexdigest()[:9]
        name = f"{readable}-{digest}"
        if name in names:
            raise ConfigError(f"{spec_path}: axes: two cells are the same run ({name})")
        names[name] = name
        cell_dir = out_dir / name
        line = None
        if config is not None and not cell_dir.exists():
            cell_dir = _finished_elsewhere(out_dir, digest, config) or cell_dir
            if not cell_dir.exists():
                line = _packed_match(packed, name, digest, config)
                cell_dir = out_dir / line["name"] if line is not None else cell_dir
        if config is not None:
            config = config.model_copy(update={"output_dir": str(cell_dir)})
        cells.append(
            Cell(
                name=name,
                hash=digest,
                dir=cell_dir,
                method=method,
                fold=fold,
                seed=config.seed if config is not None else seed,
                axes=values,
                overrides=over,
                config=config,
                error=error,
                packed=line,
            )
        )
    return Sweep(spec_path, spec, base, out_dir, cells, base_config.task_ids())


# --- the state of a cell on disk ---------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cell_state(cell: Cell) -> str:
    """``invalid``, ``done`` (results of this config), ``stale`` (results of another config, or
    of this config under other plugin defaults: rerun afresh), ``resume`` (a checkpoint, no
    results), ``retry`` (failed before) or ``new``."""
    if cell.config is None or cell.error:
        return "invalid"
    results = finished_results(cell)
    if isinstance(results, dict):
        return "stale" if stale_reason(cell, results) else "done"
    if (cell.dir / "last.pt").is_file():
        return "resume"
    if (cell.dir / ERROR_FILE).is_file():
        return "retry"
    return "new"


def finished_results(cell: Cell) -> dict[str, Any] | None:
    """The cell's ``results.json``: its folder's, else its packed line's (None: neither)."""
    results = _read_json(cell.dir / "results.json")
    if isinstance(results, dict):
        return results
    return full_results(cell.packed) if cell.packed is not None else None


def is_packed(cell: Cell) -> bool:
    """Whether the cell's finished results come from the packed file (no folder results)."""
    return cell.packed is not None and not (cell.dir / "results.json").is_file()


def stale_reason(cell: Cell, results: dict[str, Any]) -> str | None:
    """Why a cell's finished results are not of its config now, or None when they are.

    The config as written must match; so must every plugin option both resolutions hold, so a
    default changed by a plugin upgrade reruns the cell instead of reusing results it did not
    compute. (An option added since keeps the old behaviour by the registry's rules and is not a
    change; an option a plugin drops cannot be compared.)
    """
    assert cell.config is not None
    stored = results.get("config")
    if not isinstance(stored, dict) or comparable(stored) != comparable(
        config_to_dict(cell.config)
    ):
        return "results of another config there"
    before = results.get("resolved_config")
    if cell.resolved is None or not isinstance(before, dict):
        return None
    changed = default_changes(
        reread_resolved(before, cell.config, cell.resolved),
        resolved_config_dict(cell.config, cell.resolved),
    )
    if not changed:
        return None
    shown = "; ".join(changed[:3]) + ("; ..." if len(changed) > 3 else "")
    return f"a plugin default changed since it ran ({shown})"


def default_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``path: old -> new`` for each resolved option both configs hold with different values."""
    old, new = flatten(comparable(before)), flatten(comparable(now))
    return [
        f"{path}: {json.dumps(old[path])} -> {json.dumps(new[path])}"
        for path in sorted(old.keys() & new.keys())
        if old[path] != new[path]
    ]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"


# --- running -----------------------------------------------------------------------------------


@dataclass
class _Running:
    cell: Cell
    started: float
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None


@dataclass
class SweepRunner:
    """Runs a sweep's unfinished cells; :meth:`run` returns the exit status.

    ``jobs == 1`` trains each cell in this process (``Trainer.fit``); ``jobs > 1`` launches
    ``python -m mtlkit train <cell>/config.yaml`` per cell with ``trainer.num_threads`` set to
    ``max(1, cpu_count // jobs)``. SIGINT/SIGTERM stop launching, are forwarded to the running
    cells (which checkpoint and exit 75) and make the sweep exit 75.
    """

    sweep: Sweep
    jobs: int = 1
    out: TextIO = field(default_factory=lambda: sys.stdout)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    _stop: bool = False
    _finished_times: list[float] = field(default_factory=list)
    _running: list[_Running] = field(default_factory=list)
    _training_here: bool = False

    # -- bookkeeping
    def _entry(self, cell: Cell) -> dict[str, Any]:
        return self.status.setdefault(cell.name, {**cell.record(), "status": "pending"})

    def _save(self) -> None:
        cells = [self._entry(c) for c in self.sweep.cells]
        counts: dict[str, int] = {}
        for c in cells:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        data = {
            "spec": str(self.sweep.spec_path),
            "base": str(self.sweep.base),
            "output_dir": str(self.sweep.output_dir),
            "jobs": self.jobs,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "counts": counts,
            "cells": cells,
        }
        _atomic_write(self.sweep.output_dir / SWEEP_FILE, json.dumps(data, indent=2, default=str))

    def summary(self) -> dict[str, Any]:
        return json.loads((self.sweep.output_dir / SWEEP_FILE).read_text(encoding="utf-8"))

    def _event(self, cell: Cell, event: str, detail: str = "") -> None:
        total = len(self.sweep.cells)
        over = sum(
            1 for e in self.status.values() if e["status"] not in ("pending", "running")
        )
        pending = sum(1 for e in self.status.values() if e["status"] == "pending")
        eta = "ETA ?"
        if self._finished_times:
            mean = sum(self._finished_times) / len(self._finished_times)
            left = pending + len(self._running)
            eta = f"ETA {_duration(mean * math.ceil(left / self.jobs))}"
        if not pending and not self._running:
            eta = ""
        line = f"[{over}/{total}] {event:<11} {cell.name}"
        if detail:
            line += f"  {detail}"
        if eta:
            line += f"  ({eta})"
        print(line, file=self.out, flush=True)

    def _finish(self, run: _Running, status: str, error: str | None = None) -> None:
        cell = run.cell
        seconds = round(time.monotonic() - run.started, 3)
        entry = self._entry(cell)
        entry.update(status=status, seconds=seconds, error=error)
        if status == "done":
            self._finished_times.append(seconds)
            (cell.dir / ERROR_FILE).unlink(missing_ok=True)
        elif status == "failed" and error:
            _atomic_write(cell.dir / ERROR_FILE, error.rstrip() + "\n")
        self._save()
        detail = _duration(seconds)
        if status == "failed" and error:
            lines = error.strip().splitlines()
            detail += f"  {lines[-1].strip()[:160] if lines else ''}  (see {cell.dir / ERROR_FILE})"
        elif status == "interrupted":
            detail += "  (rerun the sweep to continue it)"
        self._event(cell, status, detail)

    # -- signals
    def _handle(self, signum: int, frame: Any) -> None:
        """Stop launching and forward the signal to running cells. In this process, a signal
        while a cell trains reaches here only when the trainer passes on a repeated one (or
        does not handle signals): abort now, as Python would."""
        if self._training_here or (self._stop and self.jobs <= 1):
            raise KeyboardInterrupt
        self._stop = True
        for run in self._running:
            if run.proc is not None and run.proc.poll() is None:
                try:
                    run.proc.send_signal(signum)
                except OSError:
                    pass

    def _install(self) -> dict[int, Any]:
        previous = {}
        for name in ("SIGINT", "SIGTERM"):
            sig = getattr(signal, name, None)
            if sig is not None:
                try:
                    previous[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not the main thread
                    break
        return previous

    # -- the loop
    def run(self) -> int:
        from mtlkit.plugins import get_plugin_manager

        validate_cells(self.sweep, get_plugin_manager())  # a bad plugin option fails up front
        todo: list[tuple[Cell, str]] = []
        for cell in self.sweep.cells:
            state = cell_state(cell)
            entry = self._entry(cell)
            if state == "done":
                entry["status"] = "skipped"
                results = finished_results(cell) or {}
                timing = results.get("timing") or {}
                entry["seconds"] = timing.get("epoch_seconds", timing.get("train_seconds"))
            elif state == "invalid":
                entry.update(status="failed", error=cell.error)
            else:
                todo.append((cell, state))
        self.sweep.output_dir.mkdir(parents=True, exist_ok=True)
        self._save()
        for cell in self.sweep.cells:
            entry = self._entry(cell)
            if entry["status"] == "skipped":
                where = f" (packed in {pack_path(self.sweep.output_dir)})" if is_packed(
                    cell) else ""
                self._event(cell, "skipped", "finished earlier" + where)
            elif entry["status"] == "failed":
                if cell.error:
                    cell.dir.mkdir(parents=True, exist_ok=True)
                    _atomic_write(cell.dir / ERROR_FILE, cell.error + "\n")
                last = (cell.error or "?").strip().splitlines()[-1].strip()
                self._event(cell, "failed", f"{last[:160]}  (see {cell.dir / ERROR_FILE})")
        previous = self._install()
        try:
            if self.jobs <= 1:
                self._run_inline(todo)
            else:
                self._run_parallel(todo)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._save()
        statuses = [self._entry(c)["status"] for c in self.sweep.cells]
        counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
        shown = ", ".join(f"{n} {s}" for s, n in counts.items())
        print(f"sweep {self.sweep.output_dir}: {shown}", file=self.out, flush=True)
        if self._stop or "interrupted" in statuses:
            return EXIT_INTERRUPTED
        return 1 if "failed" in statuses else 0

    def _prepare(self, cell: Cell) -> None:
        assert cell.config is not None
        cell.dir.mkdir(parents=True, exist_ok=True)
        (cell.dir / ERROR_FILE).unlink(missing_ok=True)
        _atomic_write(cell.dir / CELL_FILE, json.dumps(cell.record(), indent=2, default=str))
        text = yaml.safe_dump(config_to_dict(cell.config), sort_keys=False)
        _atomic_write(cell.dir / CELL_CONFIG, text)

    def _start_event(self, run: _Running, state: str) -> None:
        entry = self._entry(run.cell)
        entry["status"] = "running"
        self._save()
        detail = {
            "resume": "resuming from its checkpoint",
            "stale": f"{_stale_detail(run.cell)}: starting afresh",
            "retry": "failed before: retrying",
        }.get(state, "")
        self._event(run.cell, "running", detail)

    def _run_inline(self, todo: list[tuple[Cell, str]]) -> None:
        for cell, state in todo:
            if self._stop:
                break
            self._prepare(cell)
            run = _Running(cell, time.monotonic())
            self._running = [run]
            self._start_event(run, state)
            status, error = self._train_here(cell, state)
            self._running = []
            self._finish(run, status, error)
            if status == "interrupted":
                self._stop = True

    def _train_here(self, cell: Cell, state: str) -> tuple[str, str | None]:
        """Train one cell in this process; its stdout (epoch lines, metrics) goes to the
        cell's ``train.log``, stderr (notices, a progress bar on a terminal) stays here."""
        assert cell.config is not None
        with (cell.dir / LOG_FILE).open("a", encoding="utf-8") as log:
            print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')}: trained by mtlkit sweep", file=log)
            with contextlib.redirect_stdout(log):
                return self._fit(cell.config, state)

    def _fit(self, config: RunConfig, state: str) -> tuple[str, str | None]:
        from mtlkit.preempt import TrainingInterrupted
        from mtlkit.trainer import Trainer

        try:
            trainer = Trainer(config)
            if self._stop:
                return "interrupted", None
            self._training_here = True
            try:
                trainer.fit(resume="if-possible" if state == "resume" else False)
            finally:
                self._training_here = False
        except TrainingInterrupted:
            return "interrupted", None
        except KeyboardInterrupt:
            return "interrupted", None
        except MtlkitError as exc:
            return "failed", f"{type(exc).__name__}: {exc}"
        except Exception:
            return "failed", traceback.format_exc()
        return "done", None

    def _launch(self, cell: Cell, state: str, threads: int) -> _Running:
        self._prepare(cell)
        cmd = [
            sys.executable, "-m", "mtlkit", "train", str(cell.dir / CELL_CONFIG),
            "-o", f"trainer.num_threads={threads}",
        ]
        # a cell's folder holds its config and log: say what to do with the run there, as
        # training in this process does (continue a checkpoint, else start afresh over it)
        cmd.append("--resume-if-possible" if state == "resume" else "--overwrite")
        log = (cell.dir / LOG_FILE).open("ab")
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        return _Running(cell, time.monotonic(), proc, log)

    def _run_parallel(self, todo: list[tuple[Cell, str]]) -> None:
        threads = max(1, cpu_count() // self.jobs)
        queue = list(todo)
        while (queue and not self._stop) or self._running:
            while queue and not self._stop and len(self._running) < self.jobs:
                cell, state = queue.pop(0)
                run = self._launch(cell, state, threads)
                self._running.append(run)
                self._start_event(run, state)
            for run in list(self._running):
                assert run.proc is not None
                code = run.proc.poll()
                if code is None:
                    continue
                run.log.close()
                self._running.remove(run)
                if code == 0:
                    self._finish(run, "done")
                    continue
                error = _log_error(run.cell.dir / LOG_FILE, code)
                if code in (EXIT_INTERRUPTED, 130) or (
                    self._stop and (code < 0 or "KeyboardInterrupt" in error)
                ):
                    self._finish(run, "interrupted")
                else:
                    self._finish(run, "failed", error)
            time.sleep(0.05)


def _log_error(log: Path, code: int) -> str:
    """The error a failed ``mtlkit train`` printed: its ``mtlkit: error:`` lines, else the tail."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    start = next((i for i, ln in enumerate(lines) if ln.startswith("mtlkit: error:")), None)
    shown = lines[start:] if start is not None else lines[-30:]
    return f"exit status {code}\n" + "\n".join(shown)


def _stale_detail(cell: Cell) -> str:
    results = finished_results(cell)
    reason = stale_reason(cell, results) if isinstance(results, dict) else None
    return reason or "results of another config there"


def describe(sweep: Sweep) -> Iterator[dict[str, Any]]:
    """Each cell's record with its on-disk state (what ``--dry-run`` lists); a ``stale`` cell's
    ``error`` says why its results are not taken."""
    for cell in sweep.cells:
        state = cell_state(cell)
        error = _stale_detail(cell) if state == "stale" else cell.error
        yield {**cell.record(), "status": state, "error": error, "packed": is_packed(cell)}


def validate_cells(sweep: Sweep, host: Any) -> None:
    """Stage-2 validation (plugin options) of each valid cell; a failure marks the cell, a
    success records the cell's resolved config (what :func:`stale_reason` compares)."""
    from mtlkit.config import resolve_run

    for cell in sweep.cells:
        if cell.config is None:
            continue
        try:
            cell.resolved = resolve_run(cell.config, host)
        except ConfigError as exc:
            cell.error = str(exc)


def dry_run(sweep: Sweep, out: TextIO, as_json: bool) -> int:
    """List the cells (name, hash, state, error) without running anything."""
    rows = list(describe(sweep))
    if as_json:
        data = {"output_dir": str(sweep.output_dir), "cells": rows}
        print(json.dumps(data, indent=2, default=str), file=out)
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    print(f"{'cell':<{width}}  {'hash':<10}  state", file=out)
    for r in rows:
        line = f"{r['name']:<{width}}  {r['hash']:<10}  {r['status']}"
        if r["packed"]:
            line += f"  (packed in {pack_path(sweep.output_dir)})"
        if r["error"]:
            line += f"  {r['error'].strip().splitlines()[-1].strip()[:160]}"
        print(line, file=out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    shown = ", ".join(f"{n} {s}" for s, n in counts.items())
    print(f"{len(rows)} cells under {sweep.output_dir}: {shown}", file=out)
    return 0


def pack_sweep(sweep: Sweep, out: TextIO) -> int:
    """``mtlkit sweep SPEC --pack``: merge the finished cell folders of the sweep's output folder
    into its packed file (:func:`mtlkit.cellpack.pack`) and say what changed."""
    from mtlkit.cellpack import pack

    done = pack(sweep.output_dir)
    target = pack_path(sweep.output_dir)
    for name in done["replaced"]:
        print(f"replaced  {name}  (its folder differs from its packed line)", file=out)
    shown = ", ".join(f"{len(v)} {k}" for k, v in done.items())
    print(f"packed {sweep.output_dir} into {target}: {shown}", file=out)
    return 0
