"""Base class for every component's options model (validated in the second config stage)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Options of a task, backbone, weighter or dataset; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resume_harmless: ClassVar[frozenset[str]] = frozenset()
    """Option names whose change never alters what a run computes (e.g. a data folder's path):
    ``--resume`` accepts a changed value without ``--allow-config-change``."""
