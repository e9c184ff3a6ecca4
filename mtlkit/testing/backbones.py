"""Conformance checks for a Backbone: the feature size, the data hints, the last shared layer.

The example input comes from ``data_config()["input_size"]`` (``(C, H, W)`` or ``(F,)``) unless
the author passes ``example_input``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlkit.backbone import Backbone
from mtlkit.testing._checks import Check, options_id, run_checks

OptionsLike = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class _BackboneCase:
    def __init__(self, cls: type[Backbone], options: OptionsLike,
                 example_input: Tensor | None, batch_size: int, seed: int) -> None:
        self.cls, self.options = cls, options
        self.example_input, self.batch_size, self.seed = example_input, batch_size, seed

    def make(self) -> Backbone:
        raw = self.options() if callable(self.options) else self.options
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.cls(self.cls.Options.model_validate(dict(raw)))

    def input(self, backbone: Backbone) -> Tensor:
        if self.example_input is not None:
            return self.example_input
        size = backbone.data_config().get("input_size")
        if not size:
            raise AssertionError(
                "data_config() gives no input_size: pass example_input to the kit"
            )
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.batch_size, *[int(s) for s in size], generator=gen)

    # --- the checks -----------------------------------------------------------------------------
    def features(self) -> None:
        """``forward`` returns finite floating features ``[B, feature_dim]``."""
        backbone = self.make()
        dim = backbone.feature_dim
        if not isinstance(dim, int) or dim <= 0:
            raise AssertionError(f"feature_dim must be a positive int, got {dim!r}")
        x = self.input(backbone)
        for mode in (True, False):
            backbone.train(mode)
            with torch.no_grad():
                z = backbone(x)
            expected = (x.shape[0], dim)
            if not isinstance(z, Tensor) or tuple(z.shape) != expected:
                shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
                raise AssertionError(
                    f"forward ({'train' if mode else 'eval'} mode) returned {shape}, expected"
                    f" {expected} (feature_dim {dim})"
                )
            if not z.is_floating_point() or not bool(torch.isfinite(z).all()):
                raise AssertionError("forward returned non-finite or non-floating features")

    def data_config(self) -> None:
        """``data_config()`` is a dict; the keys datasets read are well-typed and consistent."""
        cfg = self.make().data_config()
        if not isinstance(cfg, dict) or not all(isinstance(k, str) for k in cfg):
            raise AssertionError(f"data_config() must be a dict with str keys, got {cfg!r}")
        size = cfg.get("input_size")
        if size is not None:
            ok = isinstance(size, (tuple, list)) and len(size) in (1, 3) and all(
                isinstance(s, int) and s > 0 for s in size
            )
            if not ok:
                raise AssertionError(f"input_size must be (C, H, W) or (F,) positive ints: {size}")
        chans = cfg.get("in_chans")
        if chans is not None:
            if not isinstance(chans, int) or chans <= 0:
                raise AssertionError(f"in_chans must be a positive int, got {chans!r}")
            if size is not None and len(size) == 3 and size[0] != chans:
                raise AssertionError(f"in_chans {chans} disagrees with input_size {size}")
        n = chans if chans is not None else (size[0] if size is not None and len(size) == 3
                                             else None)
        for key in ("mean", "std"):
            value = cfg.get(key)
            if value is None:
                continue
            values = [value] if isinstance(value, (int, float)) else list(value)
            if not all(isinstance(v, (int, float)) for v in values):
                raise AssertionError(f"{key} must be numbers, got {value!r}")
            if len(values) != 1 and n is not None and len(values) != n:
                raise AssertionError(f"{key} has {len(values)} values for {n} channels")
            if key == "std" and not all(v > 0 for v in values):
                raise AssertionError(f"std must be > 0, got {value!r}")
        fixed = cfg.get("fixed_input_size")
        if fixed is not None and not isinstance(fixed, bool):
            raise AssertionError(f"fixed_input_size must be a bool, got {fixed!r}")

    def last_shared(self) -> None:
        """``last_shared_parameters()`` is a non-empty list of the backbone's own trainable
        parameters, and the features depend on them (GradNorm reads their gradients)."""
        backbone = self.make()
        last = backbone.last_shared_parameters()
        if not last:
            raise AssertionError("last_shared_parameters() is empty")
        own = {id(p) for p in backbone.parameters()}
        if any(id(p) not in own for p in last):
            raise AssertionError("last_shared_parameters() holds parameters not in parameters()")
        if not all(p.requires_grad for p in last):
            raise AssertionError("last_shared_parameters() holds frozen parameters")
        x = self.input(backbone)
        backbone.train()
        z = backbone(x)
        grads = torch.autograd.grad((z.float() ** 2).sum(), last, allow_unused=True)
        if all(g is None or not bool(g.any()) for g in grads):
            raise AssertionError("the features do not depend on last_shared_parameters()")


def backbone_checks(
    cls: type[Backbone],
    options: Sequence[OptionsLike] = ({},),
    *,
    example_input: Tensor | None = None,
    batch_size: int = 2,
    name: str | None = None,
    seed: int = 0,
) -> list[Check]:
    """Every conformance check of backbone class ``cls``, per options set: ``features``,
    ``data-config``, ``last-shared``."""
    label = name or cls.__name__
    out: list[Check] = []
    for opts in options:
        case = _BackboneCase(cls, opts, example_input, batch_size, seed)
        prefix = f"{label}{options_id(opts)}"
        out += [
            Check(f"{prefix}-features", case.features),
            Check(f"{prefix}-data-config", case.data_config),
            Check(f"{prefix}-last-shared", case.last_shared),
        ]
    return out


def check_backbone(
    cls: type[Backbone], options: Sequence[OptionsLike] = ({},), **kwargs: Any
) -> None:
    """Run :func:`backbone_checks`; raise one AssertionError naming every failed check."""
    name = kwargs.get("name") or cls.__qualname__
    run_checks(backbone_checks(cls, options, **kwargs), f"backbone {name}")


__all__ = ["backbone_checks", "check_backbone"]
