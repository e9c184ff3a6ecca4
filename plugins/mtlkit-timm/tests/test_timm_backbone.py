"""The timm backbone: discovery, feature sizes, options errors, offline local weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mtlkit_timm.backbone import TimmBackbone, TimmOptions
from pydantic import ValidationError

from mtlkit.backbone import Backbone
from mtlkit.errors import ConfigError
from mtlkit.plugins import PluginHost


def build(**options: object) -> TimmBackbone:
    return TimmBackbone(TimmOptions(**options))


def test_found_via_entry_point() -> None:
    host = PluginHost()
    assert "timm" in [p.name for p in host.plugins()]
    cls = host.backbones.resolve("timm")
    assert cls is TimmBackbone
    assert issubclass(cls, Backbone)
    assert host.backbones.entry("timm").dist == "mtlkit-timm"


def test_entry_module_is_light() -> None:
    code = (
        "import sys, mtlkit_timm.plugin;"
        "bad = [m for m in ('torch', 'timm') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("test_resnet", {}),
        ("test_efficientnet", {}),
        ("test_vit", {"img_size": 32}),
        ("mobilenetv3_small_050", {}),  # head_hidden_size (1024) != num_features (288)
    ],
)
def test_feature_dim_matches_output(name: str, extra: dict[str, object]) -> None:
    bb = build(model_name=name, in_chans=1, **extra)
    size = extra.get("img_size", 32)
    out = bb(torch.randn(2, 1, size, size))
    assert out.shape == (2, bb.feature_dim)
    cfg = bb.data_config()
    assert cfg["in_chans"] == 1
    assert cfg["input_size"][0] == 1
    assert len(cfg["mean"]) == 1 and len(cfg["std"]) == 1


def test_mobilenet_uses_head_hidden_size() -> None:
    bb = build(model_name="mobilenetv3_small_050")
    assert bb.feature_dim == bb.model.head_hidden_size != bb.model.num_features


def test_img_size_for_vit_and_ignored_by_cnn() -> None:
    vit = build(model_name="test_vit", img_size=48)
    assert vit.data_config()["input_size"] == (3, 48, 48)
    assert vit(torch.randn(1, 3, 48, 48)).shape == (1, vit.feature_dim)
    cnn = build(model_name="test_resnet", img_size=40)  # CNNs do not take img_size: reported only
    assert cnn.data_config()["input_size"] == (3, 40, 40)
    assert cnn(torch.randn(1, 3, 40, 40)).shape == (1, cnn.feature_dim)


def test_data_config_is_timms() -> None:
    bb = build(model_name="test_resnet")
    cfg = bb.data_config()
    assert cfg["input_size"] == (3, 160, 160)
    assert len(cfg["mean"]) == 3 and "interpolation" in cfg


def test_options_pass_through() -> None:
    bb = build(model_name="test_vit", img_size=32, drop_path_rate=0.1, global_pool="token")
    assert bb.model.global_pool == "token"
    assert bb.training and bb.model.training  # the dry forward restores training mode
    assert len(bb.last_shared_parameters()) > 0


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValidationError) as info:
        TimmOptions(model_name="resnet181")
    msg = str(info.value)
    assert "unknown timm model 'resnet181'" in msg
    assert "resnet18" in msg


def test_empty_global_pool_rejected() -> None:
    with pytest.raises(ValidationError, match="pooled"):
        TimmOptions(model_name="test_resnet", global_pool="")


def test_pretrained_without_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="weights_file"):
        TimmOptions(model_name="test_resnet", pretrained=True)
    with pytest.raises(ValidationError, match="does not exist"):
        TimmOptions(
            model_name="test_resnet", pretrained=True, weights_file=str(tmp_path / "no.pth")
        )
    with pytest.raises(ValidationError, match="pretrained"):
        TimmOptions(model_name="test_resnet", weights_file=str(tmp_path / "no.pth"))
    # options that skipped validation still fail clearly at build time
    with pytest.raises(ConfigError, match="weights_file"):
        TimmBackbone(TimmOptions.model_construct(model_name="test_resnet", pretrained=True,
                                                 weights_file=None, in_chans=3,
                                                 drop_path_rate=0.0, global_pool="avg",
                                                 img_size=None))


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_pretrained_from_local_file(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import timm

    torch.manual_seed(0)
    source = timm.create_model("test_resnet")  # with its 1000-class classifier: dropped on load
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)

    bb = build(model_name="test_resnet", pretrained=True, weights_file=str(path))
    loaded = bb.model.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    fresh = build(model_name="test_resnet")
    assert not torch.equal(fresh.model.conv1[0].weight, bb.model.conv1[0].weight)


def test_bad_weights_file_is_a_config_error(tmp_path: Path) -> None:
    import timm

    path = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    with pytest.raises(ConfigError, match="could not be loaded"):
        build(model_name="test_resnet", pretrained=True, weights_file=str(path))


def test_fixed_input_size_only_where_the_model_needs_it() -> None:
    assert build(model_name="test_resnet").data_config()["fixed_input_size"] is False
    assert build(model_name="test_vit").data_config()["fixed_input_size"] is True
    # an explicit img_size is the user's choice of input size, even for a CNN
    assert build(model_name="test_resnet", img_size=40).data_config()["fixed_input_size"] is True


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pwned",))


def test_weights_file_with_pickled_objects_is_refused_without_unsafe_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "evil.pth"
    torch.save({"payload": _Evil()}, path)
    with pytest.raises(ConfigError, match="could not be loaded") as info:
        TimmBackbone(TimmOptions(model_name="test_resnet", pretrained=True,
                                 weights_file=str(path)))
    assert "weights_only" not in str(info.value)
