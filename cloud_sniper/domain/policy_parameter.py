"""The policy as its SSM parameter holds it: compact JSON, in the tier its size needs."""

from __future__ import annotations

import json

from cloud_sniper.domain.policy import Policy, PolicyError, parse_policy

# SSM Parameter Store's value limits, in bytes: a standard parameter holds 4 KB, an advanced 8 KB.
STANDARD_TIER_LIMIT = 4096
ADVANCED_TIER_LIMIT = 8192
STANDARD_TIER = "Standard"
ADVANCED_TIER = "Advanced"


def parameter_value(policy: Policy) -> str:
    """The policy as compact JSON, without the values that are defaults: it reads back the same.

    An advanced parameter holds 8 KB; the defaults left out are room for a SOC's own rules.
    """
    return json.dumps(policy.model_dump(mode="json", exclude_defaults=True), separators=(",", ":"))


def parameter_tier(value: str, source: str) -> str:
    """The tier a value needs: Standard up to 4 KB, Advanced up to 8 KB; larger is refused."""
    size = len(value.encode())
    if size <= STANDARD_TIER_LIMIT:
        return STANDARD_TIER
    if size <= ADVANCED_TIER_LIMIT:
        return ADVANCED_TIER
    raise PolicyError(
        f"{source}: the policy is {size} bytes as compact JSON, over the {ADVANCED_TIER_LIMIT} "
        "bytes an advanced SSM parameter holds; shorten descriptions or merge rules"
    )


def read_parameter_value(value: str, source: str) -> Policy:
    """Validate a policy read from the parameter; errors name the source and the field."""
    try:
        document = json.loads(value)
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    return parse_policy(document, source)
