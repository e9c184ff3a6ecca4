"""Hard parameter sharing (``hps``): one backbone, one head per task; the core's built-in
architecture, beside its other built-in components (the others live in ``mtlkit-arch``).
``MultiTaskModel`` is also importable from :mod:`mtlkit`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from mtlkit.architecture import Architecture, HeadSpec
from mtlkit.backbone import Backbone
from mtlkit.options import Options


class MultiTaskModel(Architecture):
    """The whole backbone is shared; every head reads its pooled features ``[B, D]``.

    The architecture registered as ``hps``, and the default. The cut is the backbone's output,
    so the representation is exactly the features and the last shared layer the backbone's
    own :meth:`~mtlkit.Backbone.last_shared_parameters`. An ordinary ``nn.Module``: nothing here
    is training-specific, so it scripts, compiles, exports and saves like any model.
    """

    def __init__(
        self,
        backbone: Backbone | nn.Module,
        heads: Mapping[str, HeadSpec],
        options: Options | None = None,
    ) -> None:
        super().__init__(backbone, heads, options)
        self.backbone = backbone
        self.build_heads(heads, _feature_dim(backbone))

    def trunk(self, x: Tensor) -> list[Tensor]:
        return [self.backbone(x)]

    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        return self.forward_heads(parts[0])

    def task_modules(self, name: str) -> list[nn.Module]:
        return [self.heads[name]]

    def forward_shared(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward_tasks(self, z: Tensor) -> dict[str, Any]:
        return self.forward_heads(z)

    def forward_heads(self, features: Tensor) -> dict[str, Any]:
        """Every head applied to the same shared features."""
        return {name: head(features) for name, head in self.heads.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable backbone parameters, in a fixed order (the D of a [T, D] gradient buffer)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        last = getattr(self.backbone, "last_shared_parameters", None)
        if callable(last):
            return [p for p in last() if p.requires_grad]
        return super().last_shared_parameters()

    def representation_dim(self, example: Tensor) -> int:
        dim = _feature_dim(self.backbone)
        return dim if dim else super().representation_dim(example)


def _feature_dim(backbone: nn.Module) -> int:
    """The backbone's declared width (0 when it declares none: heads must then be built)."""
    return int(getattr(backbone, "feature_dim", 0) or 0)
