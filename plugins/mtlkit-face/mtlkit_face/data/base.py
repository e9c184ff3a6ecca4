"""The shared pipeline of every face dataset: records -> images -> protocol split -> tensors."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from mtlkit.data import DataModule, DataSplits, InMemoryDataset, InputReader, StreamedDataset
from mtlkit.errors import DataError
from mtlkit.options import Options
from mtlkit.task import MISSING_LABEL
from mtlkit_face.data.images import BadImage, decode, image_size
from mtlkit_face.data.protocols import (
    SplitIndex,
    SplitProtocol,
    build_protocol,
    check_split,
    warn_single_subject,
    warn_unscored_classes,
)
from mtlkit_face.data.records import (
    ATTRIBUTE_PREFIX,
    FaceRecord,
    RecordTable,
    index_records,
    warn_label_typos,
)
from mtlkit_face.data.streaming import FileReader
from mtlkit_face.data.transforms import (
    Augmentation,
    AugmentOptions,
    ImageLayout,
    Normalize,
    augment_options,
    resolve_layout,
)
from mtlkit_face.inputs import SCANNED, FaceInputFiles, note_training_formats
from mtlkit_face.metrics.pair_protocols import PAIR_PROTOCOLS

SUPPORTED_TARGETS = ("face_identity", "expression")
MAX_LISTED_SKIPS = 20
NOTICE_SKIPS = 3


class FaceDataOptions(Options):
    """Options every face dataset shares: the split protocol, image layout and bad-file policy."""

    resume_harmless: ClassVar[frozenset[str]] = frozenset({"storage", "memory_limit_mb"})
    """Where the images live never changes a batch: a run may resume streamed or in memory."""

    protocol: Literal["subject-kfold", "sequence-holdout"] = "subject-kfold"
    num_folds: int = Field(10, ge=2)
    fold: int = Field(0, ge=0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the training subjects (subject-kfold) or sequences (sequence-holdout) kept for
    validation / model selection, so the test fold is never used to pick an epoch."""
    image_size: int | None = Field(None, ge=8)
    """Side of the square input; None: the backbone's input_size if it needs a fixed one (ViTs),
    else the data's native size (the first readable image's)."""
    on_bad_image: Literal["error", "skip"] = "error"
    storage: Literal["auto", "memory", "stream"] = "auto"
    """``memory``: decode every image once at setup and train from tensors (fast; bad files
    are found before the first step). ``stream``: read and decode each image when its batch is
    needed, in DataLoader worker processes (data larger than memory; a bad file is found when
    its batch is read). ``auto``: memory when the decoded images fit in ``memory_limit_mb``."""
    memory_limit_mb: int = Field(4096, ge=0)
    """Largest decoded data set (N x C x H x W bytes) that ``storage: auto`` holds in memory."""
    augment: bool | AugmentOptions = Field(True, validate_default=True)
    """Training augmentation: true (flip and a small shift), false, or a mapping of
    :class:`AugmentOptions` (rotation, zoom, jitter, RandAugment, random erasing). A run
    records ``true`` as the settings it stands for, so a later change of them shows on resume."""
    seed: int = 0
    """Seeds the sequence-holdout choice (and, for generated data, the generator)."""
    expressions: list[str] | None = None
    """Expression classes in label order; None: the names found in the data, sorted."""

    @field_validator("augment")
    @classmethod
    def _spelled_out(cls, v: bool | AugmentOptions) -> bool | AugmentOptions:
        return AugmentOptions() if v is True else v

    @field_validator("expressions")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v or any(not e.strip() for e in v):
                raise ValueError("expressions must be a non-empty list of non-empty names")
            if len(set(v)) != len(v):
                raise ValueError(f"expressions has duplicates: {v}")
        return v


def skip_note(record: FaceRecord, bad: BadImage) -> str:
    """How a bad file is named in errors and in the summary (with its manifest line if any)."""
    return f"{record.origin}: {bad}" if record.origin else str(bad)


def warn_skipped(dataset: str, skipped: list[str]) -> None:
    """Say at setup how many files ``on_bad_image=skip`` left out: a skip must never be silent."""
    if not skipped:
        return
    rest = len(skipped) - NOTICE_SKIPS
    more = f"; {rest} more (the run summary lists up to {MAX_LISTED_SKIPS})" if rest > 0 else ""
    warnings.warn(
        f"{dataset}: skipped {len(skipped)} unreadable image(s) (on_bad_image=skip): first few:"
        f" {'; '.join(skipped[:NOTICE_SKIPS])}{more}",
        stacklevel=3,
    )


class FaceDataModule(FaceInputFiles, DataModule):
    """Base of the face datasets: subclasses list records (and may generate images)."""

    Options = FaceDataOptions
    fold_option = "fold"
    options: FaceDataOptions
    dataset_name: ClassVar[str] = "faces"

    records: list[FaceRecord]
    """All records listed by the source; ``meta["index"]`` points into this list."""
    table: RecordTable
    """The records kept (readable files) with their indices; set by ``setup``."""
    split_index: SplitIndex
    protocol: SplitProtocol
    attribute_names: list[str]
    """Names of the binary attributes the records carry (set by ``load_records``; may be [])."""
    has_expressions: bool = True
    """False where the source has no expression labels (no ``expression`` target)."""

    @abstractmethod
    def load_records(self) -> tuple[list[FaceRecord], list[str]]:
        """The records, plus notes on entries skipped under ``on_bad_image="skip"``."""

    def extra_summary(self) -> dict[str, Any]:
        """Source-specific facts for the run summary (root folder, manifest path...)."""
        return {}

    def native_size(self, records: Sequence[FaceRecord]) -> tuple[int, int]:
        """(H, W) of the first readable image: all images are brought to one size."""
        for r in records:
            if r.path is None:
                continue
            try:
                return image_size(r.path)
            except BadImage:
                continue
        raise DataError(f"{self.dataset_name}: none of the {len(records)} images can be opened")

    def load_images(
        self, records: Sequence[FaceRecord], layout: ImageLayout
    ) -> tuple[torch.Tensor, list[int], list[str]]:
        """Decode every record once: uint8 ``[N, C, H, W]``, the kept positions, skip notes."""
        size = (layout.height, layout.width)
        arrays: list[np.ndarray] = []
        kept: list[int] = []
        skipped: list[str] = []
        for i, r in enumerate(records):
            if r.path is None:
                raise DataError(f"{self.dataset_name}: record {i} has no file path")
            try:
                arrays.append(decode(r.path, layout.chans, size))
            except BadImage as bad:
                if self.options.on_bad_image == "error":
                    raise DataError(skip_note(r, bad)) from None
                skipped.append(skip_note(r, bad))
                continue
            kept.append(i)
        if not arrays:
            raise DataError(f"{self.dataset_name}: no readable images ({len(skipped)} skipped)")
        return torch.from_numpy(np.stack(arrays)), kept, skipped

    def streams(self, records: Sequence[FaceRecord], layout: ImageLayout) -> bool:
        """Whether ``storage`` (``auto``: by the decoded size) reads the images on demand."""
        o = self.options
        if o.storage == "memory":
            return False
        files = all(r.path is not None for r in records)
        if o.storage == "stream" and not files:
            raise DataError(
                f"{self.dataset_name}: storage 'stream' reads image files, and these images are"
                " generated in memory (write them out with 'mtlkit data shard' and train on the"
                " shards)"
            )
        decoded = len(records) * layout.chans * layout.height * layout.width
        return files and (o.storage == "stream" or decoded > o.memory_limit_mb * 2**20)

    def make_reader(self, records: Sequence[FaceRecord], layout: ImageLayout) -> InputReader:
        """What reads the images of ``records`` on demand (their files, by default)."""
        return FileReader.of(records, layout, self.options.on_bad_image)

    def label_names(self) -> dict[str, list[str]]:
        """The names behind the ``subject``, ``sequence`` and ``expression`` indices of ``meta``
        (after ``setup``): what shards written from this dataset keep to be re-split."""
        t = self.table
        return {"subject": t.subjects, "sequence": t.sequences, "expression": t.expressions}

    def supported_targets(self) -> list[str]:
        """The target names this source provides (after ``load_records``)."""
        names = [t for t in SUPPORTED_TARGETS if t != "expression" or self.has_expressions]
        return names + [ATTRIBUTE_PREFIX + a for a in self.attribute_names]

    def setup(self, tasks: Sequence[str], data_config: Mapping[str, Any]) -> DataSplits:
        """Read the records, the images (or a reader), split them by the protocol, and build the
        targets of ``tasks``; each step is a method below, called in this order."""
        o = self.options
        self.attribute_names = []
        records, skipped = self.load_records()
        self._check_targets(tasks)
        if not records:
            raise DataError(f"{self.dataset_name}: no images found")
        self.records = records
        layout = resolve_layout(data_config, o.image_size, lambda: self.native_size(records))
        stream = self.streams(records, layout)
        inputs, kept, bad = self._read_images(records, layout, stream)
        skipped = skipped + bad
        warn_skipped(self.dataset_name, skipped)
        kept_records = [records[i] for i in kept]
        native = note_training_formats(
            self.dataset_name, kept_records, layout.chans, (layout.height, layout.width),
            limit=SCANNED if stream else None,
        )
        table, split = self._split_records(kept_records, tasks)
        targets, info, num_identities = self._targets(table, split, tasks)
        full = self._dataset(inputs, table, layout, targets, self._meta(table, kept))
        parts = {
            name: full.subset(torch.from_numpy(idx)) if len(idx) else None
            for name, idx in (("train", split.train), ("val", split.val), ("test", split.test))
        }
        train = parts["train"]
        assert train is not None  # check_split refuses an empty training split
        return DataSplits(
            train=train,
            val=parts["val"],
            test=parts["test"],
            info={
                **info,
                # the training images' own format: predict prepares such files as training did
                **({"input_format": native} if native else {}),
            },
            summary={
                **self._summary(table, split, layout, num_identities, skipped),
                "storage": "stream" if stream else "memory",
            },
            # the unit the protocol keeps on one side: people, or recordings under
            # sequence-holdout (where the same people are on both sides by design)
            group_key="sequence" if o.protocol == "sequence-holdout" else "subject",
            group_names=table.sequences if o.protocol == "sequence-holdout" else table.subjects,
            group_source=self.group_source(),
        )

    def _check_targets(self, tasks: Sequence[str]) -> None:
        """Refuse a task this source has no target for (after ``load_records``)."""
        supported = self.supported_targets()
        unknown = [t for t in tasks if t not in supported]
        if unknown:
            attrs = f" ({len(self.attribute_names)} attributes)" if self.attribute_names else ""
            shown = supported if len(supported) <= 8 else [*supported[:8], "..."]
            raise DataError(
                f"{self.dataset_name} provides no target(s) {unknown}; supported{attrs}: "
                f"{', '.join(shown)}"
            )

    def _read_images(
        self, records: list[FaceRecord], layout: ImageLayout, stream: bool
    ) -> tuple[torch.Tensor | None, list[int], list[str]]:
        """The decoded images (None when streamed), the rows kept and the skipped files."""
        if stream:  # bad files are found (and skipped or refused) as their batches are read
            return None, list(range(len(records))), []
        return self.load_images(records, layout)

    def _split_records(
        self, kept_records: list[FaceRecord], tasks: Sequence[str]
    ) -> tuple[RecordTable, SplitIndex]:
        """Index the records, split them by the protocol, check the split and warn about it."""
        o = self.options
        self.table = table = index_records(kept_records, o.expressions)
        self.protocol = protocol = build_protocol(o)
        self.split_index = split = protocol.split(table)
        check_split(table, split, protocol, need_expressions="expression" in tasks)
        if "expression" in tasks:
            warn_label_typos(kept_records, o.expressions)
            warn_unscored_classes(table, split, protocol)
        if "face_identity" in tasks:
            warn_single_subject(table, split, protocol)
        return table, split

    def _targets(
        self, table: RecordTable, split: SplitIndex, tasks: Sequence[str]
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]], int]:
        """The target and head facts of each of ``tasks`` (in order, once each), and the number
        of identities (the training split's subjects)."""
        train_subjects = np.unique(table.subject_idx[split.train])
        ident_of = np.full(len(table.subjects), MISSING_LABEL, dtype=np.int64)
        ident_of[train_subjects] = np.arange(len(train_subjects))
        targets = {
            "face_identity": torch.from_numpy(ident_of[table.subject_idx]),
            "expression": torch.from_numpy(table.expression_idx.copy()),
        }
        info: dict[str, dict[str, Any]] = {
            "face_identity": {
                "num_classes": len(train_subjects),
                "class_names": [table.subjects[i] for i in train_subjects],
                # every record names its sequence (meta["sequence"]): both pair protocols apply
                "pair_protocols": list(PAIR_PROTOCOLS),
            },
            "expression": {
                "num_classes": len(table.expressions),
                "class_names": list(table.expressions),
            },
        }
        attrs = [t for t in dict.fromkeys(tasks) if t.startswith(ATTRIBUTE_PREFIX)]
        if attrs:
            self._attribute_targets(table, split, attrs, targets, info)
        chosen = list(dict.fromkeys(tasks))
        return (
            {t: targets[t] for t in chosen},
            {t: info[t] for t in chosen},
            len(train_subjects),
        )

    def _attribute_targets(
        self,
        table: RecordTable,
        split: SplitIndex,
        attrs: list[str],
        targets: dict[str, torch.Tensor],
        info: dict[str, dict[str, Any]],
    ) -> None:
        """Add the binary attribute targets ``attrs`` (``attr_<name>``) to ``targets`` and
        ``info``; the positive rate is the training split's."""
        labels = np.array([r.attributes for r in table.records], dtype=np.int64)
        labels = labels.reshape(len(table), len(self.attribute_names))
        for t in attrs:
            name = t[len(ATTRIBUTE_PREFIX) :]
            y = labels[:, self.attribute_names.index(name)]
            targets[t] = torch.from_numpy(y.copy())
            seen = y[split.train][y[split.train] != MISSING_LABEL]
            info[t] = {
                "num_classes": 2,
                "attribute": name,
                "class_names": [f"not {name}", name],
                "positive_rate": float(seen.mean()) if len(seen) else None,
                "labelled": len(seen),
            }

    @staticmethod
    def _meta(table: RecordTable, kept: list[int]) -> dict[str, torch.Tensor]:
        """Per-sample metadata: subject, sequence and expression indices, and the record row."""
        return {
            "subject": torch.from_numpy(table.subject_idx.copy()),
            "sequence": torch.from_numpy(table.sequence_idx.copy()),
            "expression": torch.from_numpy(table.expression_idx.copy()),
            "index": torch.tensor(kept, dtype=torch.int64),
        }

    def _dataset(
        self,
        inputs: torch.Tensor | None,
        table: RecordTable,
        layout: ImageLayout,
        targets: dict[str, torch.Tensor],
        meta: dict[str, torch.Tensor],
    ) -> InMemoryDataset | StreamedDataset:
        """All kept samples: the decoded ``inputs`` in memory, or a reader when streamed."""
        if inputs is None:
            return StreamedDataset(
                reader=self.make_reader(table.records, layout),
                targets=targets,
                meta=meta,
                prepare=Normalize(layout),
                augment=self._augmentation(layout),
            )
        return InMemoryDataset(
            inputs=inputs,
            targets=targets,
            meta=meta,
            prepare=Normalize(layout),
            augment=self._augmentation(layout),
        )

    def group_source(self) -> str:
        """Where this source's subject names are unique: checkpoints compare people by name
        within it, so another data set's "S01" is not this one's. The dataset's name by
        default (a fixed data set like CK+); sources a user assembles add their folder."""
        return self.dataset_name

    def _augmentation(self, layout: ImageLayout) -> Augmentation | None:
        options = augment_options(self.options.augment)
        return None if options is None else Augmentation(layout, options)

    def _summary(
        self,
        table: RecordTable,
        split: SplitIndex,
        layout: ImageLayout,
        num_identities: int,
        skipped: list[str],
    ) -> dict[str, Any]:
        o = self.options

        def counts(rows: np.ndarray) -> dict[str, int]:
            return {
                "images": len(rows),
                "subjects": len(np.unique(table.subject_idx[rows])),
                "sequences": len(np.unique(table.sequence_idx[rows])),
            }

        return {
            "dataset": self.dataset_name,
            **self.extra_summary(),
            "protocol": o.protocol,
            "fold": o.fold,
            "num_folds": o.num_folds,
            "val_fraction": o.val_fraction,
            "seed": o.seed,
            "input": [layout.chans, layout.height, layout.width],
            "expressions": list(table.expressions) if self.has_expressions else [],
            "num_identities": num_identities,
            "total": counts(np.arange(len(table), dtype=np.int64)),
            "splits": {
                "train": counts(split.train),
                "val": counts(split.val),
                "test": counts(split.test),
            },
            "skipped_images": len(skipped),
            "skipped": len(skipped),
            "skipped_files": skipped[:MAX_LISTED_SKIPS],
        }
