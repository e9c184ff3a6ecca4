"""``cross_stitch``: one trunk per task, mixed linearly after chosen stages.

Misra et al. (2016), *Cross-stitch Networks for Multi-task Learning* (CVPR). Each task has its
own copy of the backbone's stages; after each stage in ``after``, a cross-stitch unit replaces
task t's feature map by ``sum_s alpha_ts x_s``, one learned scalar per pair of tasks (the paper's
form), initialised to ``self_weight`` on the diagonal and the rest spread evenly.

What is shared: every column's stages up to the last unit and every unit but the last, since
through the mixing each feeds every task. Task t owns the row of the last unit that makes its
own input, its column's later stages and its head. The cut is the columns' outputs at the last
unit's stage, stacked ``[B, T, C, H, W]``: the representation the weighters see, whose
per-task gradients overlap through the last unit's rows.

Parameters, resnet18 (``in_chans: 1``) at T = 2, two 7-class heads, units after act1 and layer1
to layer3: 2.00x ``hps`` (11.18 M); T columns in general.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from mtlkit.architecture import Architecture, HeadSpec, last_layer
from mtlkit.options import Options
from mtlkit_arch.stages import Init, StageRef, clone, feature_stages, pool


class CrossStitchOptions(Options):
    """Options of ``cross_stitch``."""

    after: list[StageRef] | None = None
    """Stages followed by a cross-stitch unit, by name or index; None: every stage but the
    last."""
    init: Init = "copy"
    """``copy``: every column starts from the backbone's weights (the paper starts both from one
    pretrained network); ``reset``: each column is initialised afresh."""
    self_weight: float = Field(0.9, ge=0, le=1)
    """alpha_tt at initialisation; the other tasks share ``1 - self_weight`` evenly."""


class MixRow(nn.Module):
    """One task's row of a cross-stitch unit: its weights over every task's feature map."""

    def __init__(self, num_tasks: int, own: int, self_weight: float) -> None:
        super().__init__()
        other = (1.0 - self_weight) / (num_tasks - 1) if num_tasks > 1 else 0.0
        alpha = torch.full((num_tasks,), other)
        alpha[own] = self_weight if num_tasks > 1 else 1.0
        self.alpha = nn.Parameter(alpha)

    def forward(self, stacked: Tensor) -> Tensor:
        """``[B, T, ...] -> [B, ...]``."""
        w = self.alpha.to(stacked.dtype).reshape(1, -1, *([1] * (stacked.ndim - 2)))
        return (w * stacked).sum(1)


class CrossStitch(Architecture):
    """T columns (copies of the backbone's stages) with cross-stitch units after ``after``."""

    Options = CrossStitchOptions
    options: CrossStitchOptions

    def __init__(self, backbone: nn.Module, heads: Mapping[str, HeadSpec],
                 options: CrossStitchOptions | None = None) -> None:
        super().__init__(backbone, heads, options)
        o = self.options
        stages = feature_stages(backbone)
        n = len(stages.names)
        refs = o.after if o.after is not None else list(range(n - 1))
        after = sorted({stages.index(r, "after") for r in refs})
        if not after:
            from mtlkit.errors import ConfigError

            raise ConfigError(
                "after: a cross-stitch network needs at least one unit; choose stages among"
                f" {', '.join(stages.names)}"
            )
        self.after = after
        self.last_unit = after[-1]
        t = len(heads)
        self.columns = nn.ModuleList(
            nn.ModuleList(clone(m, o.init) for m in stages.modules) for _ in range(t)
        )
        self.units = nn.ModuleList(
            nn.ModuleList(MixRow(t, i, o.self_weight) for i in range(t)) for _ in after
        )
        self.build_heads(heads, stages.channels(n - 1))

    def _mix(self, unit: nn.ModuleList, xs: list[Tensor]) -> list[Tensor]:
        stacked = torch.stack(xs, dim=1)
        return [row(stacked) for row in unit]

    def trunk(self, x: Tensor) -> list[Tensor]:
        xs = [x] * len(self.columns)
        for j in range(self.last_unit + 1):
            xs = [col[j](h) for col, h in zip(self.columns, xs)]
            if j in self.after and j != self.last_unit:
                xs = self._mix(self.units[self.after.index(j)], xs)
        return [torch.stack(xs, dim=1)]

    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        stacked = parts[0]
        out = {}
        for i, name in enumerate(self.task_names):
            h = self.units[-1][i](stacked)
            for stage in list(self.columns[i])[self.last_unit + 1:]:
                h = stage(h)
            out[name] = self.heads[name](pool(h))
        return out

    def task_modules(self, name: str) -> list[nn.Module]:
        i = self.task_names.index(name)
        return [self.heads[name], self.units[-1][i],
                *list(self.columns[i])[self.last_unit + 1:]]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [p for col in self.columns for p in last_layer(col[self.last_unit])]
