"""The Backbone interface: the shared trunk every task head reads from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor, nn

from mtlkit.options import Options


class Backbone(nn.Module, ABC):
    """Maps an input batch to shared features ``[B, feature_dim]``.

    Built from validated options. ``data_config`` tells datasets how inputs should look
    (channels, size, normalisation), so a dataset never guesses what the trunk expects.
    """

    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else type(self).Options()

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Size of the pooled feature vector returned by ``forward``."""

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Return shared features ``[B, feature_dim]``."""

    def data_config(self) -> dict[str, Any]:
        """Preprocessing hints (``in_chans``, ``input_size``, ``mean``, ``std``); empty if none.

        ``fixed_input_size: False`` says ``input_size`` is only the size the model was designed
        at (a CNN takes any size), so datasets may keep their images' native size.
        """
        return {}

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the last shared layer (GradNorm-style weighters read their gradients)."""
        from mtlkit.architecture import last_layer

        return last_layer(self)
