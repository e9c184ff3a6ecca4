"""Drawn faces with known identity and expression factors: a dataset that needs no download."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from mtlkit.errors import DataError
from mtlkit_face.data.base import FaceDataModule, FaceDataOptions
from mtlkit_face.data.records import FaceRecord
from mtlkit_face.data.render import (
    CK_EXPRESSIONS,
    draw,
    expression_params,
    finish,
    frame_specs,
    identity_params,
)
from mtlkit_face.data.transforms import ImageLayout

NATIVE_SIZE = 48
MAX_DRAW_SIZE = 96
"""Larger inputs are drawn at 96 px and upsampled (smooth shapes gain nothing from more)."""
_CHUNK = 256


class SyntheticFacesOptions(FaceDataOptions):
    num_identities: int = Field(20, ge=2)
    expressions: list[str] | None = Field(default_factory=lambda: list(CK_EXPRESSIONS))
    """Expression classes; the CK+ names have hand-set faces, other names get seeded ones."""
    frames_per_sequence: int = Field(3, ge=1)
    """Jittered frames per (identity, expression) sequence, like CK+'s last three frames."""
    noise: float = Field(0.04, ge=0.0)
    """Std of Gaussian pixel noise on the 0..1 scale."""
    jitter: float = Field(1.0, ge=0.0)
    """Pose-jitter scale: 1 = up to 2% shift, 6 degrees rotation, 5% scale; 0 = none."""


class SyntheticFacesData(FaceDataModule):
    """Deterministic in ``seed``: same options, same pixels. Native size 48 px.

    Each (identity, expression) pair is one sequence of ``frames_per_sequence`` frames.
    """

    Options = SyntheticFacesOptions
    options: SyntheticFacesOptions
    dataset_name = "synthetic_faces"

    def _names(self) -> list[str]:
        names = self.options.expressions
        if names is None or len(names) < 2:
            raise DataError("synthetic_faces needs at least 2 expressions")
        return list(names)

    def load_records(self) -> tuple[list[FaceRecord], list[str]]:
        o = self.options
        width = len(str(o.num_identities - 1))
        records = []
        for i in range(o.num_identities):
            subject = f"ID{i:0{max(2, width)}d}"
            for e in self._names():
                for f in range(o.frames_per_sequence):
                    records.append(
                        FaceRecord(
                            subject,
                            f"{subject}_{e}",
                            e,
                            frame=f,
                            origin=f"synthetic {subject} {e} frame {f}",
                        )
                    )
        return records, []

    def native_size(self, records: Sequence[FaceRecord]) -> tuple[int, int]:
        return NATIVE_SIZE, NATIVE_SIZE

    def load_images(
        self, records: Sequence[FaceRecord], layout: ImageLayout
    ) -> tuple[torch.Tensor, list[int], list[str]]:
        chunks = list(self.iter_images(records, layout))
        return torch.cat(chunks), list(range(len(records))), []

    def iter_images(
        self, records: Sequence[FaceRecord], layout: ImageLayout
    ) -> Iterator[torch.Tensor]:
        """The images of ``records`` in chunks of 256 (writing 200k to disk never holds them
        all)."""
        o = self.options
        names = self._names()
        rng = np.random.default_rng(o.seed)
        identities = identity_params(o.num_identities, rng)
        expressions = expression_params(names)
        subj = {s: i for i, s in enumerate(dict.fromkeys(r.subject for r in records))}
        e_pos = {e: i for i, e in enumerate(names)}
        ident_of = np.array([subj[r.subject] for r in records])
        expr_of = np.array([e_pos[r.expression] for r in records])
        spec = frame_specs(ident_of, expr_of, identities, expressions, o.jitter, rng)
        gen = torch.Generator().manual_seed(o.seed)
        side = min(max(layout.height, layout.width), MAX_DRAW_SIZE)
        for start in range(0, len(records), _CHUNK):
            faces = draw(spec.take(slice(start, start + _CHUNK)), side, layout.chans)
            yield finish(faces, (layout.height, layout.width), o.noise, gen)

    def group_source(self) -> str:
        """Generated people are drawn from the seed: another seed draws other people."""
        return f"{self.dataset_name}:seed={self.options.seed}"

    def extra_summary(self) -> dict[str, Any]:
        return {"generated_identities": self.options.num_identities}
