"""Face records and their global indices: what every split protocol and dataset works from."""

from __future__ import annotations

import difflib
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mtlkit.errors import DataError

ATTRIBUTE_PREFIX = "attr_"
"""Target ``attr_<name>`` is binary attribute ``name`` (0/1, MISSING_LABEL when unknown); a
manifest's ``attr_<name>`` column holds it (:attr:`FaceRecord.attributes`)."""

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting "S2" before "S10", so numeric ids sort as numbers (CK+ ids are padded)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _DIGITS.split(name) if p)


@dataclass(frozen=True)
class FaceRecord:
    """One image: who (subject), which recording (sequence), which expression, its source, and
    optionally binary attribute labels.

    ``sequence`` is a globally unique id (datasets prefix it with the subject when needed) so the
    frames of one recording can be kept on one side of every split. ``origin`` names the record in
    error messages (a file path, or a manifest line); ``path`` is None for generated images.
    """

    subject: str
    sequence: str
    expression: str
    path: str | None = None
    frame: int | None = None
    origin: str = ""
    attributes: tuple[int, ...] = ()
    """Binary attribute labels (0, 1 or MISSING_LABEL), in the order of the dataset's
    ``attribute_names``; empty when the dataset has none."""


@dataclass(frozen=True)
class RecordTable:
    """Records plus int64 indices into the sorted subject/sequence lists and the class list."""

    records: list[FaceRecord]
    subjects: list[str]
    sequences: list[str]
    expressions: list[str]
    subject_idx: np.ndarray
    sequence_idx: np.ndarray
    expression_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.records)

    def sequence_subject(self) -> np.ndarray:
        """Subject index of each sequence (a sequence belongs to exactly one subject)."""
        out = np.full(len(self.sequences), -1, dtype=np.int64)
        out[self.sequence_idx] = self.subject_idx
        return out


def index_records(
    records: Sequence[FaceRecord], expressions: Sequence[str] | None = None
) -> RecordTable:
    """Index ``records``; ``expressions`` fixes the class list and order (else sorted names).

    A listed class without any image is an error: its head output could never be trained.
    """
    if not records:
        raise DataError("the dataset has no images")
    present = {r.expression for r in records}
    if expressions is None:
        classes = sorted(present, key=natural_key)
    else:
        classes = list(expressions)
        unknown = sorted(present - set(classes))
        if unknown:
            raise DataError(f"expressions {unknown} are not in the class list {classes}")
        empty = [c for c in classes if c not in present]
        if empty:
            raise DataError(f"expression class(es) {empty} have no images in the dataset")
    owner: dict[str, str] = {}
    for r in records:
        first = owner.setdefault(r.sequence, r.subject)
        if first != r.subject:
            raise DataError(
                f"{r.origin or r.path}: sequence {r.sequence!r} belongs to subjects "
                f"{first!r} and {r.subject!r}"
            )
    subjects = sorted({r.subject for r in records}, key=natural_key)
    sequences = sorted(owner, key=natural_key)
    s_pos = {s: i for i, s in enumerate(subjects)}
    q_pos = {s: i for i, s in enumerate(sequences)}
    e_pos = {e: i for i, e in enumerate(classes)}
    return RecordTable(
        records=list(records),
        subjects=subjects,
        sequences=sequences,
        expressions=classes,
        subject_idx=np.array([s_pos[r.subject] for r in records], dtype=np.int64),
        sequence_idx=np.array([q_pos[r.sequence] for r in records], dtype=np.int64),
        expression_idx=np.array([e_pos[r.expression] for r in records], dtype=np.int64),
    )


RARE_SHARE = 0.05
"""A class with at most this share of the largest class's images (or at most
:data:`RARE_IMAGES`) is rare enough that a name close to another class's is likely a typo."""
RARE_IMAGES = 2
CLOSE = 0.75
"""``difflib`` similarity above which two class names look like one name mistyped."""


def warn_label_typos(records: Sequence[FaceRecord], expressions: Sequence[str] | None) -> None:
    """Warn on an expression seen in very few images whose name is close to another class's.

    Without a class list (``expressions``), every label found is a class, so a typo on one row
    (``hapy`` for ``happy``) trains a class of its own without a word. Given the list, any other
    label is already an error, so there is nothing to guess.
    """
    if expressions is not None:
        return
    counts = Counter(r.expression for r in records)
    if len(counts) < 2:
        return
    largest = max(counts.values())
    for label, n in sorted(counts.items()):
        if n > max(RARE_IMAGES, RARE_SHARE * largest):
            continue
        others = [c for c in counts if c != label and counts[c] > n]
        close = difflib.get_close_matches(label, others, n=1, cutoff=CLOSE)
        if not close:
            continue
        where = [r.origin or r.path or "" for r in records if r.expression == label][:3]
        shown = "; ".join(w for w in where if w)
        warnings.warn(
            f"expression {label!r} has {n} image(s) and is close to {close[0]!r}"
            f" ({counts[close[0]]} images): a typo? It trains as a class of its own"
            f"{f' ({shown})' if shown else ''}. Fix the label, or list the classes in the"
            " dataset's 'expressions' option to make any other label an error",
            stacklevel=3,
        )
