"""The Architecture interface: how a backbone and the task heads form one multi-task model.

An architecture splits its forward into a shared part and one part per task, at a **cut**:

- ``trunk(x)`` runs every parameter used by two or more tasks and returns the cut, a list of
  tensors (batch first). Everything a task computes reads the input only through the cut.
- ``branches(parts)`` runs each task's own parameters (its head and whatever else only that task
  uses) on the cut and returns ``{task: output}``. No shared parameter may be used here.

The gradient engine needs nothing else, so it never looks at which architecture it runs:

- the **shared parameters** (the D of the ``[T, D]`` buffer) are every trainable parameter that
  is not some task's own (:meth:`Architecture.task_parameters`);
- the **shared representation** (the representation-gradient path and ``needs.features``) is the
  cut packed into one ``[B, N]`` tensor (:meth:`Architecture.forward_shared`): each part
  flattened per sample and concatenated, which is a view, not a copy, when the cut is one
  tensor. With hard sharing it is the pooled features ``[B, D]``; with a branch point, the
  tensor at the split; with a mixture of experts, the experts' outputs (and the gates' inputs);
- the **last shared layer** (GradNorm-style methods) is :meth:`last_shared_parameters`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mtlkit.options import Options

HeadSpec = nn.Module | Callable[[int], nn.Module]
"""A task's head, built already, or a function from the width it reads to the head (the
architecture knows that width only once it has built its trunk)."""


def pack(parts: Sequence[Tensor]) -> Tensor:
    """The cut as one ``[B, N]`` tensor: itself for one ``[B, N]`` part, a view for one part of
    any shape, a concatenation of per-sample flattenings for several."""
    if len(parts) == 1:
        return parts[0] if parts[0].ndim == 2 else parts[0].flatten(1)
    return torch.cat([p.flatten(1) for p in parts], dim=1)


def unpack(z: Tensor, shapes: Sequence[torch.Size]) -> list[Tensor]:
    """Inverse of :func:`pack` for per-sample ``shapes`` (views of ``z``)."""
    sizes = [math.prod(s) for s in shapes]
    if sum(sizes) != z.shape[1]:
        raise ValueError(
            f"representation of width {z.shape[1]} does not match the cut's parts {list(shapes)}"
            " (forward_tasks must follow forward_shared of the same batch)"
        )
    chunks = z.split(sizes, dim=1) if len(sizes) > 1 else (z,)
    return [c.reshape(z.shape[0], *s) for c, s in zip(chunks, shapes)]


def own_parameters(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    """Trainable parameters of ``modules``, each once, in order."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def last_layer(module: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of the last submodule (registration order) that owns any."""
    params: list[nn.Parameter] = []
    for m in module.modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if own:
            params = own
    return params


class Architecture(nn.Module, ABC):
    """A multi-task model: ``forward(x) -> (representation [B, N], {task: output})``.

    Subclasses are built as ``cls(backbone, heads, options)``: ``heads`` maps each task name, in
    task order, to a :data:`HeadSpec`; :meth:`build_heads` turns it into ``self.heads``. They
    implement :meth:`trunk`, :meth:`branches` and :meth:`task_modules`; the rest follows.
    """

    Options: ClassVar[type[Options]] = Options
    heads: nn.ModuleDict

    def __init__(
        self,
        backbone: nn.Module,
        heads: Mapping[str, HeadSpec],
        options: Options | None = None,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError(f"a {type(self).__name__} needs at least one head")
        self.options = options if options is not None else type(self).Options()
        self._task_names = list(heads)
        self._shapes: list[torch.Size] = []

    @property
    def task_names(self) -> list[str]:
        return list(self._task_names)

    def build_heads(self, heads: Mapping[str, HeadSpec], width: int | Mapping[str, int]) -> None:
        """``self.heads`` from specs: a factory is called with the width its task reads."""
        built: dict[str, nn.Module] = {}
        for name, spec in heads.items():
            w = width if isinstance(width, int) else width[name]
            built[name] = spec if isinstance(spec, nn.Module) else spec(w)
        self.heads = nn.ModuleDict(built)

    # --- what an architecture implements -----------------------------------------------------
    @abstractmethod
    def trunk(self, x: Tensor) -> list[Tensor]:
        """The shared computation; returns the cut (batch-first tensors)."""

    @abstractmethod
    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        """Each task's output from the cut, using only that task's own parameters."""

    @abstractmethod
    def task_modules(self, name: str) -> list[nn.Module]:
        """The modules only task ``name`` uses (its head first); their parameters are its own."""

    # --- derived -----------------------------------------------------------------------------
    def forward_shared(self, x: Tensor) -> Tensor:
        """The shared representation ``[B, N]``: the cut, packed (see the module docstring)."""
        parts = self.trunk(x)
        self._shapes = [p.shape[1:] for p in parts]
        return pack(parts)

    def forward_tasks(self, z: Tensor) -> dict[str, Any]:
        """Every task's output from a representation returned by :meth:`forward_shared` (or a
        detached copy of it: the representation-gradient path differentiates w.r.t. it)."""
        return self.branches(unpack(z, self._shapes))

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        # the same as forward_tasks(forward_shared(x)), without storing the cut's shapes on the
        # module, so the forward has no side effect (torch.export, torch.compile)
        parts = self.trunk(x)
        z = pack(parts)
        return z, self.branches(unpack(z, [p.shape[1:] for p in parts]))

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        """Trainable parameters only task ``name`` uses, in a fixed order."""
        return own_parameters(self.task_modules(name))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter that is no task's own, in a fixed order (the D of a
        ``[T, D]`` gradient buffer)."""
        own = {id(p) for n in self._task_names for p in self.task_parameters(n)}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in own]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer, for GradNorm-style weighters. The default: the last module,
        in registration order, whose own parameters are all shared; override where the order
        of registration is not the order of computation."""
        shared = {id(p) for p in self.shared_parameters()}
        params: list[nn.Parameter] = []
        for m in self.modules():
            own = [p for p in m.parameters(recurse=False) if p.requires_grad]
            if own and all(id(p) in shared for p in own):
                params = own
        return params

    @torch.no_grad()
    def representation_dim(self, example: Tensor) -> int:
        """N of the representation for inputs like ``example`` (one dry forward in eval mode;
        the width depends on the input's size where the cut is a feature map)."""
        was_training = self.training
        self.eval()
        try:
            return int(self.forward_shared(example[:1]).shape[1])
        finally:
            self.train(was_training)
