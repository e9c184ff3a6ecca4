"""Building a run from its config, apart from running it.

:func:`build_model` makes what ``mtlkit predict`` and ``mtlkit export`` need: the backbone, the
tasks, the data (or stand-in splits) and the architecture with its heads. :func:`build_run` adds
what training needs around it: the weighter, the optimizer, the epoch plan and the schedule.
Neither writes a file, and both draw from the seeded RNGs in the same order every time (backbone,
heads, weighter, optimizer), so a run built twice from one config starts bit-identical.
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mtlkit import distributed
from mtlkit.architecture import Architecture, HeadSpec
from mtlkit.backbone import Backbone
from mtlkit.config import ResolvedRun, RunConfig, resolve_run
from mtlkit.data import DataSplits
from mtlkit.errors import ConfigError, MtlkitError
from mtlkit.loading import EpochPlan
from mtlkit.optim import build_optimizer, build_scheduler
from mtlkit.plugins import PluginHost, get_plugin_manager
from mtlkit.task import Task
from mtlkit.weighter import Weighter, WeighterSetup


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed every RNG the loop touches; deterministic mode makes CPU runs bit-reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def start_process(config: RunConfig) -> torch.device:
    """Threads, seeds and the device the config asks for (an error when it cannot be had)."""
    tc = config.trainer
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    seed_everything(config.seed, tc.deterministic)
    device = torch.device(tc.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device: CUDA was requested but is not available")
    if tc.precision == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision: fp16 needs a CUDA device; use bf16 on CPU")
    return device


def join_job(device: torch.device) -> tuple[torch.device, distributed.DistInfo]:
    """Join the torch.distributed job torchrun describes, if any: this rank's device (its own
    GPU under CUDA) and its place in the job."""
    dist = distributed.init(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    return device, dist


@dataclass
class BuiltModel:
    """A config's model and everything that explains its outputs, on ``device``."""

    config: RunConfig
    host: PluginHost
    resolved: ResolvedRun
    device: torch.device
    backbone: Backbone
    tasks: list[Task]
    task_ids: list[str]
    target_keys: list[str]
    data: DataSplits
    """The splits the heads were sized by (predict and export: stand-ins from a checkpoint)."""
    model: Architecture


@dataclass
class BuiltRun(BuiltModel):
    """A :class:`BuiltModel` with what trains it; the trainer adds the loop."""

    dist: distributed.DistInfo
    weighter: Weighter
    ddp: nn.Module | None
    scaler: torch.amp.GradScaler | None
    optimizer: torch.optim.Optimizer
    plan: EpochPlan
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    weighter_own: list[nn.Parameter]
    """The weighter's trainable parameters that the optimizer does not step (it updates them
    itself); under fp16 their gradients are unscaled by hand."""

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.num_batches


def construct(resolved: Any, where: str, make: Any) -> Any:
    """``make(cls, options)`` for a resolved component; a plugin's ValueError, TypeError or
    KeyError becomes a ConfigError naming the config section and the plugin."""
    try:
        return make(resolved.cls, resolved.options)
    except MtlkitError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{where}: {resolved.cls.__name__} ({resolved.entry_dist}): {exc}"
        ) from exc


def _build_head(task: Task, info: dict[str, Any], width: int) -> nn.Module:
    """Task ``task``'s head on ``width`` features (the architecture decides the width)."""
    return task.build_head(width, info)


def build_model(
    config: RunConfig,
    host: PluginHost | None = None,
    *,
    data: DataSplits | None = None,
    device: torch.device | None = None,
) -> BuiltModel:
    """The backbone, tasks and architecture of ``config``, with heads sized by the data.

    ``data``: splits to use instead of setting up the config's dataset (predict and export pass
    stand-ins built from a checkpoint). Without ``device`` the process is started first
    (:func:`start_process`: threads, seeds), as training starts it.
    """
    host = host or get_plugin_manager()
    if device is None:
        device = start_process(config)
    resolved = resolve_run(config, host)
    backbone = construct(resolved.backbone, "backbone", lambda c, o: c(o))
    task_ids = config.task_ids()
    target_keys = [t.target_key for t in config.tasks]
    tasks: list[Task] = [
        construct(resolved.tasks[tid], f"tasks.{i}", lambda c, o, tid=tid: c(tid, o))
        for i, tid in enumerate(task_ids)
    ]
    if data is None:
        module = construct(resolved.data, "data", lambda c, o: c(o))
        data = module.setup(target_keys, backbone.data_config())
    heads: dict[str, HeadSpec] = {}
    for task, key in zip(tasks, target_keys):
        if key not in data.train.targets:
            raise ConfigError(
                f"tasks: dataset {config.data.name!r} provides no target {key!r};"
                f" it has {sorted(data.train.targets)} (set the task's 'target')"
            )
        heads[task.name] = functools.partial(_build_head, task, data.info.get(key, {}))
    model = construct(
        resolved.architecture, "architecture", lambda c, o: c(backbone, heads, o)
    ).to(device)
    return BuiltModel(
        config, host, resolved, device, backbone, tasks, task_ids, target_keys, data, model
    )


def build_run(
    config: RunConfig,
    host: PluginHost,
    device: torch.device,
    dist: distributed.DistInfo,
    data: DataSplits | None = None,
) -> BuiltRun:
    """:func:`build_model` plus the weighter (set up on the model's features), the model's DDP
    wrapper under torch.distributed, the loss scaler, the optimizer, the epoch plan and the
    learning-rate schedule."""
    built = build_model(config, host, data=data, device=device)
    model, tc = built.model, config.trainer
    weighter: Weighter = construct(
        built.resolved.weighter, "weighter", lambda c, o: c(built.task_ids, o)
    )
    example = built.data.train.batch(torch.arange(1))["input"].to(device)
    weighter.setup(
        WeighterSetup(
            feature_dim=model.representation_dim(example),
            shared_numel=sum(p.numel() for p in model.shared_parameters()),
            device=device,
        )
    )
    weighter.to(device)
    ddp: nn.Module | None = None
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
        sync_weighter(weighter)
    scaler = torch.amp.GradScaler("cuda") if tc.precision == "fp16" else None
    optimizer = make_optimizer(config, model, weighter)
    plan = EpochPlan(built.data.train, tc.batch_size, config.seed, dist.rank, dist.world_size)
    if plan.num_batches == 0:
        raise ConfigError(
            f"data: the training split gives this process no samples ({len(built.data.train)}"
            f" samples, {dist.world_size} processes)"
        )
    scheduler = build_scheduler(
        config.scheduler, optimizer, total_steps(config, plan.num_batches), plan.num_batches
    )
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    own = [p for p in weighter.parameters() if p.requires_grad and id(p) not in in_optimizer]
    return BuiltRun(
        **vars(built), dist=dist, weighter=weighter, ddp=ddp, scaler=scaler,
        optimizer=optimizer, plan=plan, scheduler=scheduler, weighter_own=own,
    )


def sync_weighter(weighter: Weighter) -> None:
    """Start every rank from rank 0's weighter parameters and buffers."""
    import torch.distributed as dist

    for t in [*weighter.parameters(), *weighter.buffers()]:
        dist.broadcast(t.data, src=0)


def make_optimizer(
    config: RunConfig, model: Architecture, weighter: Weighter
) -> torch.optim.Optimizer:
    """The config's optimizer over the trainable model parameters (the shared ones in a group of
    their own under ``optimizer.shared_lr_scale``) and the weighter's parameter groups."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    scale = config.optimizer.shared_lr_scale
    groups: list[dict[str, Any]] = [{"params": trainable}]
    if scale != 1.0:  # a slower trunk: fine-tuning a pretrained backbone
        shared = {id(p) for p in model.shared_parameters()}
        # heads first: the logged lr (the first group's) stays the configured schedule
        groups = [
            {"params": [p for p in trainable if id(p) not in shared]},
            {"params": [p for p in trainable if id(p) in shared],
             "lr": config.optimizer.lr * scale},
        ]
        groups = [g for g in groups if g["params"]]
    return build_optimizer(config.optimizer, groups + weighter.param_groups())


def total_steps(config: RunConfig, steps_per_epoch: int) -> int:
    """The run's optimisation steps: ``trainer.epochs`` epochs, at most ``trainer.max_steps``."""
    total = steps_per_epoch * config.trainer.epochs
    if config.trainer.max_steps is not None:
        total = min(total, config.trainer.max_steps)
    return total
