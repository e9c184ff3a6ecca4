"""``branch``: the trunk is shared up to a stage, each task owns a copy of the later stages.

The branch-cut model of Ming et al. (2019), *Dynamic Multi-Task Learning for Face Recognition
with Facial Expression*: identity and expression share the low-level stages and split where
they start to want different features. ``split_at`` is the last shared stage; at the last stage
the model is ``hps`` (every task then owns only the pooling and its head).

The cut is the trunk's output at the split, ``[B, C, H, W]``: the representation the weighters
see is that feature map flattened per sample (a view, no copy).

Parameters, resnet18 (``in_chans: 1``) at T = 2 with two 7-class linear heads, against ``hps``
(11.18 M): ``split_at: layer3`` 1.75x, ``layer2`` 1.94x, ``layer1`` 1.99x, ``act1`` 2.00x; each
more task adds the stages after the split again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from mtlkit.architecture import Architecture, HeadSpec, last_layer
from mtlkit_arch.stages import Init, SplitOptions, clone, feature_stages, pool


class BranchOptions(SplitOptions):
    """Options of ``branch``."""

    split_at: str | int = -2
    """The last shared stage, by name (``layer3``) or index (negative from the end; the default
    -2 shares all but the last stage)."""
    init: Init = "copy"
    """``copy``: every task's stages start from the backbone's weights (pretrained ones
    included); ``reset``: each task's copy is initialised afresh, apart from the others."""


class Branch(Architecture):
    """A shared trunk ``stages[:split + 1]``; per task, a copy of ``stages[split + 1:]``, global
    average pooling and its head."""

    Options = BranchOptions
    options: BranchOptions

    def __init__(self, backbone: nn.Module, heads: Mapping[str, HeadSpec],
                 options: BranchOptions | None = None) -> None:
        super().__init__(backbone, heads, options)
        stages = feature_stages(backbone)
        split = stages.index(self.options.split_at)
        n = len(stages.names)
        self.split_name = stages.names[split]
        self.shared = stages.segment(0, split + 1)
        tail = stages.segment(split + 1, n)
        self.branch = nn.ModuleDict({t: clone(tail, self.options.init) for t in heads})
        self.build_heads(heads, stages.channels(n - 1))

    def trunk(self, x: Tensor) -> list[Tensor]:
        return [self.shared(x)]

    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        z = parts[0]
        return {t: self.heads[t](pool(self.branch[t](z))) for t in self.task_names}

    def task_modules(self, name: str) -> list[nn.Module]:
        return [self.heads[name], self.branch[name]]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return last_layer(self.shared)
