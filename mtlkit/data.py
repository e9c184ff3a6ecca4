"""Data modules and their datasets: one map-style protocol for samples held in memory and samples
read from disk.

The names, once: a **data module** (:class:`DataModule`, a plugin) builds a run's data; its
``setup`` returns the :class:`DataSplits`, each split a dataset (:class:`MultiTaskDataset`). A run
config picks the data module with its ``data:`` key, by a name registered in the ``datasets``
registry (both names kept, so configs and their hashes do not change). ``MultiTaskDataset`` and
``InMemoryDataset`` are named so as not to shadow ``torch.utils.data.Dataset``/``TensorDataset``.

Both kinds are batched by index (:class:`MultiTaskDataset`): :class:`InMemoryDataset` gathers rows
of tensors (fast for small data), :class:`StreamedDataset` reads and decodes each sample on demand
through an :class:`InputReader` (files, shards), so the data may be larger than memory. The trainer
never asks which one it has; ``mtlkit.loading`` batches either, in worker processes when the dataset
reads files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypedDict, runtime_checkable

import torch
from torch import Tensor

from mtlkit.errors import DataError
from mtlkit.options import Options

Augment = Callable[[Tensor, torch.Generator], Tensor]


class Batch(TypedDict):
    """One batch: the input, a target per task (missing labels marked), and metadata tensors."""

    input: Tensor
    targets: dict[str, Tensor]
    meta: dict[str, Tensor]


@dataclass(frozen=True)
class Loaded:
    """A batch plus the samples left out of it (unreadable files under ``on_bad_image=skip``),
    each named by its file; what a worker process hands back."""

    batch: Batch
    skipped: tuple[str, ...] = ()

    def pin_memory(self) -> Loaded:
        """The batch in page-locked memory (the DataLoader's pinning thread calls this)."""
        b = self.batch
        return Loaded(
            Batch(
                input=b["input"].pin_memory(),
                targets={k: v.pin_memory() for k, v in b["targets"].items()},
                meta={k: v.pin_memory() for k, v in b["meta"].items()},
            ),
            self.skipped,
        )


class MultiTaskDataset(Protocol):
    """What the trainer and evaluation need of a split; targets and metadata stay in memory.

    ``load`` is the one way samples are read: rows ``index``, augmented when a ``generator`` is
    given (training), so a batch is a pure function of its indices and its generator, whoever
    computes it (the main process or a worker). ``streamed`` says reading costs file I/O and
    decoding (the loader then uses worker processes by default); ``chunks`` (one id per sample,
    or None) names samples stored together (a shard), which the epoch order keeps together.
    """

    targets: dict[str, Tensor]
    meta: dict[str, Tensor]

    def __len__(self) -> int: ...

    def load(self, index: Tensor, generator: torch.Generator | None = None) -> Loaded: ...

    def batch(
        self, index: Tensor, *, train: bool = False, generator: torch.Generator | None = None
    ) -> Batch: ...

    def subset(self, index: Tensor) -> MultiTaskDataset: ...

    @property
    def streamed(self) -> bool: ...

    @property
    def chunks(self) -> Tensor | None: ...


class InputReader(Protocol):
    """Stored samples read on demand, in the dtype an :class:`InMemoryDataset` would hold them.

    ``read`` returns the readable samples of ``index`` stacked, their positions in ``index``,
    and a note per unreadable one; under an ``error`` policy an unreadable sample raises a
    ``DataError`` naming it instead. ``reader[i]`` is one stored sample (``predict`` and
    ``export`` take the layout from it).
    """

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Tensor: ...

    def read(self, index: Sequence[int]) -> tuple[Tensor, list[int], list[str]]: ...

    def subset(self, index: Tensor) -> InputReader: ...

    @property
    def chunks(self) -> Tensor | None: ...


def _check_rows(n: int, targets: Mapping[str, Tensor], meta: Mapping[str, Tensor]) -> None:
    for kind, tensors in (("target", targets), ("meta", meta)):
        for key, value in tensors.items():
            if value.shape[0] != n:
                raise DataError(f"{kind} {key!r} has {value.shape[0]} rows but the inputs have {n}")


def _finish(
    x: Tensor,
    prepare: Callable[[Tensor], Tensor] | None,
    augment: Augment | None,
    generator: torch.Generator | None,
) -> Tensor:
    """Stored samples -> model input: augment (training only), then prepare."""
    if augment is not None and generator is not None and len(x):
        x = augment(x, generator)
    if prepare is not None:
        return prepare(x)
    return x if x.is_floating_point() else x.float()


@dataclass
class InMemoryDataset:
    """Samples held as tensors (images as uint8), batched by fancy indexing.

    ``prepare`` turns the stored dtype into model input (e.g. uint8 -> normalised float);
    ``augment`` runs on the stored training batch (before ``prepare``, so image transforms see
    uint8 pixels) with a per-batch generator, so a resumed run draws exactly the same
    augmentation as an uninterrupted one.
    """

    inputs: Tensor
    targets: dict[str, Tensor]
    meta: dict[str, Tensor] = field(default_factory=dict)
    prepare: Callable[[Tensor], Tensor] | None = None
    augment: Augment | None = None

    streamed: ClassVar[bool] = False
    chunks: ClassVar[None] = None

    def __post_init__(self) -> None:
        _check_rows(self.inputs.shape[0], self.targets, self.meta)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batch(
        self, index: Tensor, *, train: bool = False, generator: torch.Generator | None = None
    ) -> Batch:
        """Gather rows ``index``; augmentation only when ``train`` and a generator is given."""
        x = _finish(self.inputs[index], self.prepare, self.augment, generator if train else None)
        return Batch(
            input=x,
            targets={k: v[index] for k, v in self.targets.items()},
            meta={k: v[index] for k, v in self.meta.items()},
        )

    def load(self, index: Tensor, generator: torch.Generator | None = None) -> Loaded:
        """Rows ``index``, augmented when a ``generator`` is given (nothing is ever skipped)."""
        return Loaded(self.batch(index, train=generator is not None, generator=generator))

    def subset(self, index: Tensor) -> InMemoryDataset:
        """A new dataset holding rows ``index`` (shares ``prepare`` and ``augment``)."""
        return InMemoryDataset(
            inputs=self.inputs[index],
            targets={k: v[index] for k, v in self.targets.items()},
            meta={k: v[index] for k, v in self.meta.items()},
            prepare=self.prepare,
            augment=self.augment,
        )


def __getattr__(name: str) -> Any:
    if name == "TensorDataset":
        import warnings

        warnings.warn(
            "mtlkit.data.TensorDataset is deprecated: it is InMemoryDataset (the old name"
            " shadowed torch.utils.data.TensorDataset)",
            DeprecationWarning,
            stacklevel=2,
        )
        return InMemoryDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class StreamedDataset:
    """Samples read on demand by ``reader`` (decoded in the loader's worker processes); the
    targets and metadata, one row per sample, stay in memory (a few numbers each).

    A batch is the same as an :class:`InMemoryDataset` holding the decoded samples would give, so
    training from memory or from disk is one computation; a sample the reader cannot read is an
    error naming it, or (the reader's skip policy) left out of its batch and named in
    :attr:`Loaded.skipped`.
    """

    reader: InputReader
    targets: dict[str, Tensor]
    meta: dict[str, Tensor] = field(default_factory=dict)
    prepare: Callable[[Tensor], Tensor] | None = None
    augment: Augment | None = None
    streamed: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_rows(len(self.reader), self.targets, self.meta)

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def inputs(self) -> InputReader:
        """The reader, indexable like a tensor of stored samples (``inputs[0]``)."""
        return self.reader

    @property
    def chunks(self) -> Tensor | None:
        return self.reader.chunks

    def load(self, index: Tensor, generator: torch.Generator | None = None) -> Loaded:
        x, kept, skipped = self.reader.read(index.tolist())
        rows = index[torch.tensor(kept, dtype=torch.long)] if len(kept) != len(index) else index
        batch = Batch(
            input=_finish(x, self.prepare, self.augment, generator),
            targets={k: v[rows] for k, v in self.targets.items()},
            meta={k: v[rows] for k, v in self.meta.items()},
        )
        return Loaded(batch, tuple(skipped))

    def batch(
        self, index: Tensor, *, train: bool = False, generator: torch.Generator | None = None
    ) -> Batch:
        """Rows ``index`` (unreadable ones left out under a skip policy)."""
        return self.load(index, generator if train else None).batch

    def subset(self, index: Tensor) -> StreamedDataset:
        """A new dataset of rows ``index`` (shares ``prepare`` and ``augment``)."""
        return StreamedDataset(
            reader=self.reader.subset(index),
            targets={k: v[index] for k, v in self.targets.items()},
            meta={k: v[index] for k, v in self.meta.items()},
            prepare=self.prepare,
            augment=self.augment,
        )


@dataclass
class DataSplits:
    """Train, validation and test sets plus what each task needs to size its head.

    ``info`` maps task name to facts such as ``{"num_classes": 7, "class_names": [...]}``.
    ``summary`` is copied into the run's results (counts, skipped files, protocol).
    ``group_key`` names the ``meta`` entry whose values must never be on both sides of a split
    (a person under a subject-disjoint protocol): checkpoints record the training split's groups,
    and evaluating or resuming on a test split that shares any of them is refused. Groups are
    recorded and compared by name (``group_names``) within their ``group_source``, because an
    index depends on which groups the data happens to list.
    """

    train: MultiTaskDataset
    val: MultiTaskDataset | None = None
    test: MultiTaskDataset | None = None
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    group_key: str | None = None
    group_names: Sequence[str] | None = None
    """The name behind each ``meta[group_key]`` index (a person's id); None: the index is the
    name (only right while the data lists the same groups)."""
    group_source: str = ""
    """Where the names are unique (``ck48``, ``manifest:<folder>``): one name in two sources is
    two groups, so another data set sharing a name is not a leak."""

    def named(self) -> dict[str, MultiTaskDataset]:
        """The splits that exist, by name."""
        out = {"train": self.train}
        if self.val is not None:
            out["val"] = self.val
        if self.test is not None:
            out["test"] = self.test
        return out


class DataModule(ABC):
    """A data module: the plugin that builds the splits for the requested tasks.

    Registered in the ``datasets`` registry (``register_datasets``) and picked by a run config's
    ``data:`` key (``data: {name: synthetic}``); :meth:`setup` returns the :class:`DataSplits`.
    """

    Options: ClassVar[type[Options]] = Options
    fold_option: ClassVar[str | None] = None
    """The option that picks the cross-validation fold, if the data set has folds: where a
    report of runs not made by a sweep finds a run's fold (a sweep records it in ``cell.json``)."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options if options is not None else type(self).Options()

    @abstractmethod
    def setup(self, tasks: Sequence[str], data_config: Mapping[str, Any]) -> DataSplits:
        """Load or generate data with a target for each task name in ``tasks``.

        ``data_config`` is the backbone's preprocessing hints (``in_chans``, ``input_size``...).
        """


# --- what a dataset implements for ``mtlkit predict`` ---------------------------------------


@dataclass(frozen=True)
class InputFile:
    """One file to predict on: where it is, and how output rows and pairs files name it."""

    path: str
    name: str
    origin: str = ""
    """Where it was listed (a manifest line), for messages; empty for a file or folder input."""


@dataclass(frozen=True)
class Conversion:
    """One change a file needed to become the model's input (a mode conversion, a resize)."""

    kind: str
    """The same for alike files, so they are counted together: ``colour (RGB) to grayscale``,
    ``resized``."""
    detail: str = ""
    """This file's particulars: ``from 50x40``."""

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}".strip()


@dataclass(frozen=True)
class InputSample:
    """A file read for predict: the stored sample, and what was changed to make it fit."""

    sample: Tensor
    conversions: tuple[Conversion, ...] = ()
    """Empty when the file already had the model's mode and size."""

    def describe(self) -> str:
        return "; ".join(str(c) for c in self.conversions)


@runtime_checkable
class ReadsInputFiles(Protocol):
    """What a :class:`DataModule` implements so ``mtlkit predict`` can read new files the way it
    read its training data."""

    def list_input_files(self, source: str) -> list[InputFile]:
        """The files a command-line input names (a file, a folder, a list); a DataError when it
        names none."""
        ...

    def read_input_file(self, path: str, like: Tensor) -> InputSample | Tensor:
        """One file as a stored sample shaped and typed like ``like`` (before ``prepare``), with
        the conversions it needed (a bare Tensor: none); a DataError naming the file when it
        cannot be read."""
        ...


@runtime_checkable
class UsesDataInfo(Protocol):
    """Optional for a :class:`ReadsInputFiles` dataset: the run's data info (as setup gave it,
    or as the checkpoint stored it) before any file is read, e.g. the training images' own
    format, so a file like them is prepared as training did and not reported as converted."""

    def use_data_info(self, info: Mapping[str, Any]) -> None: ...


def epoch_order(
    num_samples: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    chunks: Tensor | None = None,
) -> Tensor:
    """This rank's training order for one epoch, a pure function of (seed, epoch, rank).

    It is torch's ``DistributedSampler`` (shuffled, seeded, ``set_epoch``); with W ranks of batch
    B, step k covers the same 2B... W*B samples as one process with batch W*B.

    With ``chunks`` (a chunk id per sample, e.g. its shard), chunks stay whole so each is read
    once, front to back: rank r owns the r-th of every W chunks (sorted by id; the same every
    epoch, so its share never moves), visits them in an order shuffled per epoch, and each
    chunk's samples in stored order (shuffle when writing the shards). Every rank takes as many
    samples as the smallest share, so all ranks run the same number of steps.
    """
    if chunks is not None:
        return _chunk_order(chunks, seed, epoch, rank, world_size)
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(num_samples),
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=world_size > 1,
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(iter(sampler)), dtype=torch.long)


def batch_generator(seed: int, epoch: int, batch_index: int, rank: int = 0) -> torch.Generator:
    """The augmentation generator of one batch, a pure function of its position."""
    base = ((seed * 1_000_003 + epoch) * 100_003 + batch_index + 1) * 1_009 + rank
    return torch.Generator().manual_seed(base)


def _chunk_order(chunks: Tensor, seed: int, epoch: int, rank: int, world_size: int) -> Tensor:
    ids, counts = torch.unique(chunks, return_counts=True)
    share = min(int(counts[r::world_size].sum()) for r in range(world_size))
    mine = ids[rank::world_size]
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    visit = mine[torch.randperm(len(mine), generator=gen)]
    position = torch.argsort(chunks, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    where = {int(c): (int(s), int(n)) for c, s, n in zip(ids, starts, counts)}
    parts = [position[where[int(c)][0] : sum(where[int(c)])] for c in visit]
    order = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    return order[:share]
