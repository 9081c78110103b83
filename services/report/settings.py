"""Configuration of the report service, read from the function's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Settings(BaseModel):
    """The report function's environment: the tables, bucket and bus it reads and writes."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True)

    incidents_table: Annotated[str, Field(min_length=1, alias="INCIDENTS_TABLE")]
    approvals_table: Annotated[str, Field(min_length=1, alias="APPROVALS_TABLE")]
    blocks_table: Annotated[str, Field(min_length=1, alias="BLOCKS_TABLE")]
    reports_bucket: Annotated[str, Field(min_length=1, alias="REPORTS_BUCKET")]
    event_bus_name: Annotated[str, Field(min_length=1, alias="EVENT_BUS_NAME")]
    # The integrations: the stack sets these from the CDK context; unset, each is off.
    security_hub_updates: Annotated[bool, Field(alias="SECURITY_HUB_UPDATES")] = False
    thehive_url: Annotated[str | None, Field(alias="THEHIVE_URL")] = None
    # The name of the Secrets Manager secret holding TheHive's API key, never the key itself.
    thehive_api_key_secret: Annotated[str | None, Field(alias="THEHIVE_API_KEY_SECRET")] = None

    @model_validator(mode="after")
    def _thehive_complete(self) -> Settings:
        url, secret = self.thehive_url or None, self.thehive_api_key_secret or None
        if (url is None) != (secret is None):
            raise ValueError("THEHIVE_URL and THEHIVE_API_KEY_SECRET: set both or neither")
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError(f"THEHIVE_URL: not an http(s) URL ({url[:60]!r})")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Validate the environment; a missing variable is named in the error."""
        return cls.model_validate(dict(environ))


class SummarySettings(BaseModel):
    """The summary function's environment: the tables it reads, the bucket, the period."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True)

    incidents_table: Annotated[str, Field(min_length=1, alias="INCIDENTS_TABLE")]
    blocks_table: Annotated[str, Field(min_length=1, alias="BLOCKS_TABLE")]
    actions_table: Annotated[str, Field(min_length=1, alias="ACTIONS_TABLE")]
    reports_bucket: Annotated[str, Field(min_length=1, alias="REPORTS_BUCKET")]
    period_days: Annotated[int, Field(gt=0, alias="SUMMARY_PERIOD_DAYS")]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SummarySettings:
        """Validate the environment; a missing variable is named in the error."""
        return cls.model_validate(dict(environ))
