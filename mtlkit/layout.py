"""A run's input layout: what a stored sample is and how the dataset turns it into model input.

Checkpoints store it (``input_layout``, JSON text) beside the heads' class names
(``data_info``), so ``mtlkit predict`` and ``mtlkit export`` can rebuild the model's input from a
checkpoint alone when the training data is no longer on disk. For uint8 images whose
``prepare`` maps each pixel value on its own per channel (the usual ``(x / 255 - mean) / std``),
the map is stored as a table of the 256 values per channel, read from the dataset's own
``prepare``: applying the table gives the very floats training gave, and the mean and std an
export documents are recovered from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from mtlkit.errors import CheckpointError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor

    from mtlkit.data import MultiTaskDataset

PrepareKind = Literal["table", "float", "opaque"]
"""``table``: a per-channel map of uint8 pixel values (stored); ``float``: no ``prepare``, the
sample is cast to float; ``opaque``: a ``prepare`` that cannot be stored (the data is needed)."""
AFFINE_ATOL = 1e-4
"""How close the table must be to ``(v / 255 - mean) / std`` to be called that affine map."""


@dataclass(frozen=True)
class InputLayout:
    """What a stored sample is (shape, dtype) and how it becomes the model's input."""

    sample_shape: tuple[int, ...]
    sample_dtype: str
    input_shape: tuple[int, ...]
    input_dtype: str
    prepare: PrepareKind
    table: tuple[tuple[float, ...], ...] = ()
    """For ``prepare == "table"``: ``table[c][v]`` is what pixel value ``v`` of channel ``c``
    becomes (the model input reshaped to ``input_shape`` afterwards)."""

    # --- measuring and storing ----------------------------------------------------------------
    @classmethod
    def measure(cls, data: MultiTaskDataset) -> InputLayout:
        """The layout of a split: its first stored sample and its ``prepare`` (probed)."""
        import torch

        like = data.inputs[0]
        prepare = getattr(data, "prepare", None)
        batch = like.unsqueeze(0)
        x = prepare(batch) if prepare is not None else batch.float()
        base = {
            "sample_shape": tuple(int(v) for v in like.shape),
            "sample_dtype": _dtype_name(like.dtype),
            "input_shape": tuple(int(v) for v in x.shape[1:]),
            "input_dtype": _dtype_name(x.dtype),
        }
        if prepare is None:
            return cls(**base, prepare="float")
        if like.dtype != torch.uint8 or like.ndim != 3:
            return cls(**base, prepare="opaque")
        table = _probe_table(prepare, tuple(int(v) for v in like.shape))
        if table is None:
            return cls(**base, prepare="opaque")
        return cls(**base, prepare="table", table=table)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> InputLayout:
        """The layout a checkpoint stores; a CheckpointError when the text is not one."""
        try:
            raw = json.loads(text)
            return cls(
                sample_shape=tuple(int(v) for v in raw["sample_shape"]),
                sample_dtype=str(raw["sample_dtype"]),
                input_shape=tuple(int(v) for v in raw["input_shape"]),
                input_dtype=str(raw["input_dtype"]),
                prepare=raw["prepare"],
                table=tuple(tuple(float(v) for v in row) for row in raw.get("table", ())),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"the checkpoint's input_layout is unreadable ({exc})") from None

    # --- using it ------------------------------------------------------------------------------
    @property
    def is_image(self) -> bool:
        """uint8 ``[C, H, W]`` samples with one or three channels."""
        return (
            self.sample_dtype == "uint8"
            and len(self.sample_shape) == 3
            and self.sample_shape[0] in (1, 3)
        )

    def describe(self) -> str:
        """``grayscale 32x32`` / ``RGB 112x112`` for images, else the sample's dtype and shape."""
        if self.is_image:
            c, h, w = self.sample_shape
            return f"{'grayscale' if c == 1 else 'RGB'} {w}x{h}"
        return f"{self.sample_dtype} {list(self.sample_shape)}"

    def like(self) -> Tensor:
        """A zero sample of the stored shape and dtype (what file readers are asked to match)."""
        import torch

        return torch.zeros(self.sample_shape, dtype=getattr(torch, self.sample_dtype))

    def prepare_fn(self) -> Callable[[Tensor], Tensor] | None:
        """What turns a batch of stored samples into model input; None: a cast to float (what
        the data does without ``prepare``). A DataError for a ``prepare`` that was not stored."""
        if self.prepare == "float":
            return None
        if self.prepare == "table":
            return TablePrepare(self.table, self.input_shape, self.input_dtype)
        raise DataError(
            "the dataset's preprocessing is not a per-channel map of pixel values, so the"
            " checkpoint cannot record it: the training data must be available"
        )

    def random_samples(self, count: int, seed: int = 0) -> Tensor:
        """``count`` seeded stored samples (random pixels, or normal floats): inputs to check an
        export on when no data is at hand."""
        import torch

        g = torch.Generator().manual_seed(seed)
        shape = (count, *self.sample_shape)
        dtype = getattr(torch, self.sample_dtype)
        if dtype == torch.uint8:
            return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        if dtype.is_floating_point:
            return torch.randn(shape, generator=g).to(dtype)
        return torch.randint(0, 2, shape, generator=g).to(dtype)

    def mean_std(self) -> tuple[list[float], list[float]] | None:
        """Per-channel (mean, std) when the table is ``(v / 255 - mean) / std`` (within
        :data:`AFFINE_ATOL`), else None."""
        if self.prepare != "table":
            return None
        mean: list[float] = []
        std: list[float] = []
        for row in self.table:
            span = row[255] - row[0]
            if span == 0 or not all(math.isfinite(v) for v in row):
                return None
            s = 1.0 / span
            m = -row[0] * s
            if any(abs((v / 255 - m) / s - row[v]) > AFFINE_ATOL for v in range(256)):
                return None
            mean.append(m)
            std.append(s)
        return mean, std


@dataclass(frozen=True)
class TablePrepare:
    """uint8 ``[B, C, H, W]`` -> ``table[c][pixel]``, reshaped to ``[B, *input_shape]``."""

    table: tuple[tuple[float, ...], ...]
    input_shape: tuple[int, ...]
    input_dtype: str

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        lut = torch.tensor(self.table, dtype=getattr(torch, self.input_dtype))
        channel = torch.arange(lut.shape[0]).view(1, -1, 1, 1)
        return lut[channel, x.long()].reshape(x.shape[0], *self.input_shape)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _probe_table(
    prepare: Callable[[Tensor], Tensor], shape: tuple[int, int, int]
) -> tuple[tuple[float, ...], ...] | None:
    """Every pixel value's image under ``prepare`` per channel, or None when ``prepare`` is not
    such a map (the value would depend on the position, the neighbours or the batch).

    Two probes hold every value 0..255 in every channel at different positions; the table read
    from them must reproduce ``prepare``'s output on both exactly.
    """
    import torch

    c, h, w = shape
    pixels = h * w
    per_probe = -(-256 // pixels)  # images needed to hold all 256 values
    pos = torch.arange(per_probe * pixels)
    chan = torch.arange(c).view(c, 1) * 37
    first = (pos + chan) % 256
    second = (pos * 7 + 11 + chan) % 256  # 7 is odd: another permutation of the values
    probe = torch.stack([first, second])  # [2, C, per_probe * pixels]
    images = probe.view(2, c, per_probe, h, w).permute(0, 2, 1, 3, 4).reshape(-1, c, h, w)
    try:
        out = prepare(images.to(torch.uint8))
    except Exception:  # a prepare that needs something else: simply not storable
        return None
    if out.numel() != images.numel() or not out.is_floating_point():
        return None
    values = out.detach().cpu().reshape(2, per_probe, c, pixels).permute(0, 2, 1, 3)
    values = values.reshape(2, c, -1)
    lut = torch.zeros(c, 256, dtype=values.dtype)
    for ch in range(c):
        lut[ch, first[ch]] = values[0, ch]
    rebuilt = torch.stack([lut[ch][probe[:, ch]] for ch in range(c)], dim=1)
    if not torch.equal(rebuilt, values) or not bool(torch.isfinite(lut).all()):
        return None
    return tuple(tuple(float(v) for v in row) for row in lut.tolist())
