"""Drawn faces: deterministic in the seed, identities and expressions visibly distinct, fast."""

from __future__ import annotations

import time

import pytest
import torch
from mtlkit_face.data.synthetic import SyntheticFacesData
from torch import nn

from mtlkit.data import batch_generator, epoch_order
from mtlkit.errors import DataError
from mtlkit.task import MISSING_LABEL


def make(tasks=("face_identity", "expression"), data_config=None, **kw):
    data = SyntheticFacesData(SyntheticFacesData.Options(**kw))
    return data, data.setup(list(tasks), data_config or {})


def all_images(data: SyntheticFacesData, splits) -> torch.Tensor:
    """Every image in record order (identity-major, then expression, then frame)."""
    parts = list(splits.named().values())
    x = torch.cat([p.inputs for p in parts])
    idx = torch.cat([p.meta["index"] for p in parts])
    return x[torch.argsort(idx)]


def test_defaults_and_contract() -> None:
    _, splits = make()
    s = splits.summary
    assert s["total"] == {"images": 20 * 7 * 3, "subjects": 20, "sequences": 140}
    assert splits.info["expression"]["num_classes"] == 7
    assert tuple(splits.train.inputs.shape[1:]) == (3, 48, 48)
    k = splits.info["face_identity"]["num_classes"]
    assert k == s["splits"]["train"]["subjects"] == 16  # 2 test + 2 val people held out
    assert (splits.test.targets["face_identity"] == MISSING_LABEL).all()
    assert set(splits.train.meta) == {"subject", "sequence", "expression", "index"}


def test_deterministic_for_a_seed() -> None:
    a = all_images(*make(seed=3, num_identities=4, num_folds=2))
    b = all_images(*make(seed=3, num_identities=4, num_folds=2))
    c = all_images(*make(seed=4, num_identities=4, num_folds=2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_identities_and_expressions_differ() -> None:
    data, splits = make(num_identities=6, num_folds=2, noise=0.0, jitter=0.0)
    x = all_images(data, splits).float().view(6, 7, 3, 3, 48, 48)
    frame0 = x[:, :, 0]  # [identity, expression, C, H, W]
    for i in range(6):
        for j in range(i + 1, 6):  # same expression, different people
            assert (frame0[i, 0] - frame0[j, 0]).abs().mean() > 3
    for e in range(7):
        for f in range(e + 1, 7):  # same person, different expressions
            assert (frame0[0, e] - frame0[0, f]).abs().mean() > 1


def test_sequence_holdout_is_closed_set() -> None:
    _, splits = make(protocol="sequence-holdout")
    assert splits.info["face_identity"]["num_classes"] == 20
    assert splits.summary["splits"]["test"]["sequences"] == 20
    assert (splits.test.targets["face_identity"] >= 0).all()


def test_layout_and_custom_expressions() -> None:
    _, splits = make(
        ["expression"],
        {"input_size": (1, 40, 56)},
        expressions=["calm", "smile", "yawn"],
        num_identities=4,
        num_folds=2,
        frames_per_sequence=1,
    )
    assert tuple(splits.train.inputs.shape[1:]) == (1, 40, 56)
    assert splits.info["expression"]["class_names"] == ["calm", "smile", "yawn"]
    with pytest.raises(DataError, match="at least 2"):
        make(expressions=["calm"])


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    make(num_identities=24)  # 504 images
    assert time.perf_counter() - start < 5.0  # ~0.2 s on one idle core


def small_cnn(out: int) -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(1, 16),
        *block(16, 32),
        *block(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, out),
    )


@pytest.mark.slow
def test_learnable_by_a_small_cnn() -> None:
    """Identity on held-out sequences and expression both well above chance in ~6 s."""
    torch.manual_seed(0)
    _, splits = make(data_config={"in_chans": 1}, protocol="sequence-holdout")
    k = splits.info["face_identity"]["num_classes"]
    net = small_cnn(k + 7)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for epoch in range(25):
        order = epoch_order(len(splits.train), 0, epoch)
        for b, idx in enumerate(order.split(32)):
            batch = splits.train.batch(idx, train=True, generator=batch_generator(0, epoch, b))
            out = net(batch["input"])
            t = batch["targets"]
            loss = nn.functional.cross_entropy(out[:, :k], t["face_identity"])
            loss = loss + nn.functional.cross_entropy(out[:, k:], t["expression"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():  # recalibrate batch-norm statistics on the un-augmented training set
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net(splits.train.batch(torch.arange(len(splits.train)))["input"])
        net.eval()
        batch = splits.test.batch(torch.arange(len(splits.test)))
        out = net(batch["input"])
    ident = (out[:, :k].argmax(1) == batch["targets"]["face_identity"]).float().mean()
    expr = (out[:, k:].argmax(1) == batch["targets"]["expression"]).float().mean()
    assert ident > 5 / k and expr > 2.5 / 7, (ident, expr)  # chance: 1/k and 1/7
