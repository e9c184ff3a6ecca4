"""Input layout from the backbone's hints, the batch normaliser and the seeded augmentation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor
from torchvision.transforms import v2

from mtlkit.errors import DataError
from mtlkit.options import Options


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


class AugmentOptions(Options):
    """Training augmentation, drawn per sample by torchvision.transforms.v2 on the stored uint8
    image. The defaults are the flip and small shift every face run had; the rest are opt-in."""

    flip: bool = True
    """Random horizontal flip (p = 0.5)."""
    shift: float = Field(1 / 12, ge=0.0, lt=0.5)
    """Largest random translation, as a fraction of the side (1/12: 4 px at 48 px)."""
    rotate: float = Field(0.0, ge=0.0, le=180.0)
    """Largest random rotation in degrees (both directions)."""
    scale: tuple[float, float] = (1.0, 1.0)
    """Random zoom range; (0.9, 1.1) zooms out or in by up to 10%."""
    jitter: float = Field(0.0, ge=0.0, le=1.0)
    """Brightness and contrast jitter strength (ColorJitter's factor range 1 +/- jitter)."""
    randaugment: int = Field(0, ge=0, le=10)
    """RandAugment operations per image (0: off); magnitude from ``randaugment_magnitude``."""
    randaugment_magnitude: int = Field(9, ge=0, le=30)
    erase: float = Field(0.0, ge=0.0, le=1.0)
    """Probability of random erasing (a box of 2-15% of the image set to 0), after the rest."""

    @field_validator("scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {v}")
        return v


def augment_options(value: bool | AugmentOptions) -> AugmentOptions | None:
    """``augment: true`` means the defaults, ``false`` no augmentation."""
    if isinstance(value, AugmentOptions):
        return value
    return AugmentOptions() if value else None


class Augmentation:
    """A torchvision v2 pipeline applied to each image of a stored (uint8) training batch.

    Each image gets its own seed drawn from the batch generator, and the pipeline runs under a
    forked global RNG, so the result is a pure function of (seed, epoch, batch, position): a
    resumed run draws exactly the same augmentation, and nothing leaks into the global RNG.
    """

    def __init__(self, layout: ImageLayout, options: AugmentOptions) -> None:
        self.layout = layout
        self.options = options
        o = options
        steps: list[Any] = []
        if o.flip:
            steps.append(v2.RandomHorizontalFlip())
        if o.randaugment:
            steps.append(v2.RandAugment(num_ops=o.randaugment, magnitude=o.randaugment_magnitude))
        if o.jitter:
            steps.append(v2.ColorJitter(brightness=o.jitter, contrast=o.jitter))
        if o.shift or o.rotate or o.scale != (1.0, 1.0):
            steps.append(
                v2.RandomAffine(
                    degrees=o.rotate,
                    translate=(o.shift, o.shift) if o.shift else None,
                    scale=o.scale if o.scale != (1.0, 1.0) else None,
                )
            )
        if o.erase:
            steps.append(v2.RandomErasing(p=o.erase, scale=(0.02, 0.15), value=0))
        self.pipeline = v2.Compose(steps) if steps else v2.Identity()

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        seeds = torch.randint(0, 2**62, (x.shape[0],), generator=generator).tolist()
        out = torch.empty_like(x)
        with torch.random.fork_rng(devices=[]):
            for i, seed in enumerate(seeds):
                torch.manual_seed(seed)
                out[i] = self.pipeline(x[i])
        return out

    def __repr__(self) -> str:
        return f"Augmentation({self.pipeline})"
