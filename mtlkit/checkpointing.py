"""A run's checkpoints: what one holds, writing it, loading it back, and the checks before use.

:class:`Checkpointer` is the object the :class:`~mtlkit.trainer.Trainer` holds for this; it takes
the built run (:class:`~mtlkit.build.BuiltRun`), the run folder and the log, and the loop's
:class:`TrainState` is passed to it and returned from it. The file format (atomic writes,
weights-only loading, mismatch messages) is :mod:`mtlkit.checkpoint`; which config changes a
resume allows, and the groups a split must not share with training, are the rules of
:mod:`mtlkit.resume`, applied here by :func:`check_checkpoint` (which predict and export use on a
:class:`~mtlkit.build.BuiltModel` alone).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mtlkit import __version__, distributed, resume
from mtlkit.checkpoint import (
    describe_mismatch,
    load_checkpoint,
    parse_load_error,
    parse_size_mismatches,
    save_checkpoint,
    stored_config,
)
from mtlkit.config import RunConfig, config_to_dict, reread_resolved, resolved_config_dict
from mtlkit.errors import CheckpointError
from mtlkit.layout import InputLayout
from mtlkit.notices import notice as _notice

if TYPE_CHECKING:
    from mtlkit.build import BuiltModel, BuiltRun
    from mtlkit.runlog import RunLog

LAST = "last.pt"
BEST = "best.pt"
_USING_A_CHECKPOINT = {
    "evaluate": "evaluating",
    "predict": "predicting with",
    "export": "exporting",
}
"""How the notice of a checkpoint from another config names the command in use."""


@dataclass
class TrainState:
    """Where training stands; a checkpoint stores exactly this plus the module states."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    skipped_nonfinite: int = 0
    best_score: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    config_changes: list[dict[str, Any]] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        """As a checkpoint stores it (numbers and strings only)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "skipped_nonfinite": self.skipped_nonfinite,
            "best_score": self.best_score if self.best_score is not None else float("nan"),
            "history": json.dumps(self.history),
            "config_changes": json.dumps(self.config_changes),
        }

    @classmethod
    def from_state(cls, ts: dict[str, Any]) -> TrainState:
        best = float(ts["best_score"])
        return cls(
            step=int(ts["step"]),
            epoch=int(ts["epoch"]),
            batch=int(ts["batch"]),
            skipped_nonfinite=int(ts["skipped_nonfinite"]),
            best_score=None if math.isnan(best) else best,
            history=json.loads(ts["history"]),
            config_changes=json.loads(ts.get("config_changes", "[]")),
        )


# --- checks before a checkpoint is used ----------------------------------------------------


def resolved_config(built: BuiltModel) -> dict[str, Any]:
    """The run's config with every plugin option's default filled in (as it is now)."""
    return resolved_config_dict(built.config, built.resolved)


def check_checkpoint(
    ckpt: dict[str, Any],
    built: BuiltModel,
    *,
    purpose: str,
    split: str = "test",
    allow_change: bool = False,
    is_main: bool = True,
) -> list[resume.Change]:
    """Compare a checkpoint with the run ``built`` from the config, before using it (the rules
    are :mod:`mtlkit.resume`'s).

    ``purpose="resume"``: forbidden changes are errors, legitimate ones need ``allow_change``;
    returns the legitimate changes. ``purpose="evaluate"`` (or ``"predict"``, ``"export"``):
    differences are reported as a notice naming the command. All refuse a ``split`` sharing a
    group with the training split the checkpoint saw.
    """
    # compare with every plugin option's default filled in, so spelling out a default is
    # no change (older checkpoints hold only the config as written), the stored options
    # read through this version's models (an old spelling compares as what it means now)
    stored = stored_config({"config": ckpt.get("resolved_config")})
    current: dict[str, Any] = resolved_config(built)
    if stored is not None:
        stored = reread_resolved(stored, built.config, built.resolved)
    else:
        stored, current = stored_config(ckpt), config_to_dict(built.config)
    changes: list[resume.Change] = []
    if stored is not None:
        changes = resume.diff_configs(stored, current, resume.declared_harmless(built.resolved))
    legitimate = resume.check_resume(changes, allow_change) if purpose == "resume" else []
    meaningful = [c for c in changes if c.kind == "forbidden"]
    if meaningful and is_main:
        doing = _USING_A_CHECKPOINT.get(purpose, f"{purpose}:")
        _notice(
            f"{doing} a checkpoint trained with another config:\n"
            + "\n".join(f"  {c.describe()}" for c in meaningful)
        )
    _check_groups(ckpt, built, split, purpose, is_main)
    return legitimate


def split_groups(built: BuiltModel, split: str) -> resume.Groups | None:
    """The groups (subjects...) a split holds, by name; None without a group key."""
    data = built.data.named().get(split)
    if data is None:
        return None
    d = built.data
    return resume.Groups.of(data.meta, d.group_key, d.group_names, d.group_source)


def _check_groups(
    ckpt: dict[str, Any], built: BuiltModel, split: str, purpose: str, is_main: bool
) -> None:
    """Refuse a split sharing a group, by name, with the checkpoint's training split.

    Another source (another data set) is a notice: its names are other people. A checkpoint
    from before names were stored holds indices; they are compared as before, with a notice
    that this is only right while the data lists the same groups.
    """
    trained = resume.Groups.from_state(ckpt)
    data = built.data.named().get(split)
    if trained is None or data is None:
        return
    if isinstance(trained, Tensor):
        key = str(ckpt["group_key"])
        if key != built.data.group_key:
            return
        if is_main:
            _notice(
                f"this checkpoint stores its training {key}s by index, not by name (it was"
                f" written before checkpoints named them): the {split!r} split is checked by"
                f" index, which is right only while the data lists the same {key}s as in"
                " training"
            )
        test_ids = resume.group_ids(data.meta, key)
        if test_ids is not None:
            resume.check_no_overlap_by_index(trained, key, test_ids, split)
        return
    current = split_groups(built, split)
    if current is None:
        return
    if not resume.check_no_overlap(trained, current, split) and is_main:
        _notice(
            f"{purpose}: the checkpoint trained on {trained.key}s of"
            f" {trained.source or 'an unnamed source'}, the {split!r} split holds"
            f" {current.key}s of {current.source or 'an unnamed source'}: another data set,"
            f" so no {trained.key} is compared"
        )


def load_weights(ckpt: dict[str, Any], built: BuiltModel, modules: dict[str, Any]) -> None:
    """Load ``ckpt[name]`` into each module (``model``, ``weighter``...), after checking the
    checkpoint's tasks are the config's; a CheckpointError naming the likely cause when a state
    does not fit."""
    if list(ckpt.get("task_ids", [])) != built.task_ids:
        raise CheckpointError(
            f"checkpoint tasks {ckpt.get('task_ids')} do not match the config's {built.task_ids}"
        )
    try:
        for name, module in modules.items():
            module.load_state_dict(ckpt[name])
    except RuntimeError as exc:
        raise CheckpointError(_mismatch(ckpt, built.config, exc)) from None
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not fit this model: {exc}") from None


def _mismatch(ckpt: dict[str, Any], config: RunConfig, exc: RuntimeError) -> str:
    """A short account of a state dict that does not fit, naming the likely cause."""
    keys = parse_load_error(exc)
    if keys is None:
        return f"checkpoint does not fit this model: {str(exc).splitlines()[0]}"
    missing, unexpected = keys
    return describe_mismatch(
        missing, unexpected, stored_config(ckpt), config_to_dict(config),
        parse_size_mismatches(exc),
    )


# --- the trainer's checkpoints -------------------------------------------------------------


class Checkpointer:
    """Writes, loads and resumes a built run's checkpoints in ``run_dir``.

    It holds the run's modules (model, weighter, optimizer, schedule, scaler) and restores them
    in place; the loop's :class:`TrainState` goes in to :meth:`save` and comes back from
    :meth:`load` and :meth:`resume`. Only the main process writes; ``log`` is flushed before a
    write and cut back to the checkpoint's step on a resume.
    """

    def __init__(self, built: BuiltRun, run_dir: Path, log: RunLog, *, is_main: bool) -> None:
        self.built = built
        self.run_dir = run_dir
        self.log = log
        self.is_main = is_main
        self._input_layout: str | None = None
        # the config's hyperparameters per group (with the schedule's initial_lr), re-applied
        # over a checkpoint's on resume
        self._group_hparams = [
            {k: v for k, v in g.items() if k != "params"} for g in built.optimizer.param_groups
        ]

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        """Everything a resume needs: module, optimizer and RNG states, the loop's place, the
        config (as written and resolved) and what predict and export need without the data."""
        b = self.built
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and b.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": b.model.state_dict(),
            "weighter": b.weighter.state_dict(),
            "optimizer": b.optimizer.state_dict(),
            "scheduler": b.scheduler.state_dict() if b.scheduler else {},
            "scaler": b.scaler.state_dict() if b.scaler else {},
            "rng": rng,
            "train_state": state.to_state(),
            "config": json.dumps(config_to_dict(b.config)),
            "resolved_config": json.dumps(resolved_config(b)),
            # the training split's groups by name (an index depends on which groups the data
            # lists), with the source the names belong to
            **self._train_groups(),
            "task_ids": list(b.task_ids),
            # what each head was sized by (class names...): predict/export check the data agrees
            "data_info": json.dumps(b.data.info, default=str),
            # and how a sample becomes model input, so they work without the data (empty: unknown)
            "input_layout": self.input_layout_json(),
            "mtlkit_version": __version__,
        }

    def input_layout_json(self) -> str:
        """The training split's :class:`~mtlkit.layout.InputLayout` as JSON, measured once; empty
        when it cannot be measured (predict and export then need the data)."""
        if self._input_layout is None:
            try:
                self._input_layout = InputLayout.measure(self.built.data.train).to_json()
            except Exception:  # optional metadata: it must never stop a checkpoint being saved
                self._input_layout = ""
        return self._input_layout

    def _train_groups(self) -> dict[str, Any]:
        """The checkpoint entries naming the training split's groups (empty names: none)."""
        groups = split_groups(self.built, "train")
        if groups is None:
            return {"group_key": "", "group_source": "", "train_groups": []}
        return groups.to_state()

    def save(self, state: TrainState, name: str = LAST) -> Path:
        """Rank 0 writes; every rank waits so nobody reads a checkpoint being written."""
        path = self.run_dir / name
        if self.is_main:
            self.log.flush()
            save_checkpoint(self.state_dict(state), path)
        distributed.barrier()
        return path

    def load(self, ckpt: dict[str, Any], *, model_only: bool = False) -> TrainState | None:
        """Restore the modules from ``ckpt``; returns its :class:`TrainState`, after restoring
        the optimizer, scaler and RNG states too, unless ``model_only`` (model and weighter
        weights only, e.g. ``best.pt`` for the final evaluation: returns None)."""
        b = self.built
        modules: dict[str, Any] = {"model": b.model, "weighter": b.weighter}
        if not model_only:
            modules["optimizer"] = b.optimizer
            if b.scaler is not None and ckpt.get("scaler"):
                modules["scaler"] = b.scaler
        load_weights(ckpt, b, modules)
        if model_only:
            return None
        state = TrainState.from_state(ckpt["train_state"])
        self._apply_config_hparams(state.step)
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        return state

    def _apply_config_hparams(self, step: int) -> None:
        """After loading optimizer state: the config's hyperparameters and this step's lr.

        A checkpoint's param groups carry the old lr, weight decay and momentum; the config's win,
        and the schedule is evaluated at the current step, so an unchanged config resumes exactly
        and a changed one (allowed by ``--allow-config-change``) takes effect from here on.
        """
        optimizer, sched = self.built.optimizer, self.built.scheduler
        for group, hp in zip(optimizer.param_groups, self._group_hparams):
            group.update(hp)
        if sched is None:
            return
        sched.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        sched.last_epoch = step
        for group, base, f in zip(optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * f(step)
        sched._last_lr = [g["lr"] for g in optimizer.param_groups]

    def check(
        self, ckpt: dict[str, Any], *, purpose: str, split: str = "test",
        allow_change: bool = False,
    ) -> list[resume.Change]:
        """:func:`check_checkpoint` for this run (notices from the main process only)."""
        return check_checkpoint(
            ckpt, self.built, purpose=purpose, split=split, allow_change=allow_change,
            is_main=self.is_main,
        )

    def resume(
        self, path: str | Path | None = None, *, allow_change: bool = False
    ) -> TrainState | None:
        """Continue from ``path`` (default: the run's last checkpoint): the restored state, or
        None when there is no last checkpoint.

        The checkpoint is checked against this run's config and split first (:meth:`check`);
        allowed changes are recorded with the step they apply from.
        """
        p = Path(path) if path is not None else self.run_dir / LAST
        if path is None and not p.exists():
            return None
        ckpt = load_checkpoint(p, map_location=self.built.device)
        changes = self.check(ckpt, purpose="resume", allow_change=allow_change)
        state = self.load(ckpt)
        assert state is not None
        for change in changes:
            state.config_changes.append(change.as_record(state.step))
            if self.is_main:
                _notice(f"from step {state.step}: {change.describe()}")
        self.log.truncate_after(state.step)
        return state
