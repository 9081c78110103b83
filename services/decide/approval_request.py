"""An approval request: the record kept in the approvals table and the notification sent."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cloud_sniper.domain import naming
from cloud_sniper.domain.approvals import ApprovalRecord, FindingSummary
from cloud_sniper.domain.models import (
    ApprovalStatus,
    Decision,
    Finding,
    Indicator,
    Mode,
    Model,
    PlannedAction,
    Resource,
)
from cloud_sniper.domain.policy import format_duration

# SNS refuses a subject longer than this.
SUBJECT_LIMIT = 100


class ApprovalConflictError(Exception):
    """The table holds the execution's approval in a state a new request cannot take over."""


class ApprovalRequest(Model):
    """The request-approval function's input: the waiting task's token and what to approve."""

    token: str
    finding: Finding
    decision: Decision
    incident_id: str
    execution_name: str


def new_record(request: ApprovalRequest, now: datetime) -> ApprovalRecord:
    """The pending approval for a request, expiring when the waiting task times out.

    Its id comes from the execution, so a retried request (a new task, a new token) names the
    same approval and replaces the one still pending.
    """
    decision = request.decision
    if decision.mode != Mode.APPROVAL or not decision.approval_timeout_seconds:
        raise ValueError(
            f"decision mode {decision.mode} with approval timeout "
            f"{decision.approval_timeout_seconds}: nothing to approve"
        )
    finding = request.finding
    return ApprovalRecord(
        approval_id=naming.approval_id(request.execution_name),
        token=request.token,
        status=ApprovalStatus.PENDING,
        incident_id=request.incident_id,
        execution_name=request.execution_name,
        finding=FindingSummary(
            id=finding.id,
            type=finding.type,
            severity=finding.severity,
            severity_label=finding.severity_label,
            title=finding.title,
            account_id=finding.account_id,
            region=finding.region,
            resource=finding.resource,
            indicators=finding.indicators,
        ),
        rule=decision.rule,
        decision_reason=decision.reason,
        actions=decision.actions,
        refusals=decision.refusals,
        requested_at=now,
        expires_at=now + timedelta(seconds=decision.approval_timeout_seconds),
    )


def check_kept(record: ApprovalRecord, kept: Mapping[str, Any]) -> None:
    """Accept the approval the table kept instead of this request only if it answered this task.

    The kept one was answered (or timed out) already. For this very task that answer stands;
    for a new task (a retried request) no answer can come any more, so waiting would only end
    in a timeout: the request fails instead, for the report to say why.
    """
    if kept.get("execution_name") != record.execution_name:
        raise ApprovalConflictError(
            f"approval {record.approval_id} belongs to execution {kept.get('execution_name')}, "
            f"not {record.execution_name}"
        )
    if kept.get("token") != record.token:
        raise ApprovalConflictError(
            f"approval {record.approval_id} is already {kept.get('status')}: the retried request "
            f"of execution {record.execution_name} cannot be answered any more"
        )


def notification(record: ApprovalRecord) -> tuple[str, str]:
    """The subject and text sent to approvers; the task token never appears in them."""
    finding = record.finding
    subject = f"Cloud Sniper approval {record.approval_id}: {finding.type}"
    lines = [
        "Cloud Sniper asks for an approval before acting on a finding.",
        "",
        f"Approval:  {record.approval_id}",
        f"Finding:   {finding.type}, severity {finding.severity:g} ({finding.severity_label})",
    ]
    if finding.title:
        lines.append(f"           {finding.title}")
    lines += [
        f"Resource:  {_resource(finding.resource)}",
        f"Account:   {finding.account_id} in {finding.region}",
        f"Decision:  {record.decision_reason}",
        "",
        "Indicators:",
        *(f"  - {_indicator(indicator)}" for indicator in finding.indicators),
        "",
        "Planned actions:",
        *(f"  - {_action(action)}" for action in record.actions),
    ]
    if record.refusals:
        lines += [
            "",
            "Refused by the safety rules:",
            *(f"  - {r.kind} {r.target}: {r.reason}" for r in record.refusals),
        ]
    lines += [
        "",
        f"Expires:   {_time(record.expires_at)}; unanswered, nothing is done.",
        f"Incident:  {record.incident_id} (execution {record.execution_name})",
        "",
        "Answer with:",
        f"  cloud-sniper approvals approve {record.approval_id} --reason TEXT",
        f"  cloud-sniper approvals deny {record.approval_id} --reason TEXT",
    ]
    return _subject(subject), "\n".join(lines) + "\n"


def _subject(text: str) -> str:
    # SNS takes a subject of printable ASCII only, on one line.
    ascii_text = text.encode("ascii", "replace").decode().replace("\n", " ")
    return ascii_text[:SUBJECT_LIMIT]


def _resource(resource: Resource) -> str:
    name = (
        resource.instance_id
        or resource.access_key_id
        or resource.principal
        or ", ".join(resource.bucket_names)
        or resource.cluster
        or resource.function_name
        or resource.db_instance_id
        or "unnamed"
    )
    text = f"{resource.kind} {name}"
    if resource.vpc_id:
        text += f" in {resource.vpc_id}"
    return text


def _indicator(indicator: Indicator) -> str:
    text = f"{indicator.kind.value} {indicator.value} ({indicator.role.value}"
    if indicator.direction:
        text += f", {indicator.direction.value}"
    if indicator.local_port:
        text += f", port {indicator.local_port}"
        if indicator.protocol:
            text += f"/{indicator.protocol.lower()}"
    text += ")"
    if indicator.threat_lists:
        text += f", on {', '.join(indicator.threat_lists)}"
    return text


def _action(action: PlannedAction) -> str:
    text = f"{action.kind.value} {action.target}"
    subnets = action.params.get("subnet_ids")
    if subnets:
        text += f" in the network ACLs of {', '.join(subnets)}"
    if action.ttl_seconds:
        text += f" for {format_duration(action.ttl_seconds)}"
    return text


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip() or moment.isoformat()
