"""Named split protocols; each keeps every recording (and, where it must, every person) on one side.

- ``subject-kfold``: the paper's protocol (sklearn ``KFold(num_folds)`` over the sorted subjects,
  no shuffle); the test fold's people are never seen in training, so expression accuracy and face
  verification are measured on unseen people. Validation people are carved from the training ones.
- ``sequence-holdout``: closed-set identification; one whole sequence of each person with two or
  more is held out for test, so the test expression of that person is never seen in training.
  An image whose sequence is unknown (an empty manifest cell) is a sequence of its own.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mtlkit.errors import DataError
from mtlkit_face.data.records import RecordTable


@dataclass(frozen=True)
class SplitIndex:
    """Row indices (int64, ascending) of each split into a ``RecordTable``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _rows(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def _even_pick(n: int, k: int) -> np.ndarray:
    """``k`` positions spread evenly over ``range(n)`` (deterministic, no seed needed)."""
    return np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64) if k else np.zeros(0, np.int64)


def kfold_bounds(n: int, num_folds: int, fold: int) -> tuple[int, int]:
    """Start/stop of fold ``fold`` as in sklearn ``KFold(shuffle=False)``: first n % k get +1."""
    if num_folds < 2:
        raise DataError(f"num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise DataError(
            f"fold {fold} is out of range for num_folds={num_folds} (0..{num_folds - 1})"
        )
    if num_folds > n:
        raise DataError(
            f"num_folds={num_folds} exceeds the {n} subjects: some folds would be empty"
        )
    sizes = np.full(num_folds, n // num_folds, dtype=np.int64)
    sizes[: n % num_folds] += 1
    start = int(sizes[:fold].sum())
    return start, start + int(sizes[fold])


class SplitProtocol(ABC):
    """A named split rule (the ``protocol`` option); ``split`` is a pure function of the table and
    the protocol's fields. Not ``Protocol``, which would shadow ``typing.Protocol``."""

    name: ClassVar[str]
    holds_out_subjects: ClassVar[bool]
    """True when test subjects are unseen in training (their identity labels are then missing)."""

    @abstractmethod
    def split(self, table: RecordTable) -> SplitIndex:
        """Row indices of train, validation and test."""

    @classmethod
    @abstractmethod
    def from_options(cls, options: Any) -> SplitProtocol:
        """Build from a dataset's options (``num_folds``, ``fold``, ``val_fraction``, ``seed``)."""


@dataclass(frozen=True)
class SubjectKFold(SplitProtocol):
    """Contiguous k-fold over sorted subjects; validation = evenly spread training subjects."""

    num_folds: int = 10
    fold: int = 0
    val_fraction: float = 0.1

    name: ClassVar[str] = "subject-kfold"
    holds_out_subjects: ClassVar[bool] = True

    @classmethod
    def from_options(cls, options: Any) -> SubjectKFold:
        return cls(options.num_folds, options.fold, options.val_fraction)

    def subject_sets(self, num_subjects: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Subject indices of train, validation and test for this fold."""
        start, stop = kfold_bounds(num_subjects, self.num_folds, self.fold)
        everyone = np.arange(num_subjects, dtype=np.int64)
        test = everyone[start:stop]
        rest = np.concatenate([everyone[:start], everyone[stop:]])
        n_val = round(self.val_fraction * len(rest))
        if self.val_fraction > 0:
            n_val = max(1, n_val)
        n_val = min(n_val, len(rest) - 1)
        val = rest[_even_pick(len(rest), n_val)]
        train = np.setdiff1d(rest, val)
        return train, val, test

    def split(self, table: RecordTable) -> SplitIndex:
        train, val, test = self.subject_sets(len(table.subjects))
        s = table.subject_idx
        return SplitIndex(_rows(np.isin(s, train)), _rows(np.isin(s, val)), _rows(np.isin(s, test)))


@dataclass(frozen=True)
class SequenceHoldout(SplitProtocol):
    """Per subject with 2+ sequences, one sequence goes to test; every subject stays a training id.

    The held-out sequence of a subject with n sequences is the one at position ``(r + fold) % n``
    of its sorted sequences, r a seeded per-subject offset: successive folds hold out different
    sequences. Validation: a second sequence, at ``(r + fold + 1) % n``, from subjects with 3+
    sequences (so each keeps one for training), for as many subjects (chosen by the seed) as make
    about ``val_fraction`` of the training sequences. Subjects with one sequence stay in training.
    An image with no known sequence (an empty manifest cell) counts as a sequence of its own, so it
    can be held out alone while other frames of its recording stay in training.
    """

    val_fraction: float = 0.1
    seed: int = 0
    fold: int = 0
    num_folds: int = 10

    name: ClassVar[str] = "sequence-holdout"
    holds_out_subjects: ClassVar[bool] = False

    @classmethod
    def from_options(cls, options: Any) -> SequenceHoldout:
        return cls(options.val_fraction, options.seed, options.fold, options.num_folds)

    def sequence_sets(self, table: RecordTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sequence indices of train, validation and test."""
        if not 0 <= self.fold < self.num_folds:
            raise DataError(
                f"fold {self.fold} is out of range for num_folds={self.num_folds}"
                f" (0..{self.num_folds - 1})"
            )
        owner = table.sequence_subject()
        per_subject = [np.flatnonzero(owner == s) for s in range(len(table.subjects))]
        rng = np.random.default_rng(self.seed)
        offsets = rng.integers(0, 1 << 30, size=len(per_subject))
        test: list[int] = []
        candidates: list[tuple[int, int]] = []
        for s, seqs in enumerate(per_subject):
            n = len(seqs)
            if n >= 2:
                test.append(int(seqs[(offsets[s] + self.fold) % n]))
            if n >= 3:
                candidates.append((s, int(seqs[(offsets[s] + self.fold + 1) % n])))
        if not test:
            raise DataError(
                "sequence-holdout needs subjects with 2 or more sequences; every subject has one"
            )
        n_train = len(table.sequences) - len(test)
        n_val = min(len(candidates), round(self.val_fraction * n_train))
        if self.val_fraction > 0 and candidates:
            n_val = max(1, n_val)
        chosen = np.sort(rng.permutation(len(candidates))[:n_val])
        val = np.array([candidates[i][1] for i in chosen], dtype=np.int64)
        test_arr = np.array(sorted(test), dtype=np.int64)
        train = np.setdiff1d(np.arange(len(table.sequences)), np.concatenate([val, test_arr]))
        return train, val, test_arr

    def split(self, table: RecordTable) -> SplitIndex:
        train, val, test = self.sequence_sets(table)
        q = table.sequence_idx
        return SplitIndex(_rows(np.isin(q, train)), _rows(np.isin(q, val)), _rows(np.isin(q, test)))


PROTOCOLS: dict[str, type[SplitProtocol]] = {p.name: p for p in (SubjectKFold, SequenceHoldout)}


def build_protocol(options: Any) -> SplitProtocol:
    """The protocol named by ``options.protocol``, configured from the same options."""
    try:
        cls = PROTOCOLS[options.protocol]
    except KeyError:
        raise DataError(
            f"unknown protocol {options.protocol!r}; available: {', '.join(PROTOCOLS)}"
        ) from None
    return cls.from_options(options)


def check_split(
    table: RecordTable, split: SplitIndex, protocol: SplitProtocol, *, need_expressions: bool = True
) -> None:
    """Refuse a leaky split or one whose training part lacks an expression class.

    A sequence on two sides leaks near-duplicate frames; under a subject-disjoint protocol a person
    on two sides leaks identity; a class absent from training can never be predicted.
    """
    parts = {"train": split.train, "val": split.val, "test": split.test}
    if len(split.train) == 0:
        raise DataError(f"{protocol.name}: the training split is empty")
    if len(split.test) == 0:
        raise DataError(f"{protocol.name}: the test split is empty")
    keys = [("sequence", table.sequence_idx, table.sequences)]
    if protocol.holds_out_subjects:
        keys.append(("subject", table.subject_idx, table.subjects))
    names = list(parts)
    for what, idx, labels in keys:
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                both = np.intersect1d(idx[parts[a]], idx[parts[b]])
                if len(both):
                    shown = [labels[j] for j in both[:5]]
                    raise DataError(
                        f"{protocol.name}: {what}(s) {shown} fall in both {a} and {b} (a leak)"
                    )
    if need_expressions:
        seen = set(np.unique(table.expression_idx[split.train]).tolist())
        missing = [e for i, e in enumerate(table.expressions) if i not in seen]
        if missing:
            raise DataError(
                f"{protocol.name}: expression class(es) {missing} have no training images in this"
                " split (choose another fold or protocol)"
            )


def warn_single_subject(table: RecordTable, split: SplitIndex, protocol: SplitProtocol) -> None:
    """Warn when the test or validation split holds one person: verification needs two.

    Without a different-person pair such a split reports ``num_pairs_<protocol>=0`` and no
    verification metric; expression metrics still work, so this is a warning, not an error.
    """
    fold = getattr(protocol, "fold", 0)
    advice = {"test": "lower num_folds", "validation": "raise val_fraction"}
    for name, rows in (("test", split.test), ("validation", split.val)):
        if len(rows) and len(np.unique(table.subject_idx[rows])) == 1:
            hint = f" ({advice[name]})" if protocol.holds_out_subjects else ""
            warnings.warn(
                f"{protocol.name}: fold {fold} has one subject in its {name} split: verification"
                f" needs at least two, so it reports no verification pairs and no verification"
                f" metrics{hint}",
                stacklevel=2,
            )


def warn_unscored_classes(table: RecordTable, split: SplitIndex, protocol: SplitProtocol) -> None:
    """Warn on an expression class with no test or no validation images in this split.

    Such a class is trained but never scored (test) or never seen by model selection
    (validation); a class this small is often a mistyped label.
    """
    fold = getattr(protocol, "fold", 0)
    for name, rows in (("test", split.test), ("validation", split.val)):
        if not len(rows):
            continue
        seen = set(np.unique(table.expression_idx[rows]).tolist())
        absent = [e for i, e in enumerate(table.expressions) if i not in seen]
        if absent:
            warnings.warn(
                f"{protocol.name}: expression class(es) {absent} have no {name} images in fold"
                f" {fold}: they are trained but their {name} accuracy is not measured",
                stacklevel=3,
            )
