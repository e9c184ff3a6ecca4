"""Input layout from the backbone's hints, and the batch-level normalise/augment callables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlkit.errors import DataError


@dataclass(frozen=True)
class ImageLayout:
    """What the backbone eats: channels, size, per-channel mean/std; ``flat`` for MLP trunks."""

    chans: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flat: bool = False


def _per_channel(values: Any, chans: int, what: str) -> tuple[float, ...]:
    """Fit a timm-style mean/std to ``chans``: broadcast one value, average RGB for grayscale."""
    vals = tuple(float(v) for v in (values if isinstance(values, Sequence) else [values]))
    if len(vals) == chans:
        out = vals
    elif len(vals) == 1:
        out = vals * chans
    elif chans == 1 and len(vals) == 3:
        out = (sum(vals) / 3.0,)
    else:
        raise DataError(f"data_config {what} has {len(vals)} values for {chans} input channel(s)")
    if what == "std" and any(v <= 0 for v in out):
        raise DataError(f"data_config std must be positive, got {vals}")
    return out


def resolve_layout(
    data_config: Mapping[str, Any],
    image_size: int | None,
    native: Callable[[], tuple[int, int]],
) -> ImageLayout:
    """Channels from ``in_chans`` or ``input_size[0]`` (default 3); size from the ``image_size``
    option, else the backbone's ``input_size`` when the backbone needs it (``fixed_input_size``,
    True when absent), else the data's native size (CK+48 stays 48 px for a CNN).

    A one-dimensional ``input_size`` (a flat-vector trunk) gets images flattened, provided
    C*H*W matches it.
    """
    size = data_config.get("input_size")
    size = tuple(int(v) for v in size) if size else ()
    if len(size) not in (0, 1, 3):
        raise DataError(f"data_config input_size {size} is neither (C, H, W) nor (features,)")
    chans = int(data_config.get("in_chans") or (size[0] if len(size) == 3 else 3))
    if chans not in (1, 3):
        raise DataError(f"face images can feed 1 or 3 input channels, the backbone wants {chans}")
    if image_size is not None:
        hw = (image_size, image_size)
    elif len(size) == 3 and data_config.get("fixed_input_size", True):
        hw = (size[1], size[2])
    else:
        hw = native()
    if len(size) == 1 and chans * hw[0] * hw[1] != size[0]:
        raise DataError(
            f"the backbone takes {size[0]} features but {chans}x{hw[0]}x{hw[1]} images give"
            f" {chans * hw[0] * hw[1]}; set image_size or the backbone's input size to match"
        )
    return ImageLayout(
        chans=chans,
        height=hw[0],
        width=hw[1],
        mean=_per_channel(data_config.get("mean", 0.5), chans, "mean"),
        std=_per_channel(data_config.get("std", 0.5), chans, "std"),
        flat=len(size) == 1,
    )


@dataclass(frozen=True)
class Normalize:
    """uint8 ``[B, C, H, W]`` -> float in [0, 1] -> (x - mean) / std (flattened for flat trunks)."""

    layout: ImageLayout

    def __call__(self, x: Tensor) -> Tensor:
        c = self.layout.chans
        mean = torch.tensor(self.layout.mean, dtype=torch.float32).view(1, c, 1, 1)
        std = torch.tensor(self.layout.std, dtype=torch.float32).view(1, c, 1, 1)
        out = (x.float() / 255.0 - mean) / std
        return out.flatten(1) if self.layout.flat else out


@dataclass(frozen=True)
class FlipShift:
    """Random horizontal flip and a random shift of up to ``max_shift`` pixels (edge padding).

    Vectorised over the batch; all randomness comes from the per-batch generator, so a resumed
    run draws the same augmentation.
    """

    layout: ImageLayout
    max_shift: int

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        lay = self.layout
        shape = x.shape
        if lay.flat:
            x = x.view(shape[0], lay.chans, lay.height, lay.width)
        b, _, h, w = x.shape
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        s = self.max_shift
        if s > 0:
            dy = torch.randint(0, 2 * s + 1, (b,), generator=generator)
            dx = torch.randint(0, 2 * s + 1, (b,), generator=generator)
            padded = F.pad(x, (s, s, s, s), mode="replicate")
            rows = (torch.arange(h).view(1, h) + dy.view(b, 1)).view(b, h, 1)
            cols = (torch.arange(w).view(1, w) + dx.view(b, 1)).view(b, 1, w)
            x = padded[torch.arange(b).view(b, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
        x = x.contiguous()
        return x.reshape(shape) if lay.flat else x


def default_shift(layout: ImageLayout) -> int:
    """Up to 1/12 of the shorter side: 4 px at 48 px, 18 px at 224 px."""
    return max(1, round(min(layout.height, layout.width) / 12))
