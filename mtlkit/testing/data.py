"""Conformance checks for a DataModule: consistent splits, targets, leak-free groups, pure
augmentation, reproducible setup.

``setup`` runs once per :func:`datamodule_checks` list (lazily, on the first check) and its
splits are shared by the checks; ``deterministic-setup`` builds a second module to compare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlkit.data import DataModule, DataSplits, MultiTaskDataset
from mtlkit.task import MISSING_LABEL
from mtlkit.testing._checks import Check, SkipCheck, run_checks

DataLike = DataModule | Callable[[], DataModule]
"""A DataModule, or a factory returning a fresh one (a factory may ``pytest.skip``)."""


class _DataCase:
    def __init__(self, data: DataLike, tasks: Sequence[str], data_config: Mapping[str, Any],
                 batch_size: int) -> None:
        self.data, self.tasks = data, list(tasks)
        self.data_config, self.batch_size = dict(data_config), batch_size
        self._splits: DataSplits | None = None

    def fresh(self) -> DataModule:
        if isinstance(self.data, DataModule):
            return type(self.data)(self.data.options)
        module = self.data()
        if not isinstance(module, DataModule):
            raise AssertionError(f"the factory returned {type(module).__name__}, not a DataModule")
        return module

    def splits(self) -> DataSplits:
        if self._splits is None:
            module = self.data if isinstance(self.data, DataModule) else self.fresh()
            splits = module.setup(list(self.tasks), dict(self.data_config))
            if not isinstance(splits, DataSplits):
                raise AssertionError(f"setup returned {type(splits).__name__}, not DataSplits")
            self._splits = splits
        return self._splits

    # --- the checks -----------------------------------------------------------------------------
    def split_lengths(self) -> None:
        """Every split is a non-empty dataset (in memory or streamed) whose targets and meta
        have one row per input."""
        for name, ds in self.splits().named().items():
            missing = [m for m in ("load", "batch", "subset", "targets", "meta") if
                       not hasattr(ds, m)]
            if missing:
                raise AssertionError(
                    f"split {name} is {type(ds).__name__}, not a mtlkit.data.MultiTaskDataset (no"
                    f" {missing})"
                )
            n = len(ds)
            if n == 0:
                raise AssertionError(f"split {name} is empty")
            for kind, tensors in (("target", ds.targets), ("meta", ds.meta)):
                for key, value in tensors.items():
                    if value.shape[0] != n:
                        raise AssertionError(
                            f"split {name}: {kind} {key!r} has {value.shape[0]} rows for {n}"
                            " inputs"
                        )
            batch = ds.batch(torch.arange(min(n, self.batch_size)))
            if batch["input"].shape[0] != min(n, self.batch_size):
                raise AssertionError(f"split {name}: batch() returned the wrong number of rows")

    def targets(self) -> None:
        """Each split holds a target for every requested task: class indices (>= 0, below the
        reported ``num_classes``, or ``MISSING_LABEL``) or floats (NaN = missing)."""
        splits = self.splits()
        for name, ds in splits.named().items():
            absent = [t for t in self.tasks if t not in ds.targets]
            if absent:
                raise AssertionError(
                    f"split {name} has no target for {absent} (it has {sorted(ds.targets)})"
                )
            for task in self.tasks:
                y = ds.targets[task]
                if y.is_floating_point():
                    continue
                k = splits.info.get(task, {}).get("num_classes")
                labelled = y[y != MISSING_LABEL]
                if bool((labelled < 0).any()):
                    raise AssertionError(f"split {name}, task {task}: negative labels other than"
                                         f" MISSING_LABEL ({MISSING_LABEL})")
                if k is not None and labelled.numel() and int(labelled.max()) >= int(k):
                    raise AssertionError(
                        f"split {name}, task {task}: label {int(labelled.max())} >= the reported"
                        f" num_classes {k}"
                    )
        for task in self.tasks:
            y = splits.train.targets[task]
            labelled = (
                ~torch.isnan(y).reshape(len(y), -1).any(dim=1)
                if y.is_floating_point()
                else y != MISSING_LABEL
            )
            if not bool(labelled.any()):
                raise AssertionError(f"the training split has no labelled sample for {task}")

    def groups(self) -> None:
        """With ``group_key`` set, no group is on both sides of train/test nor val/test."""
        splits = self.splits()
        key = splits.group_key
        if key is None:
            raise SkipCheck("declares no group_key (no group-disjoint protocol)")
        named = splits.named()
        for name, ds in named.items():
            if key not in ds.meta:
                raise AssertionError(
                    f"group_key {key!r} is not in split {name}'s meta ({sorted(ds.meta)})"
                )
        if "test" not in named:
            return
        test = set(named["test"].meta[key].tolist())
        for other in ("train", "val"):
            if other in named:
                shared = test & set(named[other].meta[key].tolist())
                if shared:
                    raise AssertionError(
                        f"{len(shared)} {key} group(s) are in both {other} and test, e.g."
                        f" {sorted(shared)[:5]}"
                    )

    def augment(self) -> None:
        """A training batch is a pure function of its generator: same generator, same batch,
        whatever the global random state; the stored inputs are never modified."""
        train = self.splits().train
        index = torch.arange(min(len(train), self.batch_size))
        stored = _stored(train)
        draws = []
        for global_seed in (1, 2):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(global_seed)
                draws.append(_batch(train, index, seed=5))
        if not torch.equal(draws[0], draws[1]):
            raise AssertionError(
                "two training batches drawn with the same generator differ: augmentation reads"
                " a random source other than the batch's generator"
            )
        if not torch.equal(_stored(train), stored):
            raise AssertionError("drawing a batch modified the dataset's stored inputs")
        plain = [train.batch(index)["input"] for _ in range(2)]
        if not torch.equal(plain[0], plain[1]):
            raise AssertionError("evaluation batches (train=False) are not deterministic")

    def deterministic_setup(self) -> None:
        """A second module with the same options builds the same splits (resume relies on it)."""
        first = self.splits()
        second = self.fresh().setup(list(self.tasks), dict(self.data_config))
        a, b = first.named(), second.named()
        if set(a) != set(b):
            raise AssertionError(f"the splits differ between setups: {sorted(a)} vs {sorted(b)}")
        for name in a:
            for what, x, y in _fields(a[name], b[name]):
                if not _same(x, y):
                    raise AssertionError(f"split {name}: {what} differs between two setups")


def _stored(ds: MultiTaskDataset) -> Tensor:
    """Every stored sample (a copy): the tensor in memory, or each sample read back."""
    inputs: Any = getattr(ds, "inputs", None)
    if isinstance(inputs, Tensor):
        return inputs.clone()
    return torch.stack([inputs[i] for i in range(len(ds))])


def _batch(ds: MultiTaskDataset, index: Tensor, seed: int) -> Tensor:
    return ds.batch(index, train=True, generator=torch.Generator().manual_seed(seed))["input"]


def _same(x: Tensor, y: Tensor) -> bool:
    """Bit-identical, NaN (a missing float label) equal to NaN."""
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if x.is_floating_point():
        return torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(), y.nan_to_num())
    return torch.equal(x, y)


def _fields(a: MultiTaskDataset, b: MultiTaskDataset) -> list[tuple[str, Tensor, Tensor]]:
    out = [("inputs", _stored(a), _stored(b))]
    for kind, x, y in (("target", a.targets, b.targets), ("meta", a.meta, b.meta)):
        if set(x) != set(y):
            raise AssertionError(f"{kind} keys differ between two setups")
        out += [(f"{kind} {k!r}", x[k], y[k]) for k in x]
    return out


def datamodule_checks(
    data: DataLike,
    tasks: Sequence[str],
    *,
    data_config: Mapping[str, Any] | None = None,
    name: str | None = None,
    batch_size: int = 8,
) -> list[Check]:
    """Every conformance check of one configured dataset for ``tasks``.

    ``data_config`` is what a backbone would pass (``in_chans``, ``input_size``...). Checks:
    ``splits``, ``targets``, ``groups`` (skipped without ``group_key``), ``augment``,
    ``deterministic-setup``.
    """
    case = _DataCase(data, tasks, data_config or {}, batch_size)
    label = name or (type(data).__name__ if isinstance(data, DataModule) else
                     getattr(data, "__name__", "data"))
    return [
        Check(f"{label}-splits", case.split_lengths),
        Check(f"{label}-targets", case.targets),
        Check(f"{label}-groups", case.groups),
        Check(f"{label}-augment", case.augment),
        Check(f"{label}-deterministic-setup", case.deterministic_setup),
    ]


def check_datamodule(data: DataLike, tasks: Sequence[str], **kwargs: Any) -> None:
    """Run :func:`datamodule_checks`; raise one AssertionError naming every failed check."""
    checks = datamodule_checks(data, tasks, **kwargs)
    run_checks(checks, f"dataset {checks[0].id.rsplit('-splits', 1)[0]}")


__all__ = ["check_datamodule", "datamodule_checks"]
