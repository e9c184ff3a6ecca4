"""Datasets: in-memory tensors batched by index, so loading never bottlenecks a CPU step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

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


@dataclass
class TensorDataset:
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

    def __post_init__(self) -> None:
        n = self.inputs.shape[0]
        for kind, tensors in (("target", self.targets), ("meta", self.meta)):
            for key, value in tensors.items():
                if value.shape[0] != n:
                    raise DataError(
                        f"{kind} {key!r} has {value.shape[0]} rows but the inputs have {n}"
                    )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batch(
        self, index: Tensor, *, train: bool = False, generator: torch.Generator | None = None
    ) -> Batch:
        """Gather rows ``index``; augmentation only when ``train`` and a generator is given."""
        x = self.inputs[index]
        if train and self.augment is not None and generator is not None:
            x = self.augment(x, generator)
        if self.prepare is not None:
            x = self.prepare(x)
        elif not x.is_floating_point():
            x = x.float()
        return Batch(
            input=x,
            targets={k: v[index] for k, v in self.targets.items()},
            meta={k: v[index] for k, v in self.meta.items()},
        )

    def subset(self, index: Tensor) -> TensorDataset:
        """A new dataset holding rows ``index`` (shares ``prepare`` and ``augment``)."""
        return TensorDataset(
            inputs=self.inputs[index],
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
    and evaluating or resuming on a test split that shares any of them is refused.
    """

    train: TensorDataset
    val: TensorDataset | None = None
    test: TensorDataset | None = None
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    group_key: str | None = None

    def named(self) -> dict[str, TensorDataset]:
        """The splits that exist, by name."""
        out = {"train": self.train}
        if self.val is not None:
            out["val"] = self.val
        if self.test is not None:
            out["test"] = self.test
        return out


class DataModule(ABC):
    """A dataset plugin: builds the splits for the requested tasks."""

    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None) -> None:
        self.options = options if options is not None else type(self).Options()

    @abstractmethod
    def setup(self, tasks: Sequence[str], data_config: Mapping[str, Any]) -> DataSplits:
        """Load or generate data with a target for each task name in ``tasks``.

        ``data_config`` is the backbone's preprocessing hints (``in_chans``, ``input_size``...).
        """


def epoch_order(
    num_samples: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> Tensor:
    """This rank's training order for one epoch, a pure function of (seed, epoch, rank).

    It is torch's ``DistributedSampler`` (shuffled, seeded, ``set_epoch``); with W ranks of batch
    B, step k covers the same 2B... W*B samples as one process with batch W*B.
    """
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
