"""Lambda entry points: decide what to do about a finding, and ask a person to approve it."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from cloud_sniper.domain.approvals import ApprovalRecord
from cloud_sniper.domain.models import Enrichment, Finding
from cloud_sniper.domain.policy import Policy, evaluate, load_policy
from cloud_sniper.domain.policy_parameter import read_parameter_value
from services.decide import adapters
from services.decide.approval_request import (
    ApprovalRequest,
    check_kept,
    new_record,
    notification,
    slack_message,
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
    """Store a pending approval and notify approvers; the execution waits for the answer.

    Escalated (nobody answered in time, and the policy escalates), the same approval waits
    again with the new task's token, and the escalation topic is notified instead.
    """
    request = ApprovalRequest.model_validate(event)
    settings = _approval_settings()
    now = datetime.now(UTC)
    record = new_record(request, now=now)
    logger.append_keys(approval_id=record.approval_id, incident_id=record.incident_id)

    if request.escalated:
        topic = settings.escalation_topic(record.approval_id)
        stored = _escalated(settings, record)
    else:
        topic = settings.approval_topic_arn
        stored = _stored(settings, record)
    if stored is None:
        return {"approval_id": record.approval_id}

    subject, message = notification(stored, now, settings.aws_region)
    adapters.publish(topic, subject, message)
    if settings.slack_webhook_secret is not None:
        _tell_slack(settings.slack_webhook_secret, slack_message(stored, now, settings.aws_region))
    if settings.thehive_url and settings.thehive_api_key_secret:
        _open_case(settings.thehive_url, settings.thehive_api_key_secret, request, stored, now)
    logger.info(
        "approval requested",
        extra={"expires_at": stored.expires_at.isoformat(), "escalated": request.escalated},
    )
    return {"approval_id": record.approval_id}


def _open_case(
    url: str, secret: str, request: ApprovalRequest, record: ApprovalRecord, now: datetime
) -> None:
    """Open the incident's TheHive case with a task for this approval; never fails the request.

    SNS is the channel of record: a TheHive that cannot be reached is logged, and the report
    step tries the case again when the execution ends.
    """
    # Imported here: thehive4py and requests weigh on every cold start otherwise.
    from services.decide import cases
    from services.report import thehive_adapter

    def api_key() -> str:
        return thehive_adapter.api_key_from_secret(thehive_adapter.secretsmanager_client(), secret)

    try:
        result = cases.open_case(request, record, thehive_adapter.TheHiveCases(url, api_key), now)
    except Exception as exc:  # noqa: BLE001 - any failure here must leave the approval standing
        logger.warning("TheHive case not opened", extra={"error": f"{type(exc).__name__}: {exc}"})
        return
    logger.info(
        "TheHive case opened",
        extra={
            "case_id": result.case_id,
            "case_created": result.created,
            "tasks_added": result.tasks_added,
        },
    )


def _stored(settings: ApprovalSettings, record: ApprovalRecord) -> ApprovalRecord | None:
    """The request stored; None where the table kept this very task's answer."""
    stored = adapters.store_approval(settings.approvals_table, record.item())
    if not stored.written:
        kept = stored.previous or {}
        check_kept(record, kept)
        logger.warning("approval already answered", extra={"status": kept.get("status")})
        return None
    if stored.previous is not None:
        # A retried request: the waiting task has a new token and a new timeout.
        logger.info("approval request renewed")
    return record


def _escalated(settings: ApprovalSettings, record: ApprovalRecord) -> ApprovalRecord | None:
    """The approval handed to its escalation; None where the table kept this task's answer."""
    escalated = adapters.escalate_approval(settings.approvals_table, record.item())
    if not escalated.written:
        check_kept(record, escalated.item)
        logger.warning("approval already answered", extra={"status": escalated.item["status"]})
        return None
    # The request stays the first one's: who was asked first, and when.
    requested_at = datetime.fromisoformat(escalated.item["requested_at"])
    return record.model_copy(update={"requested_at": requested_at})


def _tell_slack(secret_id: str, message: dict[str, Any]) -> None:
    """Post to Slack as well; the topic is the channel of record, so a failure here is logged."""
    try:
        adapters.post_webhook(adapters.slack_webhook_url(secret_id), message)
    except adapters.WebhookError as exc:
        logger.warning("slack notification failed", extra={"secret": secret_id, "error": str(exc)})
        return
    logger.info("slack notified")
