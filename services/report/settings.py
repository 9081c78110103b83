"""Configuration of the report service, read from the function's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """The report function's environment: the tables, bucket and bus it reads and writes."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True)

    incidents_table: Annotated[str, Field(min_length=1, alias="INCIDENTS_TABLE")]
    approvals_table: Annotated[str, Field(min_length=1, alias="APPROVALS_TABLE")]
    blocks_table: Annotated[str, Field(min_length=1, alias="BLOCKS_TABLE")]
    reports_bucket: Annotated[str, Field(min_length=1, alias="REPORTS_BUCKET")]
    event_bus_name: Annotated[str, Field(min_length=1, alias="EVENT_BUS_NAME")]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Validate the environment; a missing variable is named in the error."""
        return cls.model_validate(dict(environ))
