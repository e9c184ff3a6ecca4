"""``mtan``: a shared trunk with per-task attention over every stage's features.

Liu, Johns and Davison (2019), *End-to-End Multi-Task Learning with Attention* (CVPR). Task t
follows the shared trunk stage by stage: at stage j its attention module reads the stage's
output ``f_j`` (and, after the first stage, its own previous attended features brought to
``f_j``'s size), and returns a soft mask ``a = sigmoid(...)`` in [0, 1] per channel and
position; ``a * f_j`` is what t takes from stage j. A 3x3 convolution block then carries it to
the next stage's width and size. The head reads the pooled last attended features.

Two departures from the paper, both so that the cut is clean: the mask is computed from the
stage's output rather than from a feature inside its last block, and the 3x3 blocks between
stages are each task's own (the reference code shares them across tasks; after the cut a
shared layer would get no per-task gradient on the representation path).

The cut is every stage's output: the representation is their per-sample flattenings,
concatenated. The last shared layer is the trunk's last layer.

Parameters, resnet18 (``in_chans: 1``) at T = 2, two 7-class heads: 1.47x ``hps`` (11.18 M);
each more task adds 0.24x.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlkit.architecture import Architecture, HeadSpec, last_layer
from mtlkit.errors import ConfigError
from mtlkit.options import Options
from mtlkit_arch.stages import feature_stages, pool


def _attention(c_in: int, c: int) -> nn.Module:
    """The paper's attention module: 1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid."""
    return nn.Sequential(
        nn.Conv2d(c_in, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.Sigmoid(),
    )


def _block(c_in: int, c_out: int) -> nn.Module:
    """The paper's shared-feature block f: 3x3 conv, BN, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TaskAttention(nn.Module):
    """One task's attention modules (one per stage) and the blocks between them."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.masks = nn.ModuleList(
            _attention(c if j == 0 else 2 * c, c) for j, c in enumerate(channels)
        )
        self.blocks = nn.ModuleList(
            _block(channels[j], channels[j + 1]) for j in range(len(channels) - 1)
        )

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        carried: Tensor | None = None
        attended = feats[0]
        for j, f in enumerate(feats):
            inp = f if carried is None else torch.cat([f, carried], dim=1)
            attended = self.masks[j](inp) * f
            if j < len(self.blocks):
                carried = F.adaptive_avg_pool2d(self.blocks[j](attended), feats[j + 1].shape[-2:])
        return pool(attended)


class MTAN(Architecture):
    """A shared trunk (the backbone's stages) and one :class:`TaskAttention` per task."""

    Options = Options

    def __init__(self, backbone: nn.Module, heads: Mapping[str, HeadSpec],
                 options: Options | None = None) -> None:
        super().__init__(backbone, heads, options)
        stages = feature_stages(backbone)
        flat = [n for n, s in zip(stages.names, stages.shapes) if len(s) != 3]
        if flat:
            raise ConfigError(
                f"architecture mtan needs spatial [B, C, H, W] stages; {', '.join(flat)} are not"
            )
        self.stages = nn.ModuleList(stages.modules)
        channels = [stages.channels(i) for i in range(len(stages.names))]
        self.attention = nn.ModuleDict({t: TaskAttention(channels) for t in heads})
        self.build_heads(heads, channels[-1])

    def trunk(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        return {t: self.heads[t](self.attention[t](parts)) for t in self.task_names}

    def task_modules(self, name: str) -> list[nn.Module]:
        return [self.heads[name], self.attention[name]]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return last_layer(self.stages)
