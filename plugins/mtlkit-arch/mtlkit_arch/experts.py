"""Mixtures of experts: ``mmoe`` (Ma et al. 2018), ``cgc`` and ``ple`` (Tang et al. 2020).

Every expert is a copy of the backbone's stages after ``split_at``, run on the shared stem
(``stages[:split_at + 1]``); a gate is a linear layer on the globally pooled input of its level,
followed by a softmax over the experts it mixes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from mtlkit.architecture import Architecture, HeadSpec, last_layer
from mtlkit.errors import ConfigError
from mtlkit_arch.stages import (
    ExpertOptions,
    StageRef,
    Stages,
    clone,
    feature_stages,
    gate,
    mix,
    pool,
)


def _stem_and_rest(stages: Stages, split_at: StageRef) -> tuple[int, int]:
    split = stages.index(split_at)
    n = len(stages.names)
    if split == n - 1:
        raise ConfigError(
            f"split_at: {split_at!r} is the last stage ({stages.names[-1]}), which leaves the"
            f" experts no stage; choose one of {', '.join(stages.names[:-1])}"
        )
    return split, n


def _experts(segment: nn.Module, count: int, options: ExpertOptions) -> nn.ModuleList:
    return nn.ModuleList([clone(segment, options.expert_init) for _ in range(count)])


class MMoEOptions(ExpertOptions):
    """Options of ``mmoe``."""

    num_experts: int = Field(3, ge=1)
    """K: experts shared by every task."""


class MMoE(Architecture):
    """Multi-gate mixture of experts: Ma et al. (2018), *Modeling Task Relationships in
    Multi-task Learning with Multi-gate Mixture-of-Experts* (KDD).

    K experts (copies of the stages after ``split_at``) on a shared stem; task t's input is
    ``sum_k g_t(x)_k E_k(x)`` with ``g_t = softmax(W_t pool(stem(x)))``. Every expert serves every
    task, so all are shared; a task owns its gate and head. The cut is the gates' input and the
    experts' pooled outputs: the representation is ``[pool(stem), E_1, ..., E_K]`` (``[B, C_stem
    + K D]``), the last shared layer the last layer of every expert.

    Parameters, resnet18 (``in_chans: 1``) at T = 2, two 7-class heads, ``split_at: act1``,
    K = 3: 3.00x ``hps`` (11.18 M).
    """

    Options = MMoEOptions
    options: MMoEOptions

    def __init__(self, backbone: nn.Module, heads: Mapping[str, HeadSpec],
                 options: MMoEOptions | None = None) -> None:
        super().__init__(backbone, heads, options)
        stages = feature_stages(backbone)
        split, n = _stem_and_rest(stages, self.options.split_at)
        self.stem = stages.segment(0, split + 1)
        self.experts = _experts(stages.segment(split + 1, n), self.options.num_experts,
                                self.options)
        c = stages.channels(split)
        self.gates = nn.ModuleDict({t: nn.Linear(c, self.options.num_experts) for t in heads})
        self.build_heads(heads, stages.channels(n - 1))

    def trunk(self, x: Tensor) -> list[Tensor]:
        h = self.stem(x)
        return [pool(h), torch.stack([pool(e(h)) for e in self.experts], dim=1)]

    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        g_in, experts = parts
        t_ = self.options.gate_temperature
        return {t: self.heads[t](mix(gate(self.gates[t](g_in), t_), experts))
                for t in self.task_names}

    def task_modules(self, name: str) -> list[nn.Module]:
        return [self.heads[name], self.gates[name]]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [p for e in self.experts for p in last_layer(e)]


class CGCOptions(ExpertOptions):
    """Options of ``cgc``."""

    num_shared: int = Field(1, ge=1)
    """Experts shared by every task."""
    num_specific: int = Field(1, ge=1)
    """Experts of each task's own."""


class PLEOptions(CGCOptions):
    """Options of ``ple``."""

    levels: list[StageRef] | None = None
    """The last stage of each extraction level but the last (which ends at the last stage);
    None: two levels, the stages after ``split_at`` halved."""


class PLE(Architecture):
    """Progressive layered extraction: Tang et al. (2020), *Progressive Layered Extraction
    (PLE): A Novel Multi-Task Learning (MTL) Model for Personalized Recommendations* (RecSys).

    The stages after ``split_at`` are cut into levels. At each level, shared experts and each
    task's own experts (copies of that level's stages) run; task t's gate mixes the shared
    experts with t's own, and below the last level a shared gate mixes every expert into the
    next level's shared input. Below the last level everything feeds the shared gate, so only
    each task's last-level experts, its last two gates and its head are its own.

    The cut, below which everything is shared: with one level (``cgc``) the stem's output and
    the shared experts' pooled outputs; with more, the task gates' pooled inputs, every
    expert's output at the level below the last, and the last level's shared experts' pooled
    outputs. The last shared layer is the last layer of every shared last-level expert.

    Parameters, resnet18 (``in_chans: 1``) at T = 2, two 7-class heads, ``split_at: act1``, one
    shared and one own expert per task: 2 levels 3.00x ``hps`` (11.18 M).
    """

    Options = PLEOptions
    options: PLEOptions

    def __init__(self, backbone: nn.Module, heads: Mapping[str, HeadSpec],
                 options: PLEOptions | None = None) -> None:
        super().__init__(backbone, heads, options)
        o = self.options
        stages = feature_stages(backbone)
        split, n = _stem_and_rest(stages, o.split_at)
        ends = self._level_ends(stages, split, n)
        self.stem = stages.segment(0, split + 1)
        starts = [split + 1, *[e + 1 for e in ends[:-1]]]
        tasks = list(heads)
        t = len(tasks)
        self.shared_experts = nn.ModuleList()
        self.task_experts = nn.ModuleList()
        self.task_gates = nn.ModuleList()
        self.shared_gates = nn.ModuleList()
        for level, (a, b) in enumerate(zip(starts, ends)):
            seg = stages.segment(a, b + 1)
            c_in = stages.channels(a - 1)
            self.shared_experts.append(_experts(seg, o.num_shared, o))
            self.task_experts.append(
                nn.ModuleDict({k: _experts(seg, o.num_specific, o) for k in tasks}))
            self.task_gates.append(
                nn.ModuleDict({k: nn.Linear(c_in, o.num_shared + o.num_specific) for k in tasks}))
            if level < len(ends) - 1:
                self.shared_gates.append(nn.Linear(c_in, o.num_shared + t * o.num_specific))
        self.build_heads(heads, stages.channels(n - 1))

    def _level_ends(self, stages: Stages, split: int, n: int) -> list[int]:
        levels = getattr(self.options, "levels", None)
        if levels is None:
            rest = n - 1 - split
            if rest >= 2 and type(self).Options is PLEOptions:
                return [split + rest // 2, n - 1]
            return [n - 1]
        ends = [stages.index(r, "levels") for r in levels]
        bad = [stages.names[e] for e in ends if e <= split or e >= n - 1]
        if bad or ends != sorted(set(ends)):
            raise ConfigError(
                f"levels: {levels!r} must be increasing stages after split_at"
                f" ({stages.names[split]}) and before the last one; choose among"
                f" {', '.join(stages.names[split + 1:-1]) or '(none: use cgc)'}"
            )
        return [*ends, n - 1]

    # --- forward ------------------------------------------------------------------------------
    def _gate(self, linear: nn.Module, inp: Tensor, experts: Tensor) -> Tensor:
        return mix(gate(linear(pool(inp)), self.options.gate_temperature), experts)

    def _run(self, experts: nn.ModuleList, x: Tensor, last: bool) -> list[Tensor]:
        return [pool(e(x)) if last else e(x) for e in experts]

    def trunk(self, x: Tensor) -> list[Tensor]:
        h = self.stem(x)
        levels = len(self.shared_experts)
        tasks = self.task_names
        if levels == 1:
            shared = torch.stack(self._run(self.shared_experts[0], h, True), dim=1)
            return [h, shared]
        ins = {k: h for k in tasks}
        shared_in = h
        for level in range(levels - 1):
            s_out = self._run(self.shared_experts[level], shared_in, False)
            own = {k: self._run(self.task_experts[level][k], ins[k], False) for k in tasks}
            if level == levels - 2:
                gate_ins = torch.stack([pool(ins[k]) for k in tasks], dim=1)
                everyone = [o for k in tasks for o in own[k]]
                shared_in = self._gate(self.shared_gates[level], shared_in,
                                       torch.stack(s_out + everyone, dim=1))
                last_shared = torch.stack(self._run(self.shared_experts[-1], shared_in, True),
                                          dim=1)
                return [gate_ins, torch.stack(s_out, dim=1),
                        torch.stack([torch.stack(own[k], dim=1) for k in tasks], dim=1),
                        last_shared]
            everyone = [o for k in tasks for o in own[k]]
            new_shared = self._gate(self.shared_gates[level], shared_in,
                                    torch.stack(s_out + everyone, dim=1))
            ins = {k: self._gate(self.task_gates[level][k], ins[k],
                                 torch.stack(s_out + own[k], dim=1)) for k in tasks}
            shared_in = new_shared
        raise AssertionError("unreachable")

    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        out = {}
        temp = self.options.gate_temperature
        for i, k in enumerate(self.task_names):
            if len(parts) == 2:
                h, shared = parts
            else:
                gate_ins, s_prev, own_prev, shared = parts
                experts = torch.cat([s_prev, own_prev[:, i]], dim=1)
                weights = gate(self.task_gates[-2][k](gate_ins[:, i]), temp)
                h = mix(weights, experts)
            own = torch.stack(self._run(self.task_experts[-1][k], h, True), dim=1)
            mixed = self._gate(self.task_gates[-1][k], h, torch.cat([shared, own], dim=1))
            out[k] = self.heads[k](mixed)
        return out

    def task_modules(self, name: str) -> list[nn.Module]:
        mods: list[nn.Module] = [self.heads[name], self.task_experts[-1][name],
                                 self.task_gates[-1][name]]
        if len(self.task_gates) > 1:
            mods.append(self.task_gates[-2][name])
        return mods

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [p for e in self.shared_experts[-1] for p in last_layer(e)]


class CGC(PLE):
    """Customized gate control: one level of :class:`PLE` (Tang et al. 2020, RecSys): shared
    experts and each task's own experts on the shared stem, task t's gate mixing the shared
    experts with t's own. A task owns its experts, its gate and its head.

    The cut is the stem's output (the tasks' experts read it) and the shared experts' pooled
    outputs; the last shared layer is the last layer of every shared expert.

    Parameters, resnet18 (``in_chans: 1``) at T = 2, two 7-class heads, ``split_at: act1``, one
    shared and one own expert per task: 3.00x ``hps`` (11.18 M).
    """

    Options = CGCOptions
    options: CGCOptions  # type: ignore[assignment]
