"""An approval request: the record kept in the approvals table and the notices sent about it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloud_sniper.domain import naming
from cloud_sniper.domain.approvals import ApprovalRecord, FindingSummary
from cloud_sniper.domain.models import (
    ActionKind,
    ApprovalStatus,
    Decision,
    Finding,
    Indicator,
    Mode,
    Model,
    OnApprovalTimeout,
    PlannedAction,
    Resource,
)
from cloud_sniper.domain.policy import format_duration
from cloud_sniper.domain.safeguards import DISRUPTIVE

# SNS refuses a subject longer than this.
SUBJECT_LIMIT = 100
# Slack cuts a section's text at 3,000 characters and a header's at 150.
SLACK_SECTION_LIMIT = 3000
SLACK_HEADER_LIMIT = 150


class ApprovalConflictError(Exception):
    """The table holds the execution's approval in a state a new request cannot take over."""


class ApprovalRequest(Model):
    """The request-approval function's input: the waiting task's token and what to approve."""

    token: str
    finding: Finding
    decision: Decision
    incident_id: str
    execution_name: str
    # The second and last wait, after nobody answered the first in time.
    escalated: bool = False


def new_record(request: ApprovalRequest, now: datetime) -> ApprovalRecord:
    """The pending approval for a request, expiring when the waiting task times out.

    Its id comes from the execution, so a retried request (a new task, a new token) names the
    same approval and replaces the one still pending; so does the escalation, marked with its
    time.
    """
    decision = request.decision
    if decision.mode != Mode.APPROVAL or not decision.approval_timeout_seconds:
        raise ValueError(
            f"decision mode {decision.mode} with approval timeout "
            f"{decision.approval_timeout_seconds}: nothing to approve"
        )
    on_timeout = decision.on_approval_timeout or OnApprovalTimeout.DENY
    if request.escalated and on_timeout != OnApprovalTimeout.ESCALATE:
        raise ValueError(
            f"decision with on_approval_timeout {on_timeout}: the approval of execution "
            f"{request.execution_name} is not to be escalated"
        )
    finding = request.finding
    planned = {action.id for action in decision.actions}
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
        dependents={key: found for key, found in decision.dependents.items() if key in planned},
        on_timeout=on_timeout,
        requested_at=now,
        expires_at=now + timedelta(seconds=decision.approval_timeout_seconds),
        escalated_at=now if request.escalated else None,
    )


def check_kept(record: ApprovalRecord, kept: Mapping[str, Any]) -> None:
    """Accept the approval the table kept instead of this request only if it answered this task.

    The kept one was answered (or timed out) already. For this very task that answer stands;
    for a new task (a retried request) no answer can come any more, so waiting would only end
    in a timeout: the request fails instead, for the report to say why.
    """
    if not kept:
        raise ApprovalConflictError(
            f"approval {record.approval_id} of execution {record.execution_name} is not in the "
            "approvals table"
        )
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


@dataclass(frozen=True)
class Notice:
    """What approvers are told of an approval, whatever the channel."""

    approval_id: str
    escalated: bool
    headline: str
    facts: list[tuple[str, str]]
    indicators: list[str]
    actions: list[tuple[str, str]]  # (the action, its blast radius)
    refusals: list[str]
    expiry: str
    commands: list[str]  # against the deployed approvals API
    local_commands: list[str]  # against the local emulation


def notice(record: ApprovalRecord, now: datetime, region: str) -> Notice:
    """The facts of an approval request as approvers read them; never its task token."""
    finding = record.finding
    escalated = record.escalated_at is not None
    if escalated:
        headline = (
            f"Nobody answered this approval within {_timeout(record)}: Cloud Sniper asks you, "
            "once more, before acting on a finding."
        )
    else:
        headline = "Cloud Sniper asks for an approval before acting on a finding."
    facts = [
        ("Approval", record.approval_id),
        ("Finding", f"{finding.type}, severity {finding.severity:g} ({finding.severity_label})"),
    ]
    if finding.title:
        facts.append(("", finding.title))
    facts += [
        ("Resource", _resource(finding.resource)),
        ("Account", f"{finding.account_id} in {finding.region}"),
        ("Decision", record.decision_reason),
        ("Incident", f"{record.incident_id} (execution {record.execution_name})"),
    ]
    answer = f"{record.approval_id} --reason TEXT"
    deployed = f"--stack {naming.APPROVALS_API_STACK} --region {region}"
    return Notice(
        approval_id=record.approval_id,
        escalated=escalated,
        headline=headline,
        facts=facts,
        indicators=[_indicator(indicator) for indicator in finding.indicators],
        actions=[(_action(action), _blast_radius(action, record)) for action in record.actions],
        refusals=[f"{r.kind} {r.target}: {r.reason}" for r in record.refusals],
        expiry=_expiry(record, now),
        commands=[
            f"cloud-sniper approvals approve {answer} {deployed}",
            f"cloud-sniper approvals deny {answer} {deployed}",
        ],
        local_commands=[
            f"cloud-sniper approvals approve {answer}",
            f"cloud-sniper approvals deny {answer}",
        ],
    )


def notification(record: ApprovalRecord, now: datetime, region: str) -> tuple[str, str]:
    """The subject and text published to the approvers' topic."""
    told = notice(record, now, region)
    escalated = " escalated" if told.escalated else ""
    subject = f"Cloud Sniper approval {record.approval_id}{escalated}: {record.finding.type}"
    width = max(len(label) for label, _ in told.facts) + 3
    lines = [told.headline, ""]
    lines += [f"{f'{label}:' if label else '':<{width}}{text}" for label, text in told.facts]
    lines += ["", "Indicators:", *(f"  - {text}" for text in told.indicators)]
    lines += ["", "Planned actions, and what each would disrupt:"]
    for action, blast_radius in told.actions:
        lines += [f"  - {action}", f"      blast radius: {blast_radius}"]
    if told.refusals:
        lines += ["", "Refused by the safety rules:", *(f"  - {text}" for text in told.refusals)]
    lines += [
        "",
        f"Expires:  {told.expiry}",
        "",
        "Answer with one of:",
        *(f"  {command}" for command in told.commands),
        "or, on the local emulation (cloud-sniper local up):",
        *(f"  {command}" for command in told.local_commands),
    ]
    return _subject(subject), "\n".join(lines) + "\n"


def slack_message(record: ApprovalRecord, now: datetime, region: str) -> dict[str, Any]:
    """The same facts as a Slack incoming webhook message: mrkdwn blocks and a plain fallback."""
    told = notice(record, now, region)
    title = f"Cloud Sniper approval {record.approval_id}"
    if told.escalated:
        title += " (escalated)"
    facts = "\n".join(
        f"*{label}:* {_mrkdwn(text)}" if label else f"_{_mrkdwn(text)}_"
        for label, text in told.facts
    )
    indicators = "\n".join(f"• {_code(text)}" for text in told.indicators) or "none"
    actions = "\n".join(
        f"• {_code(action)}\n    blast radius: {_mrkdwn(blast)}" for action, blast in told.actions
    )
    sections = [
        _mrkdwn(told.headline),
        facts,
        f"*Indicators*\n{indicators}",
        f"*Planned actions, and what each would disrupt*\n{actions}",
    ]
    if told.refusals:
        refused = "\n".join(f"• {_mrkdwn(text)}" for text in told.refusals)
        sections.append(f"*Refused by the safety rules*\n{refused}")
    sections += [
        f"*Expires:* {_mrkdwn(told.expiry)}",
        # A code block: Slack makes no link of it, and it is copied as it reads.
        "*Answer with one of*\n```" + "\n".join(told.commands) + "```\n"
        "or, on the local emulation:\n```" + "\n".join(told.local_commands) + "```",
    ]
    return {
        "text": f"{title}: {record.finding.type} on {_resource(record.finding.resource)}",
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _cut(title, SLACK_HEADER_LIMIT)},
            },
            *(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": _cut(text, SLACK_SECTION_LIMIT)},
                }
                for text in sections
            ),
        ],
    }


def _expiry(record: ApprovalRecord, now: datetime) -> str:
    left = format_duration(max(_seconds(record.expires_at - now), 0))
    text = f"{_time(record.expires_at)}, in {left}."
    if record.on_timeout == OnApprovalTimeout.ESCALATE and record.escalated_at is None:
        return (
            f"{text} Unanswered by then, it is escalated to {naming.APPROVAL_ESCALATION_TOPIC} "
            f"and waits {_timeout(record)} more; then nothing is done."
        )
    return f"{text} Unanswered by then, it is denied: nothing is done."


def _timeout(record: ApprovalRecord) -> str:
    """How long the current wait lasts, as the policy wrote it."""
    started = record.escalated_at or record.requested_at
    return format_duration(_seconds(record.expires_at - started))


def _blast_radius(action: PlannedAction, record: ApprovalRecord) -> str:
    """What the action disrupts beyond the attacker, and what depends on its target."""
    target = action.target
    if action.kind == ActionKind.WAF_BLOCK:
        text = f"requests from {target} to the web ACLs using Cloud Sniper's IP sets"
    elif action.kind == ActionKind.NACL_BLOCK:
        text = f"inbound traffic from {target} to those subnets"
    elif action.kind == ActionKind.C2_BLOCK:
        text = (
            f"outbound traffic to {target} from those subnets"
            if "/" in target
            else f"DNS lookups of {target} in the VPC"
        )
    elif action.kind == ActionKind.ISOLATE_INSTANCE:
        text = f"every connection of instance {target}"
    elif action.kind == ActionKind.REVOKE_CREDENTIALS:
        principal = action.params.get("principal")
        if action.params.get("user_type") == "IAMUser" or not principal:
            text = f"every call signed with access key {target}"
        else:
            text = f"every session of {principal} issued before now"
    else:
        text = f"public access to bucket {target}"
    if action.kind not in DISRUPTIVE:
        return text
    found = record.dependents.get(action.id)
    if found is None:
        return f"{text}; what depends on it was not counted"
    if not found:
        return f"{text}; nothing found depending on it"
    return f"{text}; {len(found)} dependent(s): {', '.join(found)}"


def _seconds(span: timedelta) -> int:
    return round(span.total_seconds())


def _subject(text: str) -> str:
    # SNS takes a subject of printable ASCII only, on one line.
    ascii_text = text.encode("ascii", "replace").decode().replace("\n", " ")
    return ascii_text[:SUBJECT_LIMIT]


def _mrkdwn(text: str) -> str:
    # Slack reads &, < and > as markup (links, mentions): a finding's text must not be.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    quoted = _mrkdwn(text).replace("`", "'")
    return f"`{quoted}`"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
