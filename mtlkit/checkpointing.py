"""A trainer's checkpoints: what one holds, loading it back, and the checks before a resume."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mtlkit import __version__
from mtlkit import distributed as D
from mtlkit import resume as R
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
    from mtlkit.architecture import Architecture
    from mtlkit.data import DataSplits
    from mtlkit.runlog import RunLog
    from mtlkit.weighter import Weighter

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


class Checkpointing:
    """The :class:`~mtlkit.trainer.Trainer`'s checkpoint methods, kept beside the loop.

    Everything a checkpoint holds is read from (and restored into) the attributes declared
    here, which the trainer builds.
    """

    config: RunConfig
    model: Architecture
    weighter: Weighter
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler | None
    data: DataSplits
    device: torch.device
    task_ids: list[str]
    state: TrainState
    log: RunLog
    run_dir: Path
    is_main: bool
    _input_layout: str | None
    _resolved: Any
    _harmless: Any
    _group_hparams: list[dict[str, Any]]

    def _apply_config_hparams(self) -> None:
        """After loading optimizer state: the config's hyperparameters and this step's lr.

        A checkpoint's param groups carry the old lr, weight decay and momentum; the config's win,
        and the schedule is evaluated at the current step, so an unchanged config resumes exactly
        and a changed one (allowed by ``--allow-config-change``) takes effect from here on.
        """
        for group, hp in zip(self.optimizer.param_groups, self._group_hparams):
            group.update(hp)
        if self.scheduler is None:
            return
        sched = self.scheduler
        sched.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        sched.last_epoch = self.state.step
        for group, base, f in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * f(self.state.step)
        sched._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs: module, optimizer and RNG states, the loop's place, the
        config (as written and resolved) and what predict and export need without the data."""
        s = self.state
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(),
            "weighter": self.weighter.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": rng,
            "train_state": {
                "step": s.step,
                "epoch": s.epoch,
                "batch": s.batch,
                "skipped_nonfinite": s.skipped_nonfinite,
                "best_score": s.best_score if s.best_score is not None else float("nan"),
                "history": json.dumps(s.history),
                "config_changes": json.dumps(s.config_changes),
            },
            "config": json.dumps(config_to_dict(self.config)),
            "resolved_config": json.dumps(self.resolved_config),
            # the training split's groups by name (an index depends on which groups the data
            # lists), with the source the names belong to
            **self._train_groups(),
            "task_ids": list(self.task_ids),
            # what each head was sized by (class names...): predict/export check the data agrees
            "data_info": json.dumps(self.data.info, default=str),
            # and how a sample becomes model input, so they work without the data (empty: unknown)
            "input_layout": self.input_layout_json(),
            "mtlkit_version": __version__,
        }

    def input_layout_json(self) -> str:
        """The training split's :class:`~mtlkit.layout.InputLayout` as JSON, measured once; empty
        when it cannot be measured (predict and export then need the data)."""
        if self._input_layout is None:
            try:
                self._input_layout = InputLayout.measure(self.data.train).to_json()
            except Exception:  # optional metadata: it must never stop a checkpoint being saved
                self._input_layout = ""
        return self._input_layout

    def save(self, name: str = LAST) -> Path:
        """Rank 0 writes; every rank waits so nobody reads a checkpoint being written."""
        path = self.run_dir / name
        if self.is_main:
            self.log.flush()
            save_checkpoint(self.state_dict(), path)
        D.barrier()
        return path

    @property
    def resolved_config(self) -> dict[str, Any]:
        """The run's config with every plugin option's default filled in (as it is now)."""
        return resolved_config_dict(self.config, self._resolved)

    def _split_groups(self, split: str) -> R.Groups | None:
        """The groups (subjects...) a split holds, by name; None without a group key."""
        data = self.data.named().get(split)
        if data is None:
            return None
        d = self.data
        return R.Groups.of(data.meta, d.group_key, d.group_names, d.group_source)

    def _train_groups(self) -> dict[str, Any]:
        """The checkpoint entries naming the training split's groups (empty names: none)."""
        groups = self._split_groups("train")
        if groups is None:
            return {"group_key": "", "group_source": "", "train_groups": []}
        return groups.to_state()

    def load_state_dict(self, ckpt: dict[str, Any], *, model_only: bool = False) -> None:
        if list(ckpt.get("task_ids", [])) != self.task_ids:
            raise CheckpointError(
                f"checkpoint tasks {ckpt.get('task_ids')} do not match the config's {self.task_ids}"
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.weighter.load_state_dict(ckpt["weighter"])
            if model_only:
                return
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scaler is not None and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
        except RuntimeError as exc:
            raise CheckpointError(self._mismatch(ckpt, exc)) from None
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit this model: {exc}") from None
        ts = ckpt["train_state"]
        best = float(ts["best_score"])
        self.state = TrainState(
            step=int(ts["step"]),
            epoch=int(ts["epoch"]),
            batch=int(ts["batch"]),
            skipped_nonfinite=int(ts["skipped_nonfinite"]),
            best_score=None if math.isnan(best) else best,
            history=json.loads(ts["history"]),
            config_changes=json.loads(ts.get("config_changes", "[]")),
        )
        self._apply_config_hparams()
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])

    def _mismatch(self, ckpt: dict[str, Any], exc: RuntimeError) -> str:
        """A short account of a state dict that does not fit, naming the likely cause."""
        keys = parse_load_error(exc)
        if keys is None:
            return f"checkpoint does not fit this model: {str(exc).splitlines()[0]}"
        missing, unexpected = keys
        return describe_mismatch(
            missing, unexpected, stored_config(ckpt), config_to_dict(self.config),
            parse_size_mismatches(exc),
        )

    def check_checkpoint(
        self, ckpt: dict[str, Any], *, purpose: str, split: str = "test", allow_change: bool = False
    ) -> list[R.Change]:
        """Compare a checkpoint with this run before using it (see ``mtlkit.resume``).

        ``purpose="resume"``: forbidden changes are errors, legitimate ones need
        ``allow_change``; returns the legitimate changes. ``purpose="evaluate"`` (or
        ``"predict"``, ``"export"``): differences are reported as a notice naming the command.
        All refuse a ``split`` sharing a group with the training split the checkpoint saw.
        """
        # compare with every plugin option's default filled in, so spelling out a default is
        # no change (older checkpoints hold only the config as written), the stored options
        # read through this version's models (an old spelling compares as what it means now)
        stored = stored_config({"config": ckpt.get("resolved_config")})
        current: dict[str, Any] = self.resolved_config
        if stored is not None:
            stored = reread_resolved(stored, self.config, self._resolved)
        else:
            stored, current = stored_config(ckpt), config_to_dict(self.config)
        changes: list[R.Change] = []
        if stored is not None:
            changes = R.diff_configs(stored, current, self._harmless)
        legitimate = R.check_resume(changes, allow_change) if purpose == "resume" else []
        meaningful = [c for c in changes if c.kind == "forbidden"]
        if meaningful and self.is_main:
            doing = _USING_A_CHECKPOINT.get(purpose, f"{purpose}:")
            _notice(
                f"{doing} a checkpoint trained with another config:\n"
                + "\n".join(f"  {c.describe()}" for c in meaningful)
            )
        self._check_groups(ckpt, split, purpose)
        return legitimate

    def _check_groups(self, ckpt: dict[str, Any], split: str, purpose: str) -> None:
        """Refuse a split sharing a group, by name, with the checkpoint's training split.

        Another source (another data set) is a notice: its names are other people. A checkpoint
        from before names were stored holds indices; they are compared as before, with a notice
        that this is only right while the data lists the same groups.
        """
        trained = R.Groups.from_state(ckpt)
        data = self.data.named().get(split)
        if trained is None or data is None:
            return
        if isinstance(trained, Tensor):
            key = str(ckpt["group_key"])
            if key != self.data.group_key:
                return
            if self.is_main:
                _notice(
                    f"this checkpoint stores its training {key}s by index, not by name (it was"
                    f" written before checkpoints named them): the {split!r} split is checked by"
                    f" index, which is right only while the data lists the same {key}s as in"
                    " training"
                )
            test_ids = R.group_ids(data.meta, key)
            if test_ids is not None:
                R.check_no_overlap_by_index(trained, key, test_ids, split)
            return
        current = self._split_groups(split)
        if current is None:
            return
        if not R.check_no_overlap(trained, current, split) and self.is_main:
            _notice(
                f"{purpose}: the checkpoint trained on {trained.key}s of"
                f" {trained.source or 'an unnamed source'}, the {split!r} split holds"
                f" {current.key}s of {current.source or 'an unnamed source'}: another data set,"
                f" so no {trained.key} is compared"
            )

    def resume(self, path: str | Path | None = None, *, allow_change: bool = False) -> bool:
        """Continue from ``path`` (default: the run's last checkpoint); False if there is none.

        The checkpoint is checked against this run's config and split first
        (:meth:`check_checkpoint`); allowed changes are recorded with the step they apply from.
        """
        p = Path(path) if path is not None else self.run_dir / LAST
        if path is None and not p.exists():
            return False
        ckpt = load_checkpoint(p, map_location=self.device)
        changes = self.check_checkpoint(ckpt, purpose="resume", allow_change=allow_change)
        self.load_state_dict(ckpt)
        for change in changes:
            self.state.config_changes.append(change.as_record(self.state.step))
            if self.is_main:
                _notice(f"from step {self.state.step}: {change.describe()}")
        self.log.truncate_after(self.state.step)
        return True
