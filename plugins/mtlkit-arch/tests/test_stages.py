"""Stage discovery on timm models and the errors a config can run into."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from mtlkit.builtin.mlp import MLPBackbone
from mtlkit.errors import ConfigError

from .conftest import ARCHS, TinyCNN, build

timm = pytest.importorskip("timm")
TimmBackbone = pytest.importorskip("mtlkit_timm.backbone").TimmBackbone


def _timm(name: str) -> Any:
    return TimmBackbone(TimmBackbone.Options(model_name=name, in_chans=1))


def test_branch_on_a_timm_resnet_splits_at_a_named_stage() -> None:
    backbone = _timm("test_resnet")
    layer4 = backbone.model.layer4
    model = build("branch", {"split_at": "layer3"}, backbone=backbone)
    assert model.split_name == "layer3"
    # the shared trunk holds the backbone's own modules; each task a copy of layer4
    assert all(b[-1][-1] is not layer4 for b in model.branch.values())
    assert any(m is backbone.model.layer3 for m in model.shared.modules())
    z, out = model(torch.randn(2, 1, 32, 32))
    assert z.shape == (2, 192 * 2 * 2) and out["a"].shape == (2, 3)


def test_branch_copy_starts_every_task_from_the_backbone_weights() -> None:
    backbone = _timm("test_resnet")
    want = backbone.model.layer4.state_dict()
    model = build("branch", {"split_at": 3}, backbone=backbone)
    for branch in model.branch.values():
        got = branch[0][0].state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_flattened_stages_of_an_efficientnet() -> None:
    """timm models whose stages sit inside one Sequential (blocks.0 ...) split too."""
    model = build("mtan", {}, backbone=_timm("test_efficientnet"))
    _, out = model(torch.randn(2, 1, 32, 32))
    assert out["b"].shape == (2, 3)


def test_bad_split_at_lists_the_stage_names() -> None:
    with pytest.raises(ConfigError, match=r"split_at: 'layer5' is not a stage of this backbone;"
                       r" its stages are act1, layer1, layer2, layer3, layer4 \(or an index"
                       r" from -5 to 4\)"):
        build("branch", {"split_at": "layer5"}, backbone=_timm("test_resnet"))
    with pytest.raises(ConfigError, match="index from -4 to 3"):
        build("branch", {"split_at": 7})


@pytest.mark.parametrize("name", ["mmoe", "cgc", "ple"])
def test_experts_need_a_stage_after_the_split(name: str) -> None:
    with pytest.raises(ConfigError, match=r"split_at: 's2' is the last stage .* choose one of"
                       r" stem, s0, s1$"):
        build(name, {"split_at": "s2"})


def test_ple_levels_must_lie_between_split_and_last_stage() -> None:
    with pytest.raises(ConfigError, match=r"levels: \['stem'\] must be increasing stages after"
                       r" split_at \(stem\) .* choose among s0, s1"):
        build("ple", {"levels": ["stem"]})


def test_cross_stitch_needs_a_unit() -> None:
    with pytest.raises(ConfigError, match="at least one unit; choose stages among stem, s0"):
        build("cross_stitch", {"after": []})


@pytest.mark.parametrize("name", sorted(set(ARCHS) - {"hps"}))
def test_a_backbone_without_stages_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="exposes no feature stages: use a timm model"):
        build(name, {}, backbone=MLPBackbone())


def test_a_vit_is_refused_with_a_reason() -> None:
    with pytest.raises(ConfigError, match="ViTs"):
        build("branch", {}, backbone=_timm("test_vit"))


def test_reset_init_differs_from_copy() -> None:
    copy_ = build("branch", {"split_at": "s0", "init": "copy"})
    reset = build("branch", {"split_at": "s0", "init": "reset"})
    a = copy_.branch["a"][0][0].weight
    assert not torch.equal(a, reset.branch["a"][0][0].weight)
    assert not torch.equal(reset.branch["a"][0][0].weight, reset.branch["b"][0][0].weight)
    assert torch.equal(copy_.branch["a"][0][0].weight, copy_.branch["b"][0][0].weight)


def test_experts_reset_by_default() -> None:
    model = build("mmoe", {"num_experts": 2})
    first = next(m for m in model.experts[0].modules() if isinstance(m, nn.Conv2d)).weight
    second = next(m for m in model.experts[1].modules() if isinstance(m, nn.Conv2d)).weight
    assert not torch.equal(first, second)


def test_tiny_cnn_reads_vectors() -> None:
    assert TinyCNN()(torch.randn(2, 16)).shape == (2, 10)
