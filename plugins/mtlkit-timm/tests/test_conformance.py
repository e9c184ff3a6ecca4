"""The timm backbone against mtlkit's backbone contract (``mtlkit.testing``)."""

from __future__ import annotations

from typing import Any

from mtlkit_timm.backbone import TimmBackbone

from mtlkit.testing import backbone_checks, parametrize_checks

OPTIONS = [
    {"model_name": "test_resnet", "in_chans": 1},
    {"model_name": "test_resnet", "in_chans": 3, "global_pool": "max"},
    {"model_name": "test_vit", "in_chans": 3},
]


@parametrize_checks(backbone_checks(TimmBackbone, OPTIONS, name="timm"))
def test_conformance(check: Any) -> None:
    check()

