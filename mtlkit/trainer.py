"""The training loop: runs a built run (mtlkit.build), trains, evaluates and writes results."""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from mtlkit import __version__, distributed
from mtlkit.build import build_run, join_job, start_process, total_steps
from mtlkit.checkpoint import load_checkpoint
from mtlkit.checkpointing import BEST, LAST, Checkpointer, TrainState, resolved_config
from mtlkit.config import RunConfig, config_to_dict
from mtlkit.data import Batch, DataSplits, Loaded
from mtlkit.errors import CheckpointError, ConfigError, NonFiniteLossError
from mtlkit.evaluation import evaluate_split, move_batch
from mtlkit.gradients import DIAGNOSTICS, GradientEngine, StepResult
from mtlkit.loading import BatchLoader, merge_skips, resolve_loader
from mtlkit.notices import format_metric
from mtlkit.notices import notice as _notice
from mtlkit.plugins import PluginHost, get_plugin_manager
from mtlkit.preempt import StopRequests, TrainingInterrupted
from mtlkit.resume import Change
from mtlkit.runlog import RunLog, plot_history
from mtlkit.task import MetricSpec


class Trainer:
    """Runs one built run (:func:`mtlkit.build.build_run`) in its run directory: the loop,
    evaluation, results, and checkpoints through its :class:`~mtlkit.checkpointing.Checkpointer`.
    """

    def __init__(
        self, config: RunConfig, host: PluginHost | None = None, data: DataSplits | None = None
    ) -> None:
        """``data``: splits to use instead of setting up the config's dataset."""
        self.config = config
        self.host = host or get_plugin_manager()
        tc = config.trainer
        self.device, self.dist = join_job(start_process(config))
        self.is_main = self.dist.is_main
        self.run_dir = Path(config.output_dir)
        self._made_dirs = make_output_dir(self.run_dir) if self.is_main else []
        built = self.built = build_run(config, self.host, self.device, self.dist, data)
        self.backbone, self.tasks, self.data = built.backbone, built.tasks, built.data
        self.task_ids, self.target_keys = built.task_ids, built.target_keys
        self.model, self.weighter, self.ddp = built.model, built.weighter, built.ddp
        self.optimizer, self.scheduler, self.scaler = built.optimizer, built.scheduler, built.scaler
        self.plan, self.steps_per_epoch = built.plan, built.steps_per_epoch
        self.engine = GradientEngine(
            self.model, self.tasks, self.weighter, self.target_keys, forward_module=self.ddp,
            autocast=self._autocast, scaler=self.scaler, diagnostics_every=tc.diagnostics,
            batched_backward=tc.batched_backward,
        )
        self.loader_settings = resolve_loader(tc.loader, self.data.train, self.device)
        self._loaders: dict[str, BatchLoader] = {}
        self.state = TrainState()
        self.log = RunLog(
            self.run_dir, self.task_ids, tc.log_format, tc.log_every, enabled=self.is_main,
            extra_columns=DIAGNOSTICS if tc.diagnostics else (),
        )
        self.checkpointer = Checkpointer(built, self.run_dir, self.log, is_main=self.is_main)
        self._check_select_metric()
        self._notice_small_training_set()
        self._start_epoch_sums()
        self._epoch_lines = False
        self._bar: Any = None

    # --- checkpoints (see Checkpointer) --------------------------------------------------------
    def save(self, name: str = LAST) -> Path:
        """Write the run's checkpoint ``name`` (rank 0; every rank waits)."""
        return self.checkpointer.save(self.state, name)

    def state_dict(self) -> dict[str, Any]:
        return self.checkpointer.state_dict(self.state)

    def load_state_dict(self, ckpt: dict[str, Any], *, model_only: bool = False) -> None:
        """Restore a checkpoint; ``model_only``: the weights, leaving optimizer and loop alone."""
        state = self.checkpointer.load(ckpt, model_only=model_only)
        if state is not None:
            self.state = state

    def check_checkpoint(
        self, ckpt: dict[str, Any], *, purpose: str, split: str = "test", allow_change: bool = False
    ) -> list[Change]:
        """See :func:`mtlkit.checkpointing.check_checkpoint`."""
        return self.checkpointer.check(
            ckpt, purpose=purpose, split=split, allow_change=allow_change
        )

    def resume(self, path: str | Path | None = None, *, allow_change: bool = False) -> bool:
        """Continue from ``path`` (default: the run's last checkpoint); False if there is none."""
        state = self.checkpointer.resume(path, allow_change=allow_change)
        if state is None:
            return False
        self.state = state
        return True

    @property
    def resolved_config(self) -> dict[str, Any]:
        """The run's config with every plugin option's default filled in (as it is now)."""
        return resolved_config(self.built)

    # --- the loop's helpers ------------------------------------------------------------------
    def _autocast(self) -> Any:
        precision = self.config.trainer.precision
        if precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def loader(self, split: str) -> BatchLoader:
        """The batch loader of a split, made once, so persistent workers serve every epoch."""
        if split not in self._loaders:
            data = self.data.named()[split]
            settings = resolve_loader(self.config.trainer.loader, data, self.device)
            self._loaders[split] = BatchLoader(data, settings, self.config.seed, self.dist.rank)
        return self._loaders[split]

    def total_steps(self) -> int:
        return total_steps(self.config, self.steps_per_epoch)

    # --- training ----------------------------------------------------------------------------
    def _progress(self, total: int, initial: int) -> Any:
        mode = self.config.trainer.progress
        if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, leave=False)

    def train_step(self, batch: Batch) -> StepResult | None:
        """One optimisation step; returns None when a non-finite batch was skipped by policy."""
        s = self.state
        self.model.train()
        self.weighter.train()
        self.optimizer.zero_grad(set_to_none=True)
        try:
            result = self.engine.backward(batch, s.step, s.epoch)
        except NonFiniteLossError as exc:
            if self.config.trainer.on_nonfinite == "skip":
                self.optimizer.zero_grad(set_to_none=True)
                s.skipped_nonfinite += 1
                return None
            if s.step > 0 and not (self.run_dir / LAST).exists():
                # nothing was stepped with the bad loss: the current state is the last good one
                self.save(LAST)
            raise NonFiniteLossError(
                f"{exc} (epoch {s.epoch}); the last good checkpoint is kept in {self.run_dir}"
                " (set trainer.on_nonfinite=skip to skip such batches)"
            ) from None
        distributed.all_mean_grads(list(self.weighter.parameters()))
        clip = self.config.trainer.grad_clip
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
            scale = self.scaler.get_scale()
            for p in self.built.weighter_own:
                if p.grad is not None:
                    p.grad.div_(scale)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.engine.after_step(result)
        return result

    def fit(
        self, resume: bool | Literal["if-possible"] = False, *, allow_config_change: bool = False
    ) -> dict[str, Any]:
        """Train for ``trainer.epochs`` (or ``max_steps``), then evaluate and write results.

        ``resume=True`` continues from ``last.pt`` and is an error when there is none;
        ``"if-possible"`` starts afresh (with a notice) instead. On SIGINT, SIGTERM or SIGUSR1
        the current step finishes, ``last.pt`` is written and :class:`TrainingInterrupted` is
        raised (``trainer.handle_signals``).
        """
        tc = self.config.trainer
        t0 = time.perf_counter()
        resumed = bool(resume) and self.resume(allow_change=allow_config_change)
        if resume is True and not resumed:
            remove_made_dirs(self._made_dirs)
            raise CheckpointError(
                f"--resume: there is no checkpoint to resume at {self.run_dir / LAST}; check"
                " output_dir, or pass --resume-if-possible to start afresh when there is none"
            )
        if not resumed:
            if resume and self.is_main:
                _notice(f"no checkpoint at {self.run_dir / LAST}: starting afresh")
            self.log.truncate_after(0)
        total = self.total_steps()
        bar = self._progress(total, self.state.step)
        # one line per epoch on a terminal too (above the bar), not only a transient bar
        self._epoch_lines = self.is_main
        self._bar = bar
        s = self.state
        try:
            with StopRequests(tc.handle_signals) as stop:
                while s.epoch < tc.epochs and s.step < total:
                    keys = self.plan.keys(s.epoch, s.batch, limit=total - s.step)
                    for loaded in self.loader("train")(keys):
                        self._run_batch(loaded)
                        if bar is not None:
                            bar.update(1)
                        ended = s.batch >= self.steps_per_epoch
                        if ended:
                            self._end_epoch()  # checkpoints at the epoch's end
                        elif tc.checkpoint_every and s.step % tc.checkpoint_every == 0:
                            self.save(LAST)
                        if stop.requested(self.device):
                            path = self.save(LAST)
                            raise TrainingInterrupted(stop.signame, s.step, s.epoch, str(path))
                        if ended:
                            break  # the next epoch draws its own order
        except BaseException:
            self.close_loaders()
            raise
        finally:
            if bar is not None:
                bar.close()
            self.log.flush()
        self.loader("train").close()
        self.save(LAST)
        train_seconds = time.perf_counter() - t0
        try:
            return self.finish(train_seconds)
        finally:
            self.close_loaders()

    def close_loaders(self) -> None:
        """Stop every loader's worker processes (a later evaluation starts new ones)."""
        for loader in self._loaders.values():
            loader.close()

    def _run_batch(self, loaded: Loaded) -> None:
        """One step on batch ``s.batch`` of the epoch (read by :class:`EpochPlan`'s key)."""
        s = self.state
        batch = move_batch(loaded.batch, self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        kept = len(batch["input"])
        # unreadable samples skipped by policy: a batch left with none (or a lone sample, which
        # batch-norm cannot train on) is passed over, like a non-finite batch under skip
        result = self.train_step(batch) if kept > 1 or (kept == 1 and not loaded.skipped) else None
        if result is not None:
            self.log.log_step(s.step, s.epoch, lr, result.losses, result.weights,
                              result.diagnostics)
            row = torch.cat([result.losses.detach().float(), result.weights.detach().float()])
            self._epoch_sum = row if self._epoch_sum is None else self._epoch_sum + row
            self._epoch_steps += 1
            if result.diagnostics is not None:
                diag = result.diagnostics.detach().float()
                self._epoch_diag = diag if self._epoch_diag is None else self._epoch_diag + diag
                self._epoch_diag_steps += 1
        s.step += 1
        s.batch += 1

    def _end_epoch(self) -> None:
        s = self.state
        tc = self.config.trainer
        row: dict[str, Any] = {"epoch": s.epoch, "step": s.step}
        train = self._train_means()
        if train:
            row["train"] = train
        if self.data.val is not None and tc.eval_every and (s.epoch + 1) % tc.eval_every == 0:
            metrics = self.evaluate("val")
            row["val"] = metrics
            self._select(metrics)
        row["seconds"] = round(time.perf_counter() - self._epoch_t0, 3)  # with validation
        s.history.append(row)
        self.log.log_epoch(row)
        if self._epoch_lines:
            if self._bar is not None:
                self._bar.write(self._epoch_line(row))
            else:
                print(self._epoch_line(row), flush=True)
        s.epoch += 1
        s.batch = 0
        self._start_epoch_sums()
        if tc.checkpoint_epochs and s.epoch % tc.checkpoint_epochs == 0:
            self.save(LAST)

    def _start_epoch_sums(self) -> None:
        """Zero the epoch's sums of losses, weights and diagnostics, and start its clock."""
        self._epoch_sum: Tensor | None = None
        self._epoch_steps = 0
        self._epoch_diag: Tensor | None = None
        self._epoch_diag_steps = 0
        self._epoch_t0 = time.perf_counter()

    def _train_means(self) -> dict[str, float]:
        """The epoch's mean ``loss/<task>``, ``weight/<task>`` and diagnostics, kept in
        ``epochs.jsonl`` so a report needs no per-step log (after a resume mid-epoch: the mean of
        the steps this process ran)."""
        out: dict[str, float] = {}
        if self._epoch_sum is not None and self._epoch_steps:
            mean = (self._epoch_sum / self._epoch_steps).tolist()
            t = len(self.task_ids)
            out.update({f"loss/{n}": v for n, v in zip(self.task_ids, mean[:t])})
            out.update({f"weight/{n}": v for n, v in zip(self.task_ids, mean[t:])})
        if self._epoch_diag is not None and self._epoch_diag_steps:
            diag = (self._epoch_diag / self._epoch_diag_steps).tolist()
            out.update(zip(DIAGNOSTICS, diag))
        return out

    def _epoch_line(self, row: dict[str, Any]) -> str:
        """One line per epoch for logs without a terminal: time, mean losses and weights, val."""
        parts = [
            f"epoch {row['epoch'] + 1}/{self.config.trainer.epochs}",
            f"{time.perf_counter() - self._epoch_t0:.1f}s",
        ]
        train = row.get("train") or {}
        if f"loss/{self.task_ids[0]}" in train:
            parts.append("loss " + " ".join(f"{n}={train[f'loss/{n}']:.4f}" for n in self.task_ids))
            parts.append(
                "weight " + " ".join(f"{n}={train[f'weight/{n}']:.3f}" for n in self.task_ids)
            )
        val = row.get("val") or {}
        shown = [
            f"{task}/{name}={format_metric(name, v)}"
            for task, ms in val.items() for name, v in ms.items() if name != "loss"
        ]
        if shown:
            parts.append("val " + " ".join(shown))
        return "  ".join(parts)

    def _notice_small_training_set(self) -> None:
        batch_size, per_rank = self.config.trainer.batch_size, self.plan.per_rank
        if batch_size > per_rank and self.is_main:
            _notice(
                f"trainer.batch_size {batch_size} is larger than the training set"
                f" ({per_rank} samples per process): every epoch is one batch of {per_rank}"
            )

    def _check_select_metric(self) -> None:
        """A misspelt ``select_metric`` fails before training, not after the first epoch."""
        tc = self.config.trainer
        if tc.select != "best" or not tc.select_metric:
            return
        known = [
            f"{t.name}/{m.name}" for t in self.tasks for m in [*t.metrics(), MetricSpec("loss")]
        ]
        if tc.select_metric not in known:
            close = difflib.get_close_matches(tc.select_metric, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"trainer.select_metric: {tc.select_metric!r} is not a metric of these tasks"
                f"{hint}; they report {known}"
            )
        if self.data.val is None:
            raise ConfigError(
                "trainer.select=best needs a validation split; the data has none"
                " (set the dataset's val_fraction, or trainer.select=last)"
            )

    def _select(self, metrics: dict[str, Any]) -> None:
        tc = self.config.trainer
        if tc.select != "best" or not tc.select_metric:
            return
        task, _, name = tc.select_metric.partition("/")
        value = metrics.get(task, {}).get(name)
        if value is None:
            raise ConfigError(
                f"trainer.select_metric: {tc.select_metric!r} is not among the val metrics"
                f" {[f'{t}/{m}' for t, ms in metrics.items() if isinstance(ms, dict) for m in ms]}"
            )
        spec = {m.name: m for t in self.tasks if t.name == task for m in t.metrics()}.get(name)
        higher = spec.higher_is_better if spec else True
        score = value if higher else -value
        if self.state.best_score is None or score > self.state.best_score:
            self.state.best_score = score
            self.save(BEST)

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(self, split: str = "test", artifacts_prefix: str | None = None) -> dict[str, Any]:
        """Per-task metrics and mean losses on a split (see :func:`evaluate_split`); with
        ``artifacts_prefix`` rank 0 also writes each task's files (confusion matrices...)."""
        data = self.data.named().get(split)
        if data is None:
            raise ConfigError(
                f"the dataset has no {split!r} split; it has {list(self.data.named())}"
            )
        result, meters = evaluate_split(
            self.model, self.tasks, self.target_keys, self.engine.losses, data,
            batch_size=self.config.trainer.eval_batch_size, device=self.device,
            autocast=self._autocast, loader=self.loader(split),
        )
        if artifacts_prefix is not None and self.is_main:
            for task in self.tasks:
                meters[task.name].save_artifacts(self.run_dir, f"{artifacts_prefix}{task.name}_")
        return result

    def finish(self, train_seconds: float) -> dict[str, Any]:
        """Final evaluation (best-on-val weights if selected), results JSON and plot."""
        tc = self.config.trainer
        t0 = time.perf_counter()
        selected = "last"
        if tc.select == "best" and (self.run_dir / BEST).exists():
            self.load_state_dict(load_checkpoint(self.run_dir / BEST, self.device), model_only=True)
            selected = f"best {tc.select_metric} on val"
        metrics = {
            split: self.evaluate(split, artifacts_prefix=f"{split}_")
            for split in self.data.named()
            if split != "train"
        }
        results = {
            "metrics": metrics,
            "selected": selected,
            "steps": self.state.step,
            "epochs": self.state.epoch,
            "skipped_nonfinite": self.state.skipped_nonfinite,
            "config_changes": self.state.config_changes,
            "history": self.state.history,
            "data": merge_skips(self.data.summary, self._skipped_while_reading()),
            "config": config_to_dict(self.config),
            "resolved_config": self.resolved_config,
            "versions": versions(),
            "timing": {
                "train_seconds": round(train_seconds, 3),
                # every epoch's training time, across resumes (an interrupted epoch counts from
                # the resume on): what the run cost, where train_seconds is this process's share
                "epoch_seconds": round(
                    math.fsum(h.get("seconds", 0.0) for h in self.state.history), 3
                ),
                "eval_seconds": round(time.perf_counter() - t0, 3),
            },
        }
        results["world_size"] = self.dist.world_size
        skipped = results["data"].get("skipped_images")
        if skipped and self.is_main:
            _notice(
                f"{skipped} unreadable image(s) were skipped (on_bad_image=skip);"
                f" results.json lists them under data"
            )
        if self.is_main:
            out = self.run_dir / "results.json"
            out.write_text(json.dumps(results, indent=2, default=str))
            if tc.plot:
                plot_history(self.log.steps_path, self.run_dir / "training.png", self.task_ids)
        return results

    def _skipped_while_reading(self) -> list[str]:
        """Samples the loaders left out (skip policy), from every rank."""
        found = [n for loader in self._loaders.values() for n in loader.skipped]
        if self.dist.enabled:
            found = [n for part in distributed.gather_objects(found) for n in part]
        return list(dict.fromkeys(found))


def versions() -> dict[str, str]:
    """Versions of what produced a result, for the results JSON."""
    from importlib import metadata

    out = {
        "mtlkit": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for dist in ("timm", "numpy", "pydantic", "pluggy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def make_output_dir(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` and check it is writable; returns the folders this made, deepest first
    (a failed ``--resume`` takes them away again, :func:`remove_made_dirs`)."""
    made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"output_dir: cannot write to {run_dir}: {exc.strerror or exc}"
        ) from None
    return made


def remove_made_dirs(made: list[Path]) -> None:
    """Remove the output folders a run made, while they are empty (nothing ran)."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): leave it
            return
