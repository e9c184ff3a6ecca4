"""synthetic_attributes (the CelebA stand-in) and manifest attribute columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mtlkit_face.data.manifest import ManifestData
from mtlkit_face.data.render import ATTRIBUTES, draw, expression_params, frame_specs
from mtlkit_face.data.synthetic_attributes import (
    POSITIVE_RATES,
    SyntheticAttributesData,
    SyntheticAttributesOptions,
    attribute_identities,
    sample_attributes,
)
from PIL import Image

from mtlkit.errors import DataError
from mtlkit.task import MISSING_LABEL
from mtlkit.testing import check_datamodule

TARGETS = [f"attr_{a}" for a in ATTRIBUTES]


def make(tasks=("attr_smiling", "attr_eyeglasses"), **kw):
    data = SyntheticAttributesData(SyntheticAttributesOptions(**kw))
    return data, data.setup(list(tasks), {"in_chans": 1})


def test_every_attribute_changes_the_drawing() -> None:
    """Each attribute, toggled alone on a plain face, changes pixels (48 px, grayscale)."""
    rng = np.random.default_rng(0)
    n = len(ATTRIBUTES) + 1
    spec = frame_specs(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                       attribute_identities(3, rng), expression_params(["neutral"]), 1.0, rng)
    base = np.zeros((n, len(ATTRIBUTES)), dtype=np.float32)
    base[:, ATTRIBUTES.index("no_beard")] = base[:, ATTRIBUTES.index("young")] = 1
    for j in range(len(ATTRIBUTES)):
        base[j + 1, j] = 1 - base[j + 1, j]
    pose = np.repeat(spec.pose[:1], n, axis=0)
    spec = type(spec)(spec.identity, spec.expression, pose, spec.intensity,
                      np.full(n, 0.1, np.float32), base)
    img = draw(spec, 48, 1)
    diff = (img[1:] - img[:1]).abs().flatten(1)
    changed = (diff > 0.1).sum(1)  # pixels changed by more than 25 grey levels
    weak = {a: int(c) for a, c in zip(ATTRIBUTES, changed) if c < 3}
    assert not weak, f"attributes barely visible (pixels changed): {weak}"


def test_deterministic_and_seeded() -> None:
    a = make(num_identities=6, images_per_identity=5, num_folds=3)[1]
    b = make(num_identities=6, images_per_identity=5, num_folds=3)[1]
    c = make(num_identities=6, images_per_identity=5, num_folds=3, seed=1)[1]
    assert torch.equal(a.train.inputs, b.train.inputs)
    assert torch.equal(a.train.targets["attr_smiling"], b.train.targets["attr_smiling"])
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert a.info["attr_smiling"]["num_classes"] == 2
    assert a.info["attr_smiling"]["attribute"] == "smiling"
    assert 0 <= a.info["attr_smiling"]["positive_rate"] <= 1


def test_rates_correlations_conflicts_and_missing() -> None:
    o = SyntheticAttributesOptions(missing_fraction=0.25)
    n = 20000
    present, labels = sample_attributes(o, n, np.random.default_rng(0))
    col = {a: present[:, ATTRIBUTES.index(a)].astype(bool) for a in ATTRIBUTES}
    assert abs(col["eyeglasses"].mean() - POSITIVE_RATES["eyeglasses"]) < 0.01
    for a, b, s in o.correlations:  # P(b | a) = s + (1 - s) P_indep(b)
        expected = s + (1 - s) * POSITIVE_RATES[b]
        assert abs(col[b][col[a]].mean() - expected) < 0.03, (a, b)
    for a, b, s in o.conflicts:  # P(a and b) = (1 - s) P(a) P_before(b)
        before = POSITIVE_RATES[b]
        both = (col[a] & col[b]).mean()
        assert abs(both - (1 - s) * POSITIVE_RATES[a] * before) < 0.01, (a, b)
    hair = present[:, [ATTRIBUTES.index(h) for h in
                       ("black_hair", "brown_hair", "gray_hair", "blond_hair")]]
    assert hair.sum(1).max() == 1
    missing = (labels == MISSING_LABEL).mean(0)
    assert np.all(missing == round(0.25 * n) / n)
    # without rules the pairs are independent
    free = SyntheticAttributesOptions(correlations=[], conflicts=[])
    p2, _ = sample_attributes(free, n, np.random.default_rng(0))
    g, m = (p2[:, ATTRIBUTES.index(a)].astype(bool) for a in ("goatee", "mustache"))
    assert abs(m[g].mean() - POSITIVE_RATES["mustache"]) < 0.03


def test_subject_split_is_leak_free_and_subsets() -> None:
    data, s = make(tasks=["attr_bald", "face_identity"], num_identities=10,
                   images_per_identity=4, num_folds=5, val_fraction=0.2, num_attributes=5)
    subjects = {k: set(ds.meta["subject"].tolist()) for k, ds in s.named().items()}
    assert not subjects["train"] & subjects["test"] and not subjects["val"] & subjects["test"]
    assert s.group_key == "subject"
    assert data.attribute_names == list(ATTRIBUTES[:5])
    with pytest.raises(DataError, match="attr_smiling"):
        make(tasks=["attr_smiling"], num_attributes=5, num_identities=4, images_per_identity=2,
             num_folds=2)
    with pytest.raises(DataError, match="expression"):
        make(tasks=["expression"], num_identities=4, images_per_identity=2, num_folds=2)
    named = make(tasks=["attr_wearing_hat"], attributes=["wearing_hat", "bald"],
                 num_identities=4, images_per_identity=2, num_folds=2)[0]
    assert named.attribute_names == ["wearing_hat", "bald"]


def test_missing_fraction_in_targets() -> None:
    _, s = make(tasks=TARGETS[:3], num_identities=10, images_per_identity=10, num_folds=5,
                missing_fraction=0.3, num_attributes=3)
    for t in TARGETS[:3]:
        y = torch.cat([ds.targets[t] for ds in s.named().values()])
        assert int((y == MISSING_LABEL).sum()) == 30
        assert set(y.unique().tolist()) <= {MISSING_LABEL, 0, 1}


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown attribute"):
        SyntheticAttributesOptions(correlations=[("smile", "mustache", 0.5)])
    with pytest.raises(ValueError, match="contradicts"):
        SyntheticAttributesOptions(num_attributes=3, attributes=["bald"])


def test_conformance_all_forty() -> None:
    def factory() -> SyntheticAttributesData:
        return SyntheticAttributesData(SyntheticAttributesOptions(
            num_identities=8, images_per_identity=6, num_folds=4, val_fraction=0.25,
            missing_fraction=0.1))
    check_datamodule(factory, [*TARGETS, "face_identity"], data_config={"in_chans": 1})


def _celeba_manifest(tmp: Path, header: list[str], rows: list[list[str]]) -> Path:
    (tmp / "img").mkdir(exist_ok=True)
    lines = [",".join(header)]
    for i, row in enumerate(rows):
        Image.new("L", (12, 12), 20 * i).save(tmp / "img" / f"{i:06d}.png")
        lines.append(",".join([f"img/{i:06d}.png", *row]))
    (tmp / "m.csv").write_text("\n".join(lines) + "\n")
    return tmp / "m.csv"


def test_manifest_attribute_columns(tmp_path: Path) -> None:
    """CelebA's -1/1, 0/1 and empty cells; no expression column needed with attributes."""
    rows = [[f"p{i // 2}", ["1", "-1", "0", ""][i % 4], ["-1", "1"][i % 2]] for i in range(8)]
    path = _celeba_manifest(tmp_path, ["path", "subject", "attr_smiling", "attr_bald"], rows)
    data = ManifestData(ManifestData.Options(manifest=str(path), num_folds=2, val_fraction=0))
    s = data.setup(["attr_smiling", "attr_bald", "face_identity"], {"in_chans": 1})
    y = torch.cat([ds.targets["attr_smiling"] for ds in s.named().values()])
    idx = torch.cat([ds.meta["index"] for ds in s.named().values()])
    expected = torch.tensor([[1, 0, 0, MISSING_LABEL][i % 4] for i in range(8)])
    assert torch.equal(y, expected[idx])
    assert s.info["attr_bald"]["num_classes"] == 2
    with pytest.raises(DataError, match="expression"):
        ManifestData(ManifestData.Options(manifest=str(path), num_folds=2)).setup(
            ["expression"], {"in_chans": 1})
    bad = _celeba_manifest(tmp_path, ["path", "subject", "expression", "attr_bald"],
                           [["p0", "happy", "2"]])
    with pytest.raises(DataError, match="not 1, 0, -1 or empty"):
        ManifestData(ManifestData.Options(manifest=str(bad))).setup(["attr_bald"], {})
