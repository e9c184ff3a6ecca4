"""Batches for training and evaluation, read in the main process or in ``DataLoader`` workers.

One mechanism for every dataset (:class:`mtlkit.data.MultiTaskDataset`): an :class:`EpochPlan` lists
each batch of an epoch as a :class:`BatchKey` (epoch, batch index, sample indices), a pure function
of (seed, epoch, rank); a :class:`BatchLoader` hands the keys to a ``DataLoader`` whose items are
whole batches, computed by ``MultiTaskDataset.load`` with the batch's own augmentation generator
(``batch_generator(seed, epoch, batch, rank)``). Who computes a batch (the main process or worker 3)
therefore never changes it: a run with 2 workers, one without, and a run resumed mid-epoch train on
the same batches, bit for bit.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mtlkit.config import LoaderConfig
from mtlkit.data import Batch, Loaded, MultiTaskDataset, batch_generator, epoch_order
from mtlkit.errors import DataError, MtlkitError

EVAL_EPOCH = -1
"""The epoch of an evaluation batch: no augmentation."""
MAX_NOTED_SKIPS = 20
"""Skipped samples named in the run summary (all are counted)."""


@dataclass(frozen=True)
class LoaderSettings:
    """The resolved :class:`mtlkit.config.LoaderConfig` for one dataset on one device."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None


def cores_per_process() -> int:
    """CPU cores this process may use, shared with the other ranks on the node (torchrun)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local))


def resolve_loader(
    config: LoaderConfig, data: MultiTaskDataset, device: torch.device
) -> LoaderSettings:
    """Defaults: no workers for data held in memory (gathering rows is faster than any process
    hop); for data read from disk, up to 8 workers on CUDA (the GPU waits on decoding) or 4 on
    CPU (where workers compete with the training threads), never more than the cores per
    process minus one, and at least one. Pinned memory only where it helps: on CUDA."""
    workers = config.num_workers
    if workers is None:
        if not data.streamed:
            workers = 0
        else:
            cap = 8 if device.type == "cuda" else 4
            workers = max(1, min(cap, cores_per_process() - 1))
    pin = config.pin_memory if config.pin_memory is not None else device.type == "cuda"
    return LoaderSettings(
        num_workers=workers,
        pin_memory=bool(pin) and torch.cuda.is_available(),
        persistent_workers=config.persistent_workers and workers > 0,
        prefetch_factor=config.prefetch_factor if workers > 0 else None,
    )


@dataclass(frozen=True)
class BatchKey:
    """One batch: its epoch (``EVAL_EPOCH`` for evaluation), its index in the epoch, its rows."""

    epoch: int
    batch: int
    index: Tensor


def num_batches(samples: int, batch_size: int) -> int:
    """Batches an epoch of ``samples`` makes; a trailing batch of one sample would break
    batch-norm statistics, so it is dropped (unless it is the only one)."""
    full, rest = divmod(samples, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)


class EpochPlan:
    """Which rows each training batch of an epoch holds on this rank.

    The order is :func:`mtlkit.data.epoch_order` (a ``DistributedSampler``, or whole chunks when
    the dataset stores samples in shards), so every rank reads only its share.
    """

    def __init__(
        self, data: MultiTaskDataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.size = len(data)
        self.chunks = data.chunks
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        if self.chunks is None:
            self.per_rank = self.size // world_size if world_size > 1 else self.size
        else:
            counts = torch.unique(self.chunks, return_counts=True)[1]
            self.per_rank = min(int(counts[r::world_size].sum()) for r in range(world_size))
        self.num_batches = num_batches(self.per_rank, batch_size)

    def order(self, epoch: int) -> Tensor:
        return epoch_order(
            self.size, self.seed, epoch, self.rank, self.world_size, chunks=self.chunks
        )

    def keys(self, epoch: int, start: int = 0, limit: int | None = None) -> list[BatchKey]:
        """Batches ``start``.. of ``epoch`` (at most ``limit``): a resumed epoch starts where the
        checkpoint stopped."""
        order = self.order(epoch)
        bs = self.batch_size
        stop = self.num_batches if limit is None else min(self.num_batches, start + limit)
        return [BatchKey(epoch, b, order[b * bs : (b + 1) * bs]) for b in range(start, stop)]


def eval_keys(size: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[BatchKey]:
    """Evaluation batches: a strided share per rank, in stored order, no augmentation."""
    share = torch.arange(rank, size, world_size)
    return [
        BatchKey(EVAL_EPOCH, b, share[start : start + batch_size])
        for b, start in enumerate(range(0, len(share), batch_size))
    ]


@dataclass(frozen=True)
class _Failure:
    """An mtlkit error raised in a worker, carried back as text so the main process raises it
    as itself (a ``DataError`` naming the file), not wrapped in a worker traceback."""

    kind: str
    message: str


class _Batches(torch.utils.data.Dataset[Loaded | _Failure]):
    """What the workers hold: the dataset, and how a key becomes a batch."""

    def __init__(self, data: MultiTaskDataset, seed: int, rank: int) -> None:
        self.data = data
        self.seed = seed
        self.rank = rank

    def __getitem__(self, key: BatchKey) -> Loaded | _Failure:  # type: ignore[override]
        generator = None
        if key.epoch != EVAL_EPOCH:
            generator = batch_generator(self.seed, key.epoch, key.batch, self.rank)
        try:
            return self.data.load(key.index, generator)
        except MtlkitError as exc:
            return _Failure(type(exc).__name__, str(exc))


class _Keys(torch.utils.data.Sampler[BatchKey]):
    """The keys of the current pass; set before each pass, so one loader (and its persistent
    workers) serves every epoch."""

    def __init__(self) -> None:
        self.keys: list[BatchKey] = []

    def __iter__(self) -> Iterator[BatchKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def _unbatched(item: Loaded | _Failure) -> Loaded | _Failure:
    return item


def _quiet_worker(_: int) -> None:
    """Ctrl-C and SIGUSR1 are the main process's to handle (finish the step, checkpoint): a
    worker that died of them first would turn a clean stop into a crash. SIGTERM keeps its
    default, so the loader can still terminate a worker that does not stop."""
    for sig in (signal.SIGINT, getattr(signal, "SIGUSR1", None)):
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


class BatchLoader:
    """Reads the batches a list of keys names, in order, for one dataset.

    Unreadable samples left out by a skip policy are collected in :attr:`skipped` (each once).
    """

    def __init__(
        self, data: MultiTaskDataset, settings: LoaderSettings, seed: int = 0, rank: int = 0
    ) -> None:
        self.data = data
        self.settings = settings
        self.skipped: dict[str, None] = {}
        self._keys = _Keys()
        self._loader: torch.utils.data.DataLoader[Loaded | _Failure] | None = None
        self._seed = seed
        self._rank = rank

    def _make(self) -> torch.utils.data.DataLoader[Loaded | _Failure]:
        s = self.settings
        extra: dict[str, object] = {}
        if s.num_workers > 0:
            extra = {
                "persistent_workers": s.persistent_workers,
                "worker_init_fn": _quiet_worker,
                "prefetch_factor": s.prefetch_factor,
            }
        return torch.utils.data.DataLoader(
            _Batches(self.data, self._seed, self._rank),
            batch_size=None,
            sampler=self._keys,
            num_workers=s.num_workers,
            collate_fn=_unbatched,
            pin_memory=s.pin_memory,
            # its own generator: starting a pass must not draw from the global RNG, or a resumed
            # run (which starts a pass mid-epoch) would drift from an uninterrupted one
            generator=torch.Generator().manual_seed(0),
            **extra,  # type: ignore[arg-type]
        )

    def __call__(self, keys: Sequence[BatchKey]) -> Iterator[Loaded]:
        """The batches of ``keys``; a worker's error is raised here, as itself."""
        if not keys:
            return
        if self._loader is None:
            self._loader = self._make()
        self._keys.keys = list(keys)
        it = iter(self._loader)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:
                if "DataLoader worker" not in str(exc):
                    raise
                raise DataError(
                    f"a data-loading worker process died ({str(exc).splitlines()[0]}); the run"
                    " stops at the last checkpoint (fewer trainer.loader.num_workers, or 0, if"
                    " memory is short)"
                ) from None
            if isinstance(item, _Failure):
                raise DataError(item.message)
            self._note(item)
            yield item

    def batches(self, keys: Sequence[BatchKey]) -> Iterator[Batch]:
        """Just the batches (evaluation)."""
        for loaded in self(keys):
            yield loaded.batch

    def _note(self, loaded: Loaded) -> None:
        for note in loaded.skipped:
            if note not in self.skipped:
                if not self.skipped:
                    warnings.warn(
                        f"skipping unreadable sample(s) while training (on_bad_image=skip): {note}",
                        stacklevel=3,
                    )
                self.skipped[note] = None

    def close(self) -> None:
        """Stop the workers now (else they live as long as the loader)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None)  # persistent workers live in it
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


def merge_skips(summary: dict[str, object], found: Sequence[str]) -> dict[str, object]:
    """The data summary with samples skipped while reading added to those skipped at setup."""
    if not found:
        return summary
    out = dict(summary)
    listed = list(out.get("skipped_files") or [])  # type: ignore[call-overload]
    new = [n for n in found if n not in listed]
    count = int(out.get("skipped_images") or 0) + len(new)  # type: ignore[call-overload]
    out["skipped_images"] = out["skipped"] = count
    out["skipped_files"] = (listed + new)[:MAX_NOTED_SKIPS]
    return out
