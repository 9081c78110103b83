"""Settings of the decide and request-approval functions, read from the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, ValidationError

import cloud_sniper
from cloud_sniper.domain.models import Model

# The bundle's root, where a relative POLICY_FILE is read whatever the working directory:
# LAMBDA_TASK_ROOT (/var/task in Lambda; the function's staged asset in the local runtime),
# else the folder this code was imported from.
IMPORT_ROOT = Path(cloud_sniper.__file__).resolve().parent.parent
DEFAULT_POLICY_FILE = "cloud_sniper/data/policy.json"
# How long a warm function keeps the policy parameter's value before reading it again: a pushed
# policy decides within this many seconds.
DEFAULT_POLICY_MAX_AGE_SECONDS = 300

Required = Annotated[str, Field(min_length=1)]


class EnvSettings(Model):
    """Settings whose fields are environment variables of the same name, upper-cased."""

    @classmethod
    def from_env(cls) -> Self:
        """Read the settings from os.environ; the error names the variables at fault."""
        values = {
            name: os.environ[name.upper()]
            for name in cls.model_fields
            if name.upper() in os.environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            names = ", ".join(str(error["loc"][0]).upper() for error in exc.errors())
            raise ValueError(f"invalid or missing environment variables: {names}") from exc


class DecideSettings(EnvSettings):
    """The decide function's settings."""

    # The SSM parameter holding the deployed policy. Only where it is unset (the unit tests, the
    # handler run outside AWS) is the bundle's POLICY_FILE read; a failed read never falls back.
    policy_parameter: Required | None = None
    policy_max_age_seconds: Annotated[int, Field(ge=0)] = DEFAULT_POLICY_MAX_AGE_SECONDS
    policy_file: Required = DEFAULT_POLICY_FILE
    # The table counting each hour's automatic actions. Unset (the handler run outside AWS), no
    # hourly budget is kept, and each decision says so in the logs; the blast radius still holds.
    budget_table: Required | None = None

    @property
    def policy_path(self) -> Path:
        root = os.environ.get("LAMBDA_TASK_ROOT")
        return (Path(root) if root else IMPORT_ROOT) / self.policy_file


class ApprovalSettings(EnvSettings):
    """The request-approval function's settings."""

    approvals_table: Required
    approval_topic_arn: Required
    # Where an approval nobody answered in time is asked once more, when the policy escalates it.
    escalation_topic_arn: Required | None = None
    # The region the function runs in (Lambda sets it): the answer commands name it.
    aws_region: Required
    # The name of the Secrets Manager secret holding a Slack incoming webhook's URL; unset,
    # nothing goes to Slack. The URL itself never sits in the environment.
    slack_webhook_secret: Required | None = None
    # TheHive's URL and the name of the secret holding its API key; unset, no case is opened.
    thehive_url: Required | None = None
    thehive_api_key_secret: Required | None = None

    def escalation_topic(self, approval_id: str) -> str:
        """The escalation topic's ARN; unset, an escalation cannot be sent and says why."""
        if self.escalation_topic_arn is None:
            raise ValueError(
                f"approval {approval_id} is to be escalated but ESCALATION_TOPIC_ARN is unset"
            )
        return self.escalation_topic_arn
