"""Shared helpers of the mtlkit-arch tests: a tiny staged CNN and model builders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlkit.architecture import Architecture
from mtlkit.backbone import Backbone
from mtlkit.plugins import PluginHost
from mtlkit.testing import registered

DIST = "mtlkit-arch"

HOST = PluginHost()
"""Entry points loaded: this plugin (and the weighters of every other) must be installed."""

ARCHS: dict[str, type[Architecture]] = {
    "hps": HOST.architectures.resolve("hps"),
    **registered("architectures", DIST, host=HOST),
}
"""Every architecture this distribution registers, read from the registry, and hps."""

VARIANTS: dict[str, list[dict[str, Any]]] = {
    "hps": [{}],
    "branch": [{}, {"split_at": "s0", "init": "reset"}, {"split_at": 1}],
    "mmoe": [{}, {"num_experts": 2, "split_at": "s1", "expert_init": "copy"}],
    "cgc": [{}, {"num_shared": 2, "num_specific": 1}],
    "ple": [{}, {"split_at": "stem", "levels": ["s0", "s1"]}],
    "cross_stitch": [{}, {"after": ["s1"]}, {"after": ["stem", "s2"]}],
    "mtan": [{}],
}
"""Option sets checked per architecture; a newly registered one gets its defaults."""


class TinyCNN(Backbone):
    """Four stages on 1x8x8 inputs (or 16 features, read as a 4x4 image): stem, s0, s1, s2."""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)

        def block(c_in: int, c_out: int, stride: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out),
                                 nn.ReLU())

        self.stages = nn.ModuleList(
            [block(1, 4, 1), block(4, 6, 2), block(6, 8, 1), block(8, 10, 2)]
        )

    def feature_stages(self) -> list[tuple[str, nn.Module]]:
        return list(zip(["stem", "s0", "s1", "s2"], self.stages))

    @property
    def feature_dim(self) -> int:
        return 10

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], 1, *x.shape[-2:]) if x.ndim == 4 else x.reshape(-1, 1, 4, 4)
        for stage in self.stages:
            x = stage(x)
        return x.mean((2, 3))

    def data_config(self) -> dict[str, Any]:
        return {"input_size": (1, 8, 8)}


def build(name: str, options: dict[str, Any], tasks: Sequence[str] = ("a", "b"),
          seed: int = 0, backbone: nn.Module | None = None) -> Architecture:
    """``name`` on a fresh TinyCNN (seeded) with a 3-output linear head per task."""
    torch.manual_seed(seed)
    cls = ARCHS[name]
    heads = {t: (lambda w: nn.Linear(w, 3)) for t in tasks}
    return cls(backbone if backbone is not None else TinyCNN(), heads,
               cls.Options.model_validate(options))


def variant_id(name: str, options: dict[str, Any]) -> str:
    return name + "".join(f"-{k}={v}" for k, v in options.items())
