"""Evaluation of a multi-task model on one split: per-task metrics and mean losses.

Kept apart from the training loop; the Trainer calls :func:`evaluate_split` for validation and the
final report, and ``mtlkit evaluate`` through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mtlkit import distributed
from mtlkit.data import Batch, MultiTaskDataset
from mtlkit.task import MetricMeter, Task

if TYPE_CHECKING:
    from mtlkit.loading import BatchLoader


def move_batch(batch: Batch, device: torch.device) -> Batch:
    """The batch on ``device`` (a no-op on the CPU)."""
    if device.type == "cpu":
        return batch
    return Batch(
        input=batch["input"].to(device, non_blocking=True),
        targets={k: v.to(device, non_blocking=True) for k, v in batch["targets"].items()},
        meta={k: v.to(device, non_blocking=True) for k, v in batch["meta"].items()},
    )


def to_cpu(obj: Any) -> Any:
    """Tensors (in dicts/lists) moved to CPU, detached: what evaluation gathers across ranks."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def labelled_counts(tasks: Sequence[Task], keys: Sequence[str], batch: Batch) -> Tensor:
    """Labelled samples per task in a batch (task losses are means over these)."""
    targets = batch["targets"]
    counts = [t.labelled_mask(targets[k]).sum() for t, k in zip(tasks, keys)]
    return torch.stack(counts).double().cpu()


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    tasks: Sequence[Task],
    keys: Sequence[str],
    losses: Callable[[dict[str, Any], Batch], Tensor],
    data: MultiTaskDataset,
    *,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    loader: BatchLoader | None = None,
) -> tuple[dict[str, Any], dict[str, MetricMeter]]:
    """Per-task metrics (plus ``loss`` where the split has labels) and the filled meters.

    Eval mode, no gradient. Under torch.distributed each rank runs a strided shard and the
    outputs are gathered, so every rank computes the metrics of the whole split. ``loader``
    reads the batches (in worker processes for data on disk); None: in this process.
    """
    from mtlkit.loading import BatchLoader, LoaderSettings, eval_keys

    model.eval()
    info = distributed.env_info()
    sharded = distributed.active()
    meters = {t.name: t.new_meter() for t in tasks}
    loss_sum = torch.zeros(len(tasks), dtype=torch.float64)
    count = torch.zeros(len(tasks), dtype=torch.float64)

    def add(outputs: dict[str, Any], batch: Batch, values: Tensor, labelled: Tensor) -> None:
        nonlocal loss_sum, count
        for task, key in zip(tasks, keys):
            meters[task.name].update(outputs[task.name], batch["targets"][key], batch)
        loss_sum += values * labelled
        count += labelled

    def reduced(outputs: dict[str, Any]) -> dict[str, Any]:
        return {t.name: t.meter_inputs(outputs[t.name]) for t in tasks}

    rank, world = (info.rank, info.world_size) if sharded else (0, 1)
    if loader is None:
        loader = BatchLoader(data, LoaderSettings(0, False, False, None))
    gathered: list[tuple[Any, Batch, Tensor, Tensor]] = []
    for stored in loader.batches(eval_keys(len(data), batch_size, rank, world)):
        if not len(stored["input"]):
            continue  # every sample of it unreadable and skipped by policy
        batch = move_batch(stored, device)
        with autocast():
            _, outputs = model(batch["input"])
        values = losses(outputs, batch).double().cpu()
        labelled = labelled_counts(tasks, keys, batch)
        if sharded:
            # without the inputs: the meters read targets and meta, and a large split's images
            # gathered onto every rank would not fit in memory
            kept = Batch(input=torch.empty(0), targets=batch["targets"], meta=batch["meta"])
            gathered.append((to_cpu(reduced(outputs)), to_cpu(kept), values, labelled))
        else:
            add(reduced(outputs), batch, values, labelled)
    if sharded:
        for part in distributed.gather_objects(gathered):
            for item in part:
                add(*item)
    result: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        metrics = meters[task.name].compute()
        if count[i] > 0:  # a split without labels for a task has no loss for it
            metrics["loss"] = float(loss_sum[i] / count[i])
        result[task.name] = metrics
    return result, meters
