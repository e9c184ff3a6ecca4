"""docs/architectures.md has one row per registered architecture, and the parameter ratios it
and the docstrings state are the ones the code builds (resnet18, in_chans 1, T = 2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from torch import nn

from .conftest import ARCHS

PAGE = Path(__file__).resolve().parents[3] / "docs" / "architectures.md"


def _rows() -> dict[str, str]:
    rows = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([a-z_]+)` \| .* \| ([0-9.]+)[^|]* \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_one_row_per_architecture() -> None:
    assert sorted(_rows()) == sorted(ARCHS)


@pytest.mark.slow
def test_parameter_ratios_as_documented() -> None:
    timm_backbone = pytest.importorskip("mtlkit_timm.backbone")

    def count(name: str) -> int:
        bb = timm_backbone.TimmBackbone(timm_backbone.TimmOptions(model_name="resnet18",
                                                                  in_chans=1))
        cls = ARCHS[name]
        model = cls(bb, {t: (lambda w: nn.Linear(w, 7)) for t in ("a", "b")}, cls.Options())
        return sum(p.numel() for p in model.parameters())

    base = count("hps")
    for name, ratio in _rows().items():
        got = f"{count(name) / base:.2f}"
        assert got == ratio, f"{name}: the page says {ratio}x hps, the code builds {got}x"
        doc = ARCHS[name].__doc__ or ""
        module_doc = __import__(ARCHS[name].__module__, fromlist=["_"]).__doc__ or ""
        if name != "hps":
            assert f"{ratio}x" in doc + module_doc, f"{name}'s docstring does not state {ratio}x"
