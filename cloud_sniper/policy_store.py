"""The deployed policy in its SSM parameter: validate a file and push it, or show what is there.

Runs outside Lambda (the CLI). Every function takes a boto3 Session, or anything with a
`client(service_name)` method, and uses only its SSM client.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cloud_sniper.domain import naming
from cloud_sniper.domain.policy import Policy, load_policy
from cloud_sniper.domain.policy_parameter import (
    ADVANCED_TIER,
    STANDARD_TIER,
    parameter_tier,
    parameter_value,
    read_parameter_value,
)


class PolicyStoreError(Exception):
    """The policy parameter cannot be read or written; the message names it and says why."""


@dataclass(frozen=True)
class PreparedPolicy:
    """A policy file validated and written as the parameter's value, with the tier it needs."""

    source: str
    policy: Policy
    value: str
    tier: str

    @property
    def size(self) -> int:
        return len(self.value.encode())


@dataclass(frozen=True)
class DeployedPolicy:
    """The policy the parameter holds, with the parameter's version and last change."""

    name: str
    policy: Policy
    version: int
    last_modified: datetime | None
    size: int


def prepare(path: str | Path) -> PreparedPolicy:
    """Validate a policy file (YAML or JSON) and size it for the parameter; PolicyError if not."""
    policy = load_policy(path)
    value = parameter_value(policy)
    return PreparedPolicy(str(path), policy, value, parameter_tier(value, str(path)))


def push(
    session: Any, prepared: PreparedPolicy, *, name: str = naming.POLICY_PARAMETER
) -> tuple[int, str]:
    """Overwrite the parameter with the prepared policy; returns its new version and tier."""
    ssm = session.client("ssm")
    tier = prepared.tier
    if tier == STANDARD_TIER and _current_tier(ssm, name) == ADVANCED_TIER:
        # SSM never moves a parameter back to the standard tier; asking for it is an error.
        tier = ADVANCED_TIER
    try:
        response = ssm.put_parameter(
            Name=name, Value=prepared.value, Type="String", Overwrite=True, Tier=tier
        )
    except ClientError as exc:
        raise PolicyStoreError(f"putting the policy into {name}: {_error_text(exc)}") from exc
    return int(response["Version"]), tier


def show(session: Any, *, name: str = naming.POLICY_PARAMETER) -> DeployedPolicy:
    """The policy the parameter holds, validated as the decide function validates it."""
    try:
        parameter = session.client("ssm").get_parameter(Name=name)["Parameter"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            raise PolicyStoreError(
                f"no parameter {name}: deploy CloudSniper-Decide, or push a policy with "
                "`cloud-sniper policy push FILE`"
            ) from exc
        raise PolicyStoreError(f"reading {name}: {_error_text(exc)}") from exc
    value = parameter["Value"]
    return DeployedPolicy(
        name=name,
        policy=read_parameter_value(value, f"SSM parameter {name}"),
        version=int(parameter["Version"]),
        last_modified=parameter.get("LastModifiedDate"),
        size=len(value.encode()),
    )


def _current_tier(ssm: Any, name: str) -> str | None:
    """The parameter's tier now, or None when it does not exist yet or may not be described."""
    try:
        found = ssm.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}]
        )["Parameters"]
    except ClientError as exc:
        # Pushing needs no ssm:DescribeParameters; without it, the put says if the tier is wrong.
        if exc.response.get("Error", {}).get("Code") == "AccessDeniedException":
            return None
        raise PolicyStoreError(f"describing {name}: {_error_text(exc)}") from exc
    return found[0].get("Tier") if found else None


def _error_text(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
