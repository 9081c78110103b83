"""Settings of the beacons function, read from its environment at cold start."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cloud_sniper.domain.environment import FunctionSettings


class Settings(FunctionSettings):
    """Where the flow logs are queried, over what window, and where the findings go."""

    workgroup: Annotated[str, Field(min_length=1, alias="ATHENA_WORKGROUP")]
    database: Annotated[str, Field(min_length=1, alias="GLUE_DATABASE")]
    table: Annotated[str, Field(min_length=1, alias="FLOW_LOGS_TABLE")]
    event_bus_name: Annotated[str, Field(min_length=1, alias="EVENT_BUS_NAME")]
    # Each run scans this many hours back from its scheduled time.
    window_hours: Annotated[int, Field(ge=1, le=744, alias="WINDOW_HOURS")]
    min_score: Annotated[float, Field(ge=0.0, le=1.0, alias="MIN_SCORE")]
    # At most this many findings a run, the best first: a flood would bury the approvals.
    max_findings: Annotated[int, Field(ge=1, le=1000, alias="MAX_FINDINGS")]
    poll_seconds: Annotated[float, Field(gt=0, le=60, alias="POLL_SECONDS")] = 2.0
