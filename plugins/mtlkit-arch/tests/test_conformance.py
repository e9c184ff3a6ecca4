"""Every architecture (and option variant) passes the conformance kit on the tiny CNN: the cut
is a cut, ownership a partition, every gradient path the summed-loss gradient."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mtlkit.testing import parametrize_checks
from mtlkit.testing.architectures import architecture_checks

from .conftest import ARCHS, VARIANTS, build, variant_id

X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))

CASES: list[tuple[str, dict[str, Any], int]] = [
    (name, opts, t) for name in ARCHS for i, opts in enumerate(VARIANTS.get(name, [{}]))
    for t in ((2, 3) if i == 0 else (2,))
]
"""Defaults at T = 2 and 3, the other variants at T = 2."""


def _checks() -> list[Any]:
    out = []
    for name, opts, t in CASES:
        tasks = tuple(f"t{i}" for i in range(t))
        out += architecture_checks(lambda n=name, o=opts, ts=tasks: build(n, o, ts), X,
                                   label=f"{variant_id(name, opts)}-T{t}")
    return out


@parametrize_checks(_checks())
def test_conformance(check: Any) -> None:
    check()


def test_every_registered_architecture_has_variants() -> None:
    """A new architecture must be added to VARIANTS (beyond its defaults) or it is only checked
    on its defaults; this names it."""
    assert set(ARCHS) <= set(VARIANTS), sorted(set(ARCHS) - set(VARIANTS))


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_single_task(name: str) -> None:
    """T = 1 builds and runs (cross-stitch then has one column and a unit of weight 1)."""
    _, out = build(name, VARIANTS[name][0], ("only",))(X)
    assert out["only"].shape == (4, 3)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_torch_export(name: str) -> None:
    """The forward has no side effect: every architecture exports and the program agrees."""
    model = build(name, VARIANTS[name][0]).eval()
    program = torch.export.export(model, (X,))
    got, want = program.module()(X)[1], model(X)[1]
    for task in want:
        assert torch.allclose(got[task], want[task], atol=1e-5), task
