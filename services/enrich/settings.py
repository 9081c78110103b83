"""Configuration of the enrich service, read from the function's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """The enrich function's environment: the indicators table it reads and updates."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True)

    indicators_table: Annotated[str, Field(min_length=1, alias="INDICATORS_TABLE")]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Validate the environment; a missing variable is named in the error."""
        return cls.model_validate(dict(environ))
