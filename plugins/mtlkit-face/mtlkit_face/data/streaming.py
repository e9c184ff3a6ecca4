"""Face images read from their files on demand: the reader behind a streamed face dataset.

Each sample is decoded by the same function as the in-memory path (``images.decode``: mode
conversion, resize), only later and in a ``DataLoader`` worker, so a streamed run trains on
exactly the pixels an in-memory run would. Paths are kept in one NumPy byte array (no Python
object per file), which forked workers share without copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mtlkit.errors import DataError
from mtlkit_face.data.images import BadImage, decode
from mtlkit_face.data.records import FaceRecord
from mtlkit_face.data.transforms import ImageLayout

Policy = Literal["error", "skip"]


def _bytes(values: Sequence[str]) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=np.bytes_)


class FileReader:
    """Image files decoded on demand to uint8 ``[C, H, W]`` at one layout.

    ``policy`` is the dataset's ``on_bad_image``: ``error`` raises a ``DataError`` naming the
    file (and its manifest line), ``skip`` leaves it out of its batch with the same note.
    """

    chunks: Tensor | None = None

    def __init__(
        self,
        paths: np.ndarray,
        origins: np.ndarray,
        layout: ImageLayout,
        policy: Policy,
    ) -> None:
        self.paths = paths
        self.origins = origins
        self.layout = layout
        self.policy = policy

    @classmethod
    def of(cls, records: Sequence[FaceRecord], layout: ImageLayout, policy: Policy) -> FileReader:
        """A reader for ``records`` (each must name a file)."""
        missing = [i for i, r in enumerate(records) if r.path is None]
        if missing:
            raise DataError(f"record {missing[0]} has no file path: it cannot be streamed")
        return cls(
            _bytes([str(r.path) for r in records]),
            _bytes([r.origin for r in records]),
            layout,
            policy,
        )

    def __len__(self) -> int:
        return len(self.paths)

    def _note(self, i: int, bad: BadImage) -> str:
        origin = self.origins[i].decode()
        return f"{origin}: {bad}" if origin else str(bad)

    def _decode(self, i: int) -> np.ndarray:
        size = (self.layout.height, self.layout.width)
        return decode(self.paths[i].decode(), self.layout.chans, size, cache=False)

    def __getitem__(self, i: int) -> Tensor:
        try:
            return torch.from_numpy(self._decode(int(i)).copy())
        except BadImage as bad:
            raise DataError(self._note(int(i), bad)) from None

    def read(self, index: Sequence[int]) -> tuple[Tensor, list[int], list[str]]:
        arrays: list[np.ndarray] = []
        kept: list[int] = []
        skipped: list[str] = []
        for pos, i in enumerate(index):
            try:
                arrays.append(self._decode(i))
            except BadImage as bad:
                if self.policy == "error":
                    raise DataError(self._note(i, bad)) from None
                skipped.append(self._note(i, bad))
                continue
            kept.append(pos)
        lay = self.layout
        if not arrays:
            return torch.zeros(0, lay.chans, lay.height, lay.width, dtype=torch.uint8), [], skipped
        return torch.from_numpy(np.stack(arrays)), kept, skipped

    def subset(self, index: Tensor) -> FileReader:
        rows = index.numpy()
        return FileReader(self.paths[rows], self.origins[rows], self.layout, self.policy)
