"""Hard parameter sharing: one backbone, one head per task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from mtlkit.backbone import Backbone


class MultiTaskModel(nn.Module):
    """An ordinary ``nn.Module`` returning ``(features, {task: output})``.

    Nothing here is training-specific, so it scripts, compiles, exports and saves like any model.
    """

    def __init__(self, backbone: Backbone | nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a MultiTaskModel needs at least one head")
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def forward_heads(self, features: Tensor) -> dict[str, Any]:
        """Every head applied to the same shared features."""
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        features = self.backbone(x)
        return features, self.forward_heads(features)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable backbone parameters, in a fixed order (the D of a [T, D] gradient buffer)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]
