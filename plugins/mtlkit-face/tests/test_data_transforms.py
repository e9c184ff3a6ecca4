"""The seeded torchvision augmentation: reproducible per batch position, opt-in options work."""

from __future__ import annotations

import pytest
import torch
from mtlkit_face.data.transforms import (
    Augmentation,
    AugmentOptions,
    ImageLayout,
    augment_options,
)
from pydantic import ValidationError

LAYOUT = ImageLayout(chans=1, height=24, width=24, mean=(0.5,), std=(0.5,))


def images(n: int = 8) -> torch.Tensor:
    x = torch.zeros(n, 1, 24, 24, dtype=torch.uint8)
    x[:, :, 6:18, 3:9] = 200  # an off-centre bright bar: every transform moves it
    return x


def run(options: AugmentOptions, seed: int, x: torch.Tensor | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return Augmentation(LAYOUT, options)(images() if x is None else x, gen)


def test_same_generator_same_batch_and_global_rng_untouched() -> None:
    opts = AugmentOptions(rotate=15, scale=(0.8, 1.2), jitter=0.3, erase=0.5, randaugment=2)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = run(opts, 7), run(opts, 7)
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), before)  # forked: no leak into the global RNG
    assert not torch.equal(a, run(opts, 8))
    assert a.dtype == torch.uint8 and a.shape == images().shape


def test_images_of_one_batch_get_different_draws() -> None:
    out = run(AugmentOptions(rotate=30), 0)
    assert len({tuple(img.flatten().tolist()) for img in out}) > 1


def test_defaults_flip_and_shift_only() -> None:
    x = images(64)
    out = run(AugmentOptions(), 0, x)
    # pixel mass is kept up to the few columns a shift pushes out (no zoom, rotation or erasing)
    assert (out.float().sum((1, 2, 3)) <= x.float().sum((1, 2, 3))).all()
    left = out[:, 0, :, :12].float().sum((1, 2)) > out[:, 0, :, 12:].float().sum((1, 2))
    assert left.any() and (~left).any()  # some flipped, some not
    still = run(AugmentOptions(flip=False, shift=0.0), 0, x)
    assert torch.equal(still, x)  # an empty pipeline is the identity


def test_erasing_zeroes_a_box() -> None:
    x = torch.full((16, 1, 24, 24), 100, dtype=torch.uint8)
    out = run(AugmentOptions(flip=False, shift=0.0, erase=1.0), 3, x)
    assert ((out == 0).flatten(1).any(1)).all()
    assert ((out == 100).flatten(1).any(1)).all()


def test_option_values() -> None:
    from mtlkit_face.data.base import FaceDataOptions

    assert augment_options(False) is None
    assert augment_options(True) == AugmentOptions()
    # true is kept as the settings it stands for (what a run's resolved config records)
    assert FaceDataOptions().augment == AugmentOptions()
    assert FaceDataOptions(augment=True).model_dump(mode="json")["augment"]["flip"] is True
    assert FaceDataOptions(augment=False).augment is False
    custom = AugmentOptions(rotate=5)
    assert augment_options(custom) is custom
    with pytest.raises(ValidationError, match="low <= high"):
        AugmentOptions(scale=(1.2, 0.9))
    with pytest.raises(ValidationError):
        AugmentOptions(erase=1.5)
