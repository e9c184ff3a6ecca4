"""``synthetic_faces_pose``: mtlkit-face's drawn faces, each rotated by a known, seeded angle.

It reuses the ``synthetic_faces`` dataset (identities, expressions, the leak-free protocols) and
adds one target, ``head_roll``: the signed in-plane rotation of the image, in degrees.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mtlkit_face.data.records import FaceRecord
from mtlkit_face.data.synthetic import SyntheticFacesData, SyntheticFacesOptions
from mtlkit_face.data.transforms import ImageLayout
from pydantic import Field
from torch import Tensor

from mtlkit.data import DataSplits, InMemoryDataset
from mtlkit.errors import DataError

TARGET = "head_roll"
_ROLL_STREAM = 7919
"""Added to ``seed`` for the angle generator, so angles and pixel noise are independent draws."""


class PoseFacesOptions(SyntheticFacesOptions):
    """``synthetic_faces``' options, plus the angle range; two defaults differ (see below)."""

    max_roll: float = Field(30.0, gt=0.0, le=90.0)
    """Each image is rotated by an angle drawn uniformly from [-max_roll, max_roll] degrees."""
    jitter: float = Field(0.0, ge=0.0)
    """The base faces' own pose jitter (up to 6 degrees of roll at 1), which the target does not
    include: off by default so that ``head_roll`` is exact."""
    augment: bool = False
    """Flip + shift of training batches; off by default because a flip negates the roll (it is an
    error together with the ``head_roll`` task)."""


def rotate(images: Tensor, degrees: Tensor) -> Tensor:
    """Rotate uint8 ``[N, C, H, W]`` images about their centre (positive: counter-clockwise)."""
    rad = degrees.to(torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(rad)
    # affine_grid maps output to input coordinates (y pointing down): the inverse rotation
    theta = torch.stack(
        [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
    )
    x = images.to(torch.float32)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class PoseFacesData(SyntheticFacesData):
    """Deterministic in ``seed``, like ``synthetic_faces``; targets ``face_identity``,
    ``expression`` and ``head_roll`` (float degrees)."""

    Options = PoseFacesOptions
    options: PoseFacesOptions
    dataset_name = "synthetic_faces_pose"

    roll: Tensor
    """``[len(records)]`` angle of each record in degrees (NaN for a record not loaded)."""

    def load_images(
        self, records: Sequence[FaceRecord], layout: ImageLayout
    ) -> tuple[Tensor, list[int], list[str]]:
        images, kept, skipped = super().load_images(records, layout)
        gen = torch.Generator().manual_seed(self.options.seed + _ROLL_STREAM)
        angles = (torch.rand(len(kept), generator=gen, dtype=torch.float64) * 2 - 1)
        angles = (angles * self.options.max_roll).to(torch.float32)
        self.roll = torch.full((len(records),), float("nan"))
        self.roll[torch.tensor(kept, dtype=torch.long)] = angles
        return rotate(images, angles), kept, skipped

    def setup(self, tasks: Sequence[str], data_config: Mapping[str, Any]) -> DataSplits:
        if TARGET in tasks and self.options.augment:
            raise DataError(
                f"{self.dataset_name}: augment=true flips training images, which negates"
                f" {TARGET}; set augment: false"
            )
        # the base class builds every split for the targets it knows ...
        splits = super().setup([t for t in tasks if t != TARGET], data_config)
        if TARGET not in tasks:
            return splits

        # ... and each split gets the angle of its rows (meta["index"] points into records)
        def add(ds: InMemoryDataset | None) -> InMemoryDataset | None:
            if ds is None:
                return None
            return dataclasses.replace(
                ds, targets={**ds.targets, TARGET: self.roll[ds.meta["index"]]}
            )

        train = add(splits.train)
        assert train is not None
        return dataclasses.replace(
            splits,
            train=train,
            val=add(splits.val),
            test=add(splits.test),
            info={**splits.info, TARGET: {"unit": "degrees", "max_abs": self.options.max_roll}},
            summary={**splits.summary, "max_roll": self.options.max_roll},
        )
