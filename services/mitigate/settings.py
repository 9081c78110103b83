"""Configuration of the mitigate, expire and WAF writer functions, read from the environment."""

from __future__ import annotations

import os
from functools import cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud_sniper.domain import naming
from cloud_sniper.domain.nacl_rules import DEFAULT_ENTRY_LIMIT, RuleRange


class Settings(BaseModel):
    """The environment of the mitigate and expire functions."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    blocks_table: Annotated[str, Field(alias="BLOCKS_TABLE", min_length=1)]
    indicators_table: Annotated[str, Field(alias="INDICATORS_TABLE", min_length=1)]
    actions_table: Annotated[str, Field(alias="ACTIONS_TABLE", min_length=1)] = naming.ACTIONS_TABLE
    waf_scope: Annotated[Literal["REGIONAL", "CLOUDFRONT"], Field(alias="WAF_SCOPE")] = "REGIONAL"
    waf_ipv4_set_name: Annotated[str, Field(alias="WAF_IPV4_SET_NAME", min_length=1)] = (
        naming.WAF_IPV4_SET
    )
    waf_ipv6_set_name: Annotated[str, Field(alias="WAF_IPV6_SET_NAME", min_length=1)] = (
        naming.WAF_IPV6_SET
    )
    nacl_rule_range: Annotated[RuleRange, Field(alias="NACL_RULE_RANGE")] = RuleRange(50, 99)
    default_block_ttl_seconds: Annotated[int, Field(alias="DEFAULT_BLOCK_TTL_SECONDS", gt=0)] = (
        86400
    )
    # AWS's quota of rules per direction in one network ACL: 20 unless the account raised it.
    nacl_entry_limit: Annotated[int, Field(alias="NACL_ENTRY_LIMIT", ge=1, le=40)] = (
        DEFAULT_ENTRY_LIMIT
    )
    # The WAF writer's queue: its URL in the functions' environment; outside Lambda (the CLI) the
    # queue is found by its name.
    waf_changes_queue_url: Annotated[str | None, Field(alias="WAF_CHANGES_QUEUE_URL")] = None

    @field_validator("nacl_rule_range", mode="before")
    @classmethod
    def _parse_range(cls, value: object) -> object:
        return RuleRange.parse(value) if isinstance(value, str) else value


class WriterSettings(BaseModel):
    """The environment of the WAF writer function."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    blocks_table: Annotated[str, Field(alias="BLOCKS_TABLE", min_length=1)]
    waf_scope: Annotated[Literal["REGIONAL", "CLOUDFRONT"], Field(alias="WAF_SCOPE")]
    waf_ipv4_set_name: Annotated[str, Field(alias="WAF_IPV4_SET_NAME", min_length=1)]
    waf_ipv6_set_name: Annotated[str, Field(alias="WAF_IPV6_SET_NAME", min_length=1)]


@cache
def load_settings() -> Settings:
    """Read the settings once per cold start."""
    return Settings.model_validate(dict(os.environ))


@cache
def load_writer_settings() -> WriterSettings:
    """Read the WAF writer's settings once per cold start."""
    return WriterSettings.model_validate(dict(os.environ))
