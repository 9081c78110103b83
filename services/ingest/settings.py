"""Configuration of the ingest service, read from the function's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class ReceiveSettings(BaseModel):
    """The receive function's environment: where executions start, where bad deliveries go."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True)

    state_machine_arn: Annotated[str, Field(min_length=1, alias="STATE_MACHINE_ARN")]
    quarantine_queue_url: Annotated[str, Field(min_length=1, alias="QUARANTINE_QUEUE_URL")]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ReceiveSettings:
        """Validate the environment; a missing variable is named in the error."""
        return cls.model_validate(dict(environ))
