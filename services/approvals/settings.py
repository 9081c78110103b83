"""Settings of the approvals function, read from its environment at cold start."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from cloud_sniper.domain.environment import FunctionSettings
from services.approvals.access import check_role_pattern

# How long the function trusts what it read of IAM: a person added to the approvers group, or
# removed from it, is seen as such within this many seconds.
DEFAULT_MEMBERSHIP_MAX_AGE_SECONDS = 60


class Settings(FunctionSettings):
    """The approvals function's environment: the table, and who the approvers are."""

    approvals_table: Annotated[str, Field(min_length=1, alias="APPROVALS_TABLE")]
    approvers_group: Annotated[str, Field(min_length=1, alias="APPROVERS_GROUP")]
    # Role ARN patterns, comma separated; empty, no assumed role answers an approval.
    approver_role_patterns: Annotated[tuple[str, ...], Field(alias="APPROVER_ROLE_PATTERNS")] = ()
    membership_max_age_seconds: Annotated[int, Field(ge=0, alias="MEMBERSHIP_MAX_AGE_SECONDS")] = (
        DEFAULT_MEMBERSHIP_MAX_AGE_SECONDS
    )

    @field_validator("approver_role_patterns", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return tuple(check_role_pattern(pattern) for pattern in value)
