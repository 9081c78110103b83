"""Lambda entry points: decide what to do about a finding, and ask a person to approve it."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from cloud_sniper.domain.models import Enrichment, Finding
from cloud_sniper.domain.policy import Policy, evaluate, load_policy
from cloud_sniper.domain.policy_parameter import read_parameter_value
from services.decide import adapters
from services.decide.approval_request import (
    ApprovalRequest,
    check_kept,
    new_record,
    notification,
)
from services.decide.safeguarding import safeguarded
from services.decide.settings import ApprovalSettings, DecideSettings

logger = Logger()


# Read at first use and kept for the life of the execution environment, as a cold start would.
@cache
def _decide_settings() -> DecideSettings:
    return DecideSettings.from_env()


@cache
def _approval_settings() -> ApprovalSettings:
    return ApprovalSettings.from_env()


@cache
def _policy(path: Path) -> Policy:
    return load_policy(path)


# Validated once per value the parameter holds: a warm function reads it again, not the rules.
@lru_cache(maxsize=4)
def _parameter_policy(value: str, name: str) -> Policy:
    policy = read_parameter_value(value, f"SSM parameter {name}")
    logger.info("policy loaded", extra={"parameter": name, "rules": len(policy.rules)})
    return policy


def _current_policy(settings: DecideSettings) -> Policy:
    """The deployed policy from its parameter; the bundled file only where none is named."""
    if settings.policy_parameter is None:
        return _policy(settings.policy_path)
    value = adapters.policy_parameter(settings.policy_parameter, settings.policy_max_age_seconds)
    return _parameter_policy(value, settings.policy_parameter)


@logger.inject_lambda_context(clear_state=True)
def decide(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Turn {"finding", "enrichment"} into a Decision."""
    finding = Finding.model_validate(event["finding"])
    enrichment = Enrichment.model_validate(event.get("enrichment") or {})
    logger.append_keys(finding_id=finding.id, finding_type=finding.type)

    settings = _decide_settings()
    policy = _current_policy(settings)
    decision = evaluate(policy, finding, enrichment, adapters.estate_addresses())
    decision = safeguarded(
        decision,
        finding,
        policy,
        budget_table=settings.budget_table,
        execution=event.get("execution") or finding.id,
        dry_run=bool(event.get("dry_run")),
    )

    logger.info(
        "decision made",
        extra={
            "mode": decision.mode.value,
            "rule": decision.rule,
            "actions": [action.id for action in decision.actions],
            "refusals": len(decision.refusals),
        },
    )
    return decision.model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def request_approval(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Store a pending approval and notify approvers; the execution waits for the answer."""
    request = ApprovalRequest.model_validate(event)
    settings = _approval_settings()
    record = new_record(request, now=datetime.now(UTC))
    logger.append_keys(approval_id=record.approval_id, incident_id=record.incident_id)

    stored = adapters.store_approval(settings.approvals_table, record.item())
    if not stored.written:
        kept = stored.previous or {}
        check_kept(record, kept)
        logger.warning("approval already answered", extra={"status": kept.get("status")})
        return {"approval_id": record.approval_id}
    if stored.previous is not None:
        # A retried request: the waiting task has a new token and a new timeout.
        logger.info("approval request renewed")
    subject, message = notification(record)
    adapters.publish(settings.approval_topic_arn, subject, message)

    logger.info("approval requested", extra={"expires_at": record.expires_at.isoformat()})
    return {"approval_id": record.approval_id}
