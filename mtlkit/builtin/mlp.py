"""A small MLP trunk over flattened inputs: the core's dependency-free backbone."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor, nn

from mtlkit.backbone import Backbone
from mtlkit.options import Options


class MLPOptions(Options):
    in_features: int = Field(16, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class MLPBackbone(Backbone):
    """Flatten, then Linear-ReLU blocks; the last block's width is the feature size."""

    Options = MLPOptions
    options: MLPOptions

    def __init__(self, options: MLPOptions | None = None) -> None:
        super().__init__(options)
        layers: list[nn.Module] = [nn.Flatten()]
        width = self.options.in_features
        for h in self.options.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if self.options.dropout:
                layers.append(nn.Dropout(self.options.dropout))
            width = h
        self.net = nn.Sequential(*layers)
        self._dim = width

    @property
    def feature_dim(self) -> int:
        return self._dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def data_config(self) -> dict[str, Any]:
        return {"input_size": (self.options.in_features,)}
