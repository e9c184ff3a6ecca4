"""Drawn faces with up to 40 binary attributes: a CelebA stand-in that needs no download.

Each image draws its attributes independently (at CelebA-like positive rates), then the
``correlations`` and ``conflicts`` rules tie pairs together; hair colours are exclusive (one of
black, brown, gray, blond, or none). Labels of ``missing_fraction`` of the images are dropped per
attribute (the pixels keep the attribute). Attribute names are CelebA's, lower-cased, so a config
written for this dataset runs on CelebA through a ``manifest`` with ``attr_<name>`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from mtlkit.errors import DataError
from mtlkit.task import MISSING_LABEL
from mtlkit_face.data.base import FaceDataModule, FaceDataOptions
from mtlkit_face.data.records import FaceRecord
from mtlkit_face.data.render import (
    ATTRIBUTES,
    draw,
    expression_params,
    finish,
    frame_specs,
    identity_params,
)
from mtlkit_face.data.transforms import ImageLayout

NATIVE_SIZE = 48
MAX_DRAW_SIZE = 96
_CHUNK = 256
NEUTRAL = "neutral"

POSITIVE_RATES: dict[str, float] = {
    "five_o_clock_shadow": 0.11, "arched_eyebrows": 0.27, "attractive": 0.51,
    "bags_under_eyes": 0.20, "bald": 0.04, "bangs": 0.15, "big_lips": 0.24, "big_nose": 0.23,
    "blurry": 0.05, "bushy_eyebrows": 0.14, "chubby": 0.06, "double_chin": 0.05,
    "eyeglasses": 0.07, "goatee": 0.06, "heavy_makeup": 0.39, "high_cheekbones": 0.45,
    "male": 0.42, "mouth_slightly_open": 0.48, "mustache": 0.05, "narrow_eyes": 0.12,
    "no_beard": 0.83, "oval_face": 0.28, "pale_skin": 0.05, "pointy_nose": 0.28,
    "receding_hairline": 0.08, "rosy_cheeks": 0.07, "sideburns": 0.06, "smiling": 0.48,
    "straight_hair": 0.21, "wavy_hair": 0.32, "wearing_earrings": 0.19, "wearing_hat": 0.05,
    "wearing_lipstick": 0.47, "wearing_necklace": 0.12, "wearing_necktie": 0.07, "young": 0.77,
    # exclusive hair colours (drawn as one categorical choice; 36% none)
    "black_hair": 0.24, "brown_hair": 0.21, "gray_hair": 0.04, "blond_hair": 0.15,
}  # fmt: skip
"""Probability of each attribute before the pair rules: CelebA's rates, the rarest raised to 4%."""
HAIR_COLOURS = ("black_hair", "brown_hair", "gray_hair", "blond_hair")

DEFAULT_CORRELATIONS = [
    ("goatee", "mustache", 0.8),
    ("smiling", "mouth_slightly_open", 0.7),
    ("heavy_makeup", "wearing_lipstick", 0.8),
]
DEFAULT_CONFLICTS = [
    ("wearing_hat", "bangs", 0.95),
    ("young", "gray_hair", 0.9),
    ("straight_hair", "wavy_hair", 1.0),
]

Rule = tuple[str, str, float]


class SyntheticAttributesOptions(FaceDataOptions):
    num_attributes: int = Field(40, ge=1, le=len(ATTRIBUTES))
    """The first N attributes of CelebA's order are labelled and drawn; the others never appear."""
    attributes: list[str] | None = None
    """The attributes by name instead (any subset, in this order); overrides num_attributes."""
    num_identities: int = Field(50, ge=2)
    images_per_identity: int = Field(20, ge=1)
    correlations: list[Rule] = Field(default_factory=lambda: list(DEFAULT_CORRELATIONS))
    """Rules ``[a, b, s]``: with probability s, b copies a (so P(b | a) = s + (1 - s) P(b))."""
    conflicts: list[Rule] = Field(default_factory=lambda: list(DEFAULT_CONFLICTS))
    """Rules ``[a, b, s]``: where a and b are both set, b is cleared with probability s
    (so P(a and b) = (1 - s) P(a) P(b)). Applied after the correlations, in the order listed."""
    missing_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of images whose label is dropped (MISSING_LABEL), drawn per attribute."""
    noise: float = Field(0.03, ge=0.0)
    """Std of Gaussian pixel noise on the 0..1 scale."""
    jitter: float = Field(1.0, ge=0.0)
    """Pose-jitter scale, as synthetic_faces."""

    @field_validator("attributes")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            unknown = [a for a in v if a not in ATTRIBUTES]
            if unknown or not v or len(set(v)) != len(v):
                raise ValueError(
                    f"attributes must be distinct names from {list(ATTRIBUTES)}; got {v}"
                )
        return v

    @field_validator("correlations", "conflicts")
    @classmethod
    def _rules(cls, v: list[Rule]) -> list[Rule]:
        for a, b, s in v:
            bad = [x for x in (a, b) if x not in ATTRIBUTES]
            if bad:
                raise ValueError(f"unknown attribute(s) {bad} in rule {[a, b, s]}")
            if a == b or not 0.0 <= s <= 1.0:
                raise ValueError(f"rule {[a, b, s]}: needs two attributes and 0 <= s <= 1")
        return v

    @model_validator(mode="after")
    def _one_choice(self) -> SyntheticAttributesOptions:
        if self.expressions not in (None, [NEUTRAL]):
            raise ValueError("synthetic_attributes has no expressions option (use attr_smiling)")
        if self.attributes is not None and self.num_attributes not in (40, len(self.attributes)):
            raise ValueError(
                f"num_attributes={self.num_attributes} contradicts the {len(self.attributes)}"
                " attributes listed; give one of the two"
            )
        return self

    def active(self) -> list[str]:
        return list(self.attributes or ATTRIBUTES[: self.num_attributes])


def sample_attributes(options: SyntheticAttributesOptions, n: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(present ``[n, 40]`` 0/1 of what is drawn, labels ``[n, A]`` with MISSING_LABEL) for the
    active attributes. All 40 are always sampled, so an attribute's labels do not depend on
    which others are active."""
    rates = np.array([POSITIVE_RATES[a] for a in ATTRIBUTES])
    present = (rng.random((n, len(ATTRIBUTES))) < rates).astype(np.int64)
    hair = [ATTRIBUTES.index(h) for h in HAIR_COLOURS]
    bounds = np.cumsum([POSITIVE_RATES[h] for h in HAIR_COLOURS])
    choice = np.searchsorted(bounds, rng.random(n), side="right")  # len(hair) = none
    present[:, hair] = 0
    for j, h in enumerate(hair):
        present[choice == j, h] = 1
    for rules, copy in ((options.correlations, True), (options.conflicts, False)):
        for a, b, s in rules:
            ia, ib = ATTRIBUTES.index(a), ATTRIBUTES.index(b)
            hit = rng.random(n) < s
            if copy:
                present[hit, ib] = present[hit, ia]
            else:
                present[hit & (present[:, ia] == 1), ib] = 0
    active = [ATTRIBUTES.index(a) for a in options.active()]
    labels = present[:, active].copy()
    drop = round(options.missing_fraction * n)
    for j in range(len(active)):
        if drop:
            labels[rng.choice(n, size=drop, replace=False), j] = MISSING_LABEL
    shown = np.zeros_like(present)
    shown[:, active] = present[:, active]
    return shown, labels


class SyntheticAttributesData(FaceDataModule):
    """Deterministic in ``seed``: same options, same pixels and labels. Native size 48 px.

    Targets ``attr_<name>`` (0/1, MISSING_LABEL where dropped) and ``face_identity``; each image
    is a sequence of its own, so both protocols apply (subject-kfold by default).
    """

    Options = SyntheticAttributesOptions
    options: SyntheticAttributesOptions
    dataset_name = "synthetic_attributes"
    has_expressions = False

    def _generate(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_sampled"):
            o = self.options
            n = o.num_identities * o.images_per_identity
            rng = np.random.default_rng([o.seed, 40])
            self._sampled = sample_attributes(o, n, rng)
        return self._sampled

    def load_records(self) -> tuple[list[FaceRecord], list[str]]:
        o = self.options
        _, labels = self._generate()
        self.attribute_names = o.active()
        width = max(2, len(str(o.num_identities - 1)))
        records = []
        for i in range(o.num_identities):
            subject = f"ID{i:0{width}d}"
            for f in range(o.images_per_identity):
                row = labels[i * o.images_per_identity + f]
                records.append(
                    FaceRecord(
                        subject,
                        f"{subject}_{f}",
                        NEUTRAL,
                        frame=f,
                        origin=f"synthetic {subject} image {f}",
                        attributes=tuple(int(x) for x in row),
                    )
                )
        return records, []

    def native_size(self, records: Sequence[FaceRecord]) -> tuple[int, int]:
        return NATIVE_SIZE, NATIVE_SIZE

    def load_images(
        self, records: Sequence[FaceRecord], layout: ImageLayout
    ) -> tuple[torch.Tensor, list[int], list[str]]:
        o = self.options
        present, _ = self._generate()
        if len(records) != len(present):
            raise DataError("synthetic_attributes: records and attributes disagree")
        rng = np.random.default_rng(o.seed)
        identities = attribute_identities(o.num_identities, rng)
        ident_of = np.repeat(np.arange(o.num_identities), o.images_per_identity)
        expr_of = np.zeros(len(records), dtype=np.int64)
        spec = frame_specs(ident_of, expr_of, identities, expression_params([NEUTRAL]), o.jitter,
                           rng)
        spec = type(spec)(spec.identity, spec.expression, spec.pose, spec.intensity,
                          spec.background, present.astype(np.float32))
        gen = torch.Generator().manual_seed(o.seed)
        side = min(max(layout.height, layout.width), MAX_DRAW_SIZE)
        chunks = []
        for start in range(0, len(records), _CHUNK):
            faces = draw(spec.take(slice(start, start + _CHUNK)), side, layout.chans)
            chunks.append(finish(faces, (layout.height, layout.width), o.noise, gen))
        return torch.cat(chunks), list(range(len(records))), []

    def group_source(self) -> str:
        """Generated people are drawn from the seed: another seed draws other people."""
        return f"{self.dataset_name}:seed={self.options.seed}"

    def extra_summary(self) -> dict[str, Any]:
        return {
            "generated_identities": self.options.num_identities,
            "attributes": list(self.options.active()),
        }


def attribute_identities(num: int, rng: np.random.Generator) -> np.ndarray:
    """Identity factors with skin and hair tones kept clear of the attribute tones (pale skin
    0.97; black 0.03, brown 0.45, gray 0.66, blond 0.9 hair) and the hairline high enough for
    bangs to show."""
    ident = identity_params(num, rng)
    ident[:, 3] = 0.5 + (ident[:, 3] - 0.45) / 0.5 * 0.25  # skin 0.50 .. 0.75
    ident[:, 6] = 0.2 + ident[:, 6] / 0.3 * 0.1  # hair 0.20 .. 0.30
    ident[:, 5] = 0.12 + (ident[:, 5] - 0.12) / 0.43 * 0.2  # hairline above the bangs' edge
    return ident
