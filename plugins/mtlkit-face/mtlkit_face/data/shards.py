"""Face data from WebDataset shards (``mtlkit data shard`` of any face dataset), re-split here.

The shards hold every image with the names of its person, recording and expression
(``dataset.json`` ``labels``, indexed by ``index.pt``), so this dataset rebuilds the face records
and runs the same protocol code as the folder and manifest datasets: any fold of
``subject-kfold`` or ``sequence-holdout`` can be trained from one set of shards, and the
checks that keep people and recordings on one side hold exactly as they do in memory.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mtlkit.data import InputReader
from mtlkit.errors import DataError
from mtlkit.shards import BadSample, ShardReader, read_description, reader_for
from mtlkit_face.data.base import FaceDataModule, FaceDataOptions
from mtlkit_face.data.images import BadImage, to_array
from mtlkit_face.data.records import FaceRecord
from mtlkit_face.data.transforms import ImageLayout

LABELS = ("subject", "sequence", "expression")


@dataclass(frozen=True)
class FaceSampleDecoder:
    """A shard's image bytes decoded like an image file (mode conversion, resize)."""

    layout: ImageLayout

    def __call__(self, sample: Mapping[str, Any], name: str) -> np.ndarray:
        from PIL import Image

        data = next((sample[k] for k in ("png", "jpg", "jpeg", "webp") if k in sample), None)
        if data is None:
            raise BadSample("holds no image (.png, .jpg or .webp)")
        size = (self.layout.height, self.layout.width)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return to_array(im, self.layout.chans, size, name)
        except BadImage as bad:
            raise BadSample(bad.reason) from None
        except Exception as exc:  # PIL on damaged bytes
            raise BadSample(f"is not a readable image ({type(exc).__name__}: {exc})") from None


class FaceShardsOptions(FaceDataOptions):
    resume_harmless: ClassVar[frozenset[str]] = FaceDataOptions.resume_harmless | {"root"}
    """A moved shard folder holds the same images (the checkpoint's split check still runs)."""

    root: str
    """The folder 'mtlkit data shard' wrote from a face dataset."""


class FaceShardsData(FaceDataModule):
    """Face images streamed from shards (``storage: memory`` decodes them all at setup)."""

    Options = FaceShardsOptions
    options: FaceShardsOptions
    dataset_name = "webdataset"

    def load_records(self) -> tuple[list[FaceRecord], list[str]]:
        root = Path(self.options.root).expanduser()
        self._description, self._index = description, index = read_description(root)
        labels = description.get("labels") or {}
        missing = [k for k in LABELS if k not in labels or k not in index["meta"]]
        if missing:
            raise DataError(
                f"webdataset: {root} was not written from a face dataset (no {missing} labels);"
                " train on it with data.name=shards"
            )
        # the source's record order (``meta["index"]``), not the shuffled shard order: the same
        # records in the same order split exactly as the source did
        source = index["meta"].get("index")
        self._order = (
            torch.argsort(source, stable=True) if source is not None
            else torch.arange(len(index["shard"]))
        )
        rows = self._order.numpy()
        names = [np.asarray(labels[k], dtype=object) for k in LABELS]
        columns = [names[j][index["meta"][k].numpy()[rows]] for j, k in enumerate(LABELS)]
        self._root = root
        return [FaceRecord(s, q, e) for s, q, e in zip(*columns)], []

    def native_size(self, records: Sequence[FaceRecord]) -> tuple[int, int]:
        shape = self._description["stored"]["shape"]
        return int(shape[-2]), int(shape[-1])

    def streams(self, records: Sequence[FaceRecord], layout: ImageLayout) -> bool:
        o = self.options
        decoded = len(records) * layout.chans * layout.height * layout.width
        return o.storage == "stream" or (
            o.storage == "auto" and decoded > o.memory_limit_mb * 2**20
        )

    def make_reader(self, records: Sequence[FaceRecord], layout: ImageLayout) -> InputReader:
        return self._reader(layout)

    def _reader(self, layout: ImageLayout) -> ShardReader:
        return reader_for(
            self._root, self._description, self._index, FaceSampleDecoder(layout),
            self.options.on_bad_image, [0, layout.chans, layout.height, layout.width],
        ).subset(self._order)

    def load_images(
        self, records: Sequence[FaceRecord], layout: ImageLayout
    ) -> tuple[torch.Tensor, list[int], list[str]]:
        x, kept, skipped = self._reader(layout).read(list(range(len(records))))
        if not kept:
            raise DataError(f"webdataset: no readable images ({len(skipped)} skipped)")
        return x, kept, skipped

    def extra_summary(self) -> dict[str, Any]:
        return {"root": str(self._root), "shards": len(self._description["shards"])}

    def group_source(self) -> str:
        """The source the shards were written from (its people), else the shard folder."""
        return str(self._description.get("group_source") or f"{self.dataset_name}:{self._root}")
