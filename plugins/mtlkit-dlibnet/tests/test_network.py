"""The network's dlib conventions: unpadded strided windows and zero-padded residual sums."""

from __future__ import annotations

import torch
from mtlkit_dlibnet.network import STAGE_NAMES, Affine, DlibFaceResNet, dlib_padding, pad_add


def test_dlib_padding_is_none_for_strided_windows() -> None:
    assert dlib_padding(7, 2) == 0
    assert dlib_padding(3, 2) == 0
    assert dlib_padding(3, 1) == 1


def test_pad_add_pads_the_smaller_tensor_at_the_end() -> None:
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    out = pad_add(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, :3, :3].eq(11).all()
    assert out[0, 0, 3, :].eq(10).all() and out[0, 0, :, 3].eq(10).all()
    assert out[0, 1, :3, :3].eq(1).all() and out[0, 1, 3, :].eq(0).all()


def test_stage_sizes_at_150_px_follow_dlib() -> None:
    """72 after the stem conv, 35 after the pool, then 17, 8, 4 (3 + pad) and 2."""
    net = DlibFaceResNet().eval()
    with torch.no_grad():
        maps = net.forward_stages(torch.zeros(1, 3, 150, 150))
    sizes = {k: tuple(v.shape[1:]) for k, v in maps.items()}
    assert list(sizes) == list(STAGE_NAMES)
    assert sizes == {
        "stem": (32, 35, 35), "level4": (32, 35, 35), "level3": (64, 17, 17),
        "level2": (128, 8, 8), "level1": (256, 4, 4), "level0": (256, 2, 2),
    }


def test_embedding_and_pooled_widths() -> None:
    x = torch.rand(2, 3, 150, 150)
    assert DlibFaceResNet()(x).shape == (2, 128)
    assert DlibFaceResNet(embedding=False)(x).shape == (2, 256)


def test_affine_is_frozen_and_resets_to_identity() -> None:
    layer = Affine(3)
    assert list(layer.parameters()) == []
    layer.weight.fill_(5.0)
    layer.reset_parameters()
    x = torch.randn(1, 3, 2, 2)
    assert torch.equal(layer(x), x)
