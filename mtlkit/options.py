"""Base class for every component's options model (validated in the second config stage)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Options of a task, backbone, weighter or dataset; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
