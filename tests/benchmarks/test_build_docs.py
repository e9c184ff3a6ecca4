"""benchmarks/build_docs.py: every CK+48 section of the benchmarks page that reports verification
says which pair protocol its numbers used (issue 23)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _sections() -> dict[str, str]:
    text = (REPO / "docs" / "benchmarks.md").read_text()
    parts = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    return {p.split("\n", 1)[0]: p for p in parts}


def test_ck48_sections_name_their_pair_protocol() -> None:
    ck48 = {title: body for title, body in _sections().items() if title.startswith("CK+48")}
    reporting = {t: b for t, b in ck48.items() if re.search(r"verification(?: acc|_accuracy)", b)}
    assert len(reporting) >= 8
    for title, body in reporting.items():
        said = "round-robin" in body or "verification_accuracy_cross_sequence" in body
        assert said, f"section {title!r} does not say which verification pair protocol it used"
