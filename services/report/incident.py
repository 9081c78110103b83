"""Incidents: what an execution learned and did about a finding, its outcome, and its reports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import (
    ActionKind,
    ActionResult,
    ActionStatus,
    Approval,
    ApprovalStatus,
    Decision,
    Deliveries,
    Delivery,
    Enrichment,
    Failure,
    Finding,
    Incident,
    IndicatorHistory,
    Mode,
    Model,
    Outcome,
    Resource,
    severity_label,
)

REPORT_SCHEMA = "cloud-sniper/incident-report"
REPORT_VERSION = 1

# A block queued for the WAF writer counts: the queue keeps it until the writer applies it.
_EFFECTIVE = frozenset({ActionStatus.APPLIED, ActionStatus.ALREADY_APPLIED, ActionStatus.QUEUED})

# How many deliveries an incident record lists; `deliveries` counts them all. GuardDuty updates
# an ongoing finding every few hours at most, so this shows days of its activity.
DELIVERY_HISTORY = 50

_NEVER = datetime.min.replace(tzinfo=UTC)


class StepError(BaseModel):
    """An error a Catch put in the state, in Step Functions' own shape {"Error", "Cause"}."""

    model_config = ConfigDict(extra="ignore", validate_by_name=True)

    error: Annotated[str, Field(alias="Error")]
    cause: Annotated[str | None, Field(alias="Cause")] = None


class Mitigation(Model):
    """What the mitigate step returned."""

    results: list[ActionResult] = Field(default_factory=list)


class PipelineState(BaseModel):
    """The execution's document as it reaches the report step.

    Keys a later state machine adds are kept aside, not refused: the report is the one step
    that must not lose an incident.
    """

    model_config = ConfigDict(extra="allow")

    event: dict[str, Any] | None = None
    dry_run: bool = False
    received_at: datetime | None = None
    incident_id: str | None = None
    finding: Finding | None = None
    enrichment: Enrichment | None = None
    decision: Decision | None = None
    approval: Approval | None = None
    mitigation: Mitigation | None = None
    failure: StepError | None = None
    approval_error: StepError | None = None


class ReportRequest(Model):
    """The report task's input: the whole state and the execution it belongs to."""

    state: PipelineState
    execution_name: Annotated[str, Field(min_length=1)]
    execution_started_at: datetime


class BlockRecord(BaseModel):
    """A block as the mitigate service records it, read for what the report shows of it."""

    # The blocks table is the mitigate service's: what it adds must not break the report.
    model_config = ConfigDict(extra="ignore")

    block_id: str
    kind: ActionKind
    target: str
    action_id: str
    cidr: str
    ip_set: str | None = None
    nacl_id: str | None = None
    rule_number: int | None = None
    created_at: datetime
    expires_at: datetime
    # When the WAF writer put a WAF block's address in its set; None while it is queued.
    written_at: datetime | None = None


@dataclass(frozen=True)
class ReportKeys:
    """Where an execution's two reports are kept in the reports bucket."""

    json: str
    markdown: str


@dataclass(frozen=True)
class FindingSummary:
    """The few facts a report shows first, from the finding or, failing that, the raw event."""

    id: str | None
    type: str | None
    severity: float | None
    severity_label: str | None
    title: str | None
    account_id: str | None
    region: str | None
    resource: str | None


def outcome_of(state: PipelineState) -> tuple[Outcome, Failure | None]:
    """Judge how the execution ended, and why it failed when it did."""
    if state.failure is not None:
        return Outcome.FAILED, Failure(error=state.failure.error, cause=state.failure.cause or "")
    if state.approval_error is not None:
        return Outcome.TIMED_OUT, None

    decision = state.decision
    if state.finding is None or decision is None:
        # Every failing step is caught into `failure`, so this is a broken state machine.
        return Outcome.FAILED, Failure(
            error="IncompleteExecution",
            cause="the execution reached the report without a finding or a decision",
        )
    if decision.mode is Mode.IGNORE:
        return Outcome.IGNORED, None
    if decision.refusals and not decision.actions:
        return Outcome.REFUSED, None
    if decision.mode is Mode.NOTIFY:
        return Outcome.NOTIFIED, None

    if decision.mode is Mode.APPROVAL:
        if state.approval is None:
            return Outcome.FAILED, Failure(
                error="IncompleteExecution",
                cause="the decision asked for an approval the execution does not hold",
            )
        if state.approval.status is ApprovalStatus.DENIED:
            return Outcome.DENIED, None
        if state.approval.status is not ApprovalStatus.APPROVED:
            return Outcome.TIMED_OUT, None
    return mitigation_outcome(decision, state.mitigation, state.dry_run)


def mitigation_outcome(
    decision: Decision, mitigation: Mitigation | None, dry_run: bool
) -> tuple[Outcome, Failure | None]:
    """Judge a decision to act by the results of its actions."""
    if not decision.actions:
        # Acting on nothing reports the finding and no more.
        return Outcome.NOTIFIED, None
    if mitigation is None:
        return Outcome.FAILED, Failure(
            error="IncompleteExecution",
            cause="the decision asked for actions but the mitigate step did not run",
        )
    if dry_run:
        return Outcome.PLANNED, None

    results = mitigation.results
    effective = sum(1 for result in results if result.status in _EFFECTIVE)
    # An action without a result did not happen.
    expected = max(len(results), len(decision.actions))
    if effective == expected:
        return Outcome.MITIGATED, None
    if effective:
        return Outcome.PARTIALLY_MITIGATED, None
    reasons = "; ".join(_result_reason(result) for result in results) or "no action result"
    return Outcome.FAILED, Failure(error="NoActionApplied", cause=reasons)


def build_incident(request: ReportRequest, reported_at: datetime) -> Incident:
    """Gather what the execution learned and did into the incident, with its outcome."""
    state = request.state
    outcome, failure = outcome_of(state)
    incident = Incident(
        incident_id=incident_id_of(state, request.execution_name),
        execution_name=request.execution_name,
        dry_run=state.dry_run,
        finding=state.finding,
        # The raw delivery is kept only when it is all there is to read.
        event=state.event if state.finding is None else None,
        enrichment=state.enrichment,
        decision=state.decision,
        approval=state.approval,
        actions=state.mitigation.results if state.mitigation else [],
        outcome=outcome,
        failure=failure,
        received_at=state.received_at,
        execution_started_at=request.execution_started_at,
        reported_at=reported_at,
    )
    return with_deliveries(incident, None)


def with_deliveries(incident: Incident, previous: Mapping[str, Any] | None) -> Incident:
    """The incident with its finding's activity over this delivery and those recorded before.

    `previous` is the incidents table item. The count and last seen are the latest update's,
    so an older update delivered late changes neither; the first seen is the earliest known.
    """
    recorded = _same_kind(incident, previous)
    this = _delivery(incident)
    names = set(recorded.get("execution_names") or ()) | {this.execution_name}

    history = [
        delivery
        for delivery in map(Delivery.model_validate, recorded.get("delivery_history") or ())
        if delivery.execution_name != this.execution_name
    ]
    history = sorted([*history, this], key=_update_order)[-DELIVERY_HISTORY:]
    # The history keeps the latest updates, so the latest of all is in it.
    read = [delivery for delivery in history if delivery.updated_at is not None]
    latest = max(read, key=_update_order) if read else None

    first_seen = [
        _utc(at)
        for at in (
            _datetime(recorded.get("first_seen")),
            incident.finding.first_seen if incident.finding else None,
        )
        if at is not None
    ]
    deliveries = Deliveries(
        total=len(names),
        count=latest.count if latest else None,
        first_seen=min(first_seen, default=None),
        last_seen=latest.last_seen if latest else None,
        history=history,
    )
    return incident.model_copy(update={"deliveries": deliveries})


def wants_blocks_in_force(incident: Incident) -> bool:
    """Whether to look for blocks in force the execution's results do not show: when it failed.

    Mitigate retried and failed at last may have applied a block on an earlier attempt; a dry
    run applies none.
    """
    return incident.outcome is Outcome.FAILED and not incident.dry_run


def with_blocks_in_force(incident: Incident, items: Iterable[Mapping[str, Any]]) -> Incident:
    """The incident with its blocks in force (stored items) that none of its results names."""
    named = {action.block_id for action in incident.actions if action.block_id}
    started = incident.execution_started_at
    blocks = []
    for block in (BlockRecord.model_validate(item) for item in items):
        if block.block_id in named:
            continue
        # The blocks table does not record the execution; the time tells this one's apart.
        this_execution = started is not None and _utc(block.created_at) >= _utc(started)
        origin = "an earlier attempt" if this_execution else "an earlier execution"
        status = ActionStatus.APPLIED
        if block.nacl_id:
            where = f"denied by rule {block.rule_number} of {block.nacl_id}"
        elif block.written_at is None:
            where, status = f"queued for {block.ip_set}", ActionStatus.QUEUED
        else:
            where = f"in {block.ip_set}"
        blocks.append(
            ActionResult(
                action_id=block.action_id,
                kind=block.kind,
                target=block.target,
                status=status,
                detail=f"{block.cidr} {where}, {_standing(status)} from {origin}",
                block_id=block.block_id,
                expires_at=block.expires_at,
                at=block.created_at,
            )
        )
    blocks.sort(key=lambda result: (_utc(result.at), result.block_id or ""))
    return incident.model_copy(update={"blocks_in_force": blocks})


def _standing(status: ActionStatus) -> str:
    return "asked of the WAF writer" if status is ActionStatus.QUEUED else "in force"


def incident_id_of(state: PipelineState, execution_name: str) -> str:
    """The incident's id: the one receive gave it, else derived from the finding as receive does."""
    if state.incident_id:
        return state.incident_id
    if state.finding is not None:
        return naming.incident_id(state.finding.source, state.finding.id)
    raw = raw_finding(state.event)
    finding_id = _first(raw, "id", "Id")
    if finding_id:
        return naming.incident_id(str(_first(raw, "source") or "aws.guardduty"), str(finding_id))
    return naming.incident_id("execution", execution_name)


def raw_finding(event: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The finding inside a delivery: an EventBridge event, a replay's detail, or a bare finding."""
    current: Mapping[str, Any] = event or {}
    # At most: event envelope, replay detail, the replayed event's envelope.
    for _ in range(4):
        inner = current.get("detail")
        if not isinstance(inner, Mapping):
            inner = current.get("finding")
        if not isinstance(inner, Mapping):
            break
        current = inner
    return current


def summarize(incident: Incident) -> FindingSummary:
    """The finding's main facts, read from the raw event when it could not be normalized."""
    finding = incident.finding
    if finding is not None:
        return FindingSummary(
            id=finding.id,
            type=finding.type,
            severity=finding.severity,
            severity_label=finding.severity_label.value,
            title=finding.title or None,
            account_id=finding.account_id,
            region=finding.region,
            resource=describe_resource(finding.resource),
        )

    raw = raw_finding(incident.event)
    severity = _first(raw, "severity", "Severity")
    if not isinstance(severity, int | float) or isinstance(severity, bool):
        severity = None
    resource = _first(raw, "resource", "Resource")
    return FindingSummary(
        id=_text(_first(raw, "id", "Id")),
        type=_text(_first(raw, "type", "Type")),
        severity=severity,
        severity_label=severity_label(severity).value if severity is not None else None,
        title=_text(_first(raw, "title", "Title")),
        account_id=_text(_first(raw, "accountId", "AccountId", "account_id")),
        region=_text(_first(raw, "region", "Region")),
        resource=_describe_raw_resource(resource) if isinstance(resource, Mapping) else None,
    )


def describe_resource(resource: Resource) -> str:
    """Name the affected resource: its type and what identifies it."""
    identity = (
        resource.instance_id
        or resource.access_key_id
        or resource.principal
        or resource.cluster
        or resource.function_name
        or resource.db_instance_id
        or ", ".join(resource.bucket_names)
    )
    return f"{resource.kind} {identity}" if identity else resource.kind


def report_keys(incident: Incident) -> ReportKeys:
    """The bucket keys of the execution's reports: one folder per incident, one name per run."""
    base = f"reports/{incident.incident_id}/{incident.execution_name or 'execution'}"
    return ReportKeys(json=f"{base}.json", markdown=f"{base}.md")


def render_json(incident: Incident) -> str:
    """The incident as a versioned JSON document."""
    document = {
        "schema": REPORT_SCHEMA,
        "version": REPORT_VERSION,
        **incident.model_dump(mode="json"),
    }
    return json.dumps(document, indent=2) + "\n"


def read_json(text: str) -> Incident:
    """Read back a document written by render_json, refusing other schemas and versions."""
    document = json.loads(text)
    schema, version = document.pop("schema", None), document.pop("version", None)
    if (schema, version) != (REPORT_SCHEMA, REPORT_VERSION):
        raise ValueError(f"not a {REPORT_SCHEMA} v{REPORT_VERSION} document: {schema} v{version}")
    return Incident.model_validate(document)


def event_detail(incident: Incident, keys: ReportKeys, bucket: str) -> dict[str, Any]:
    """The detail of the incident-reported event: a summary, and where the reports are."""
    summary = summarize(incident)
    return {
        "incident_id": incident.incident_id,
        "execution_name": incident.execution_name,
        "dry_run": incident.dry_run,
        "finding": {"id": summary.id, "type": summary.type, "severity": summary.severity},
        "decision_mode": incident.decision.mode.value if incident.decision else None,
        "outcome": incident.outcome.value,
        "actions": [
            {"kind": action.kind.value, "target": action.target, "status": action.status.value}
            for action in incident.actions
        ],
        "report_bucket": bucket,
        "report_keys": {"json": keys.json, "markdown": keys.markdown},
    }


def incident_item(
    incident: Incident, keys: ReportKeys, previous: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The incidents table item after this report, or None when the stored one must stay.

    One item per finding. Each execution reporting it counts once in `deliveries`, however often
    its report is retried, and the last of them are listed in `delivery_history`. The item shows
    the execution started last, with the finding's count and last seen as of its latest update
    and its first seen (with_deliveries), and a dry run never replaces the record of a real one.
    """
    previous = previous or {}
    if previous and incident.dry_run and not previous.get("dry_run"):
        return None

    same_kind = _same_kind(incident, previous)
    # Merged again from the item as read now: another report may have landed since the one
    # the incident's reports were written with.
    incident = with_deliveries(incident, previous)
    names = set(same_kind.get("execution_names") or ()) | {incident.execution_name or ""}
    stored_start = same_kind.get("execution_started_at")
    stored_is_newer = bool(
        stored_start
        and incident.execution_started_at
        and _utc(datetime.fromisoformat(stored_start)) > _utc(incident.execution_started_at)
    )

    item = dict(same_kind) if stored_is_newer else _summary_item(incident, keys)
    item["execution_names"] = names
    for key, value in _deliveries_fields(incident.deliveries).items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def render_markdown(incident: Incident) -> str:
    """The incident as a report a person reads from top to bottom."""
    sections = [
        _summary_section(incident),
        _deliveries_section(incident),
        _indicators_section(incident),
        _attack_section(incident),
        _decision_section(incident),
        _approval_section(incident),
        _actions_section(incident),
        _failure_section(incident),
        _timeline_section(incident),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def failure_message(cause: str) -> str:
    """Read a failure's cause: a Lambda error's JSON is shortened to its type and message."""
    try:
        error = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(error, Mapping) and "errorMessage" in error:
        kind = error.get("errorType")
        return f"{kind}: {error['errorMessage']}" if kind else str(error["errorMessage"])
    return cause


def _summary_section(incident: Incident) -> str:
    summary = summarize(incident)
    decision = incident.decision
    severity = "–"
    if summary.severity is not None:
        severity = f"{summary.severity:g}"
        if summary.severity_label:
            severity += f" ({summary.severity_label})"

    rows = [
        ("Finding", _code(summary.id)),
        ("Type", _cell(summary.type)),
        ("Severity", severity),
        ("Title", _cell(summary.title)),
        ("Account", _cell(summary.account_id)),
        ("Region", _cell(summary.region)),
        ("Resource", _cell(summary.resource)),
        *_deliveries_rows(incident),
        ("Decision", _cell(_decision_line(decision)) if decision else "none"),
        ("Outcome", f"**{incident.outcome.value}**"),
        ("Execution", _code(incident.execution_name)),
    ]
    lines = [f"# Incident {incident.incident_id}: {incident.outcome.value}", ""]
    if incident.dry_run:
        lines += ["> Dry run: actions were planned and recorded, nothing was changed.", ""]
    if incident.finding is None:
        lines += ["> The delivery could not be read as a finding: this is from the raw event.", ""]
    lines += _table(("", ""), rows)
    return "\n".join(lines)


def _deliveries_rows(incident: Incident) -> list[tuple[str, str]]:
    deliveries = incident.deliveries
    finding = incident.finding
    if deliveries is None and finding is None:
        return []
    if deliveries is None:
        # A report written before deliveries were recorded: this delivery alone.
        deliveries = Deliveries(
            count=finding.count, first_seen=finding.first_seen, last_seen=finding.last_seen
        )
    return [
        ("Count", str(deliveries.count) if deliveries.count is not None else "–"),
        ("First seen", _when(deliveries.first_seen) if deliveries.first_seen else "–"),
        ("Last seen", _when(deliveries.last_seen) if deliveries.last_seen else "–"),
        ("Deliveries", str(deliveries.total)),
    ]


def _deliveries_section(incident: Incident) -> str:
    deliveries = incident.deliveries
    if deliveries is None or deliveries.total < 2:
        return ""
    lines = ["## Deliveries", ""]
    shown = len(deliveries.history)
    if shown < deliveries.total:
        lines += [f"The last {shown} of {deliveries.total} deliveries:", ""]
    else:
        lines += ["GuardDuty delivered the finding again as the activity went on:", ""]
    rows = [
        (
            _when(delivery.updated_at) if delivery.updated_at else "not read",
            str(delivery.count) if delivery.count is not None else "–",
            _when(delivery.last_seen) if delivery.last_seen else "–",
            _code(delivery.execution_name)
            + (" (this report)" if delivery.execution_name == incident.execution_name else ""),
        )
        for delivery in deliveries.history
    ]
    lines += _table(("Updated", "Count", "Last seen", "Execution"), rows)
    return "\n".join(lines)


def _indicators_section(incident: Incident) -> str:
    lines = ["## Indicators", ""]
    finding = incident.finding
    if finding is None:
        return "\n".join([*lines, "Not known: the finding was not read."])
    if not finding.indicators:
        return "\n".join([*lines, "The finding names no indicator."])

    histories: dict[tuple[str, str], IndicatorHistory] = {
        (history.kind.value, history.value): history
        for history in (incident.enrichment.indicators if incident.enrichment else [])
    }
    rows = []
    for indicator in finding.indicators:
        history = histories.get((indicator.kind.value, indicator.value))
        rows.append(
            (
                _code(indicator.value),
                indicator.kind.value,
                indicator.role.value,
                _cell(", ".join(indicator.threat_lists)),
                *(_history_cells(history) if history else ("–",) * 6),
            )
        )
    header = (
        "Indicator",
        "Kind",
        "Role",
        "Threat lists",
        "Seen before",
        "Sightings before",
        "First seen",
        "Last seen",
        "Blocked before",
        "Block state",
    )
    lines += _table(header, rows)
    if incident.enrichment is None:
        lines += ["", "No history: the enrich step did not run."]
    return "\n".join(lines)


def _decision_section(incident: Incident) -> str:
    decision = incident.decision
    lines = ["## Decision", ""]
    if decision is None:
        return "\n".join([*lines, "No decision was made."])

    lines.append(f"- Mode: **{decision.mode.value}**")
    if decision.priority.value != "normal":
        lines.append(f"- Priority: **{decision.priority.value}**")
    lines.append(f"- Reason: {_inline(decision.reason)}")
    if decision.rule:
        lines.append(f"- Rule: {_code(decision.rule)}")
    if decision.approval_timeout_seconds:
        lines.append(f"- Approval timeout: {decision.approval_timeout_seconds} s")
    if decision.actions:
        rows = [
            (
                action.kind.value,
                _code(action.target),
                f"{action.ttl_seconds} s" if action.ttl_seconds else "–",
            )
            for action in decision.actions
        ]
        lines += ["", "### Planned actions", "", *_table(("Kind", "Target", "Block for"), rows)]
    if decision.unavailable:
        rows = [(action.kind.value, _code(action.target)) for action in decision.unavailable]
        lines += [
            "",
            "### Planned, not yet available",
            "",
            "The policy asks for these; this version of Cloud Sniper does not carry them out.",
            "",
            *_table(("Kind", "Target"), rows),
        ]
    if decision.refusals:
        rows = [
            (_cell(refusal.kind), _code(refusal.target), _cell(refusal.reason))
            for refusal in decision.refusals
        ]
        lines += ["", "### Refusals", "", *_table(("Kind", "Target", "Reason"), rows)]
    return "\n".join(lines)


def _attack_section(incident: Incident) -> str:
    attack = incident.enrichment.attack if incident.enrichment else None
    if attack is None:
        return ""
    rows = [("Tactic", t.id, _cell(t.name)) for t in attack.tactics]
    rows += [("Technique", t.id, _cell(t.name)) for t in attack.techniques]
    return "\n".join(
        [
            "## MITRE ATT&CK",
            "",
            f"ATT&CK Enterprise {attack.attack_version}: {_inline(attack.reason)}",
            "",
            *_table(("", "Id", "Name"), rows),
        ]
    )


def _approval_section(incident: Incident) -> str:
    approval = incident.approval
    lines = ["## Approval", ""]
    if approval is not None:
        lines.append(f"- Status: **{approval.status.value}**")
        lines.append(f"- Approval: {_code(approval.approval_id)}")
        lines.append(f"- Requested: {_when(approval.requested_at)}")
        if approval.approver:
            lines.append(f"- By: {_inline(approval.approver)}")
        if approval.answered_at:
            lines.append(f"- Answered: {_when(approval.answered_at)}")
        if approval.reason:
            lines.append(f"- Why: {_inline(approval.reason)}")
        lines.append(f"- Expires: {_when(approval.expires_at)}")
        return "\n".join(lines)
    if incident.outcome is Outcome.TIMED_OUT:
        timeout = incident.decision.approval_timeout_seconds if incident.decision else None
        within = f" within {timeout} s" if timeout else ""
        return "\n".join([*lines, f"No one answered the approval request{within}; it timed out."])
    if incident.decision is not None and incident.decision.mode is Mode.APPROVAL:
        return "\n".join([*lines, "Requested, but no answer reached the report."])
    return ""


def _actions_section(incident: Incident) -> str:
    lines = ["## Actions", ""]
    if incident.actions:
        rows = [
            (
                action.kind.value,
                _code(action.target),
                action.status.value,
                _cell(action.detail),
                _when(action.expires_at) if action.expires_at else "–",
            )
            for action in incident.actions
        ]
        lines += _table(("Kind", "Target", "Status", "Detail", "Expires"), rows)
    elif incident.blocks_in_force:
        lines.append("No action result reached the report.")
    else:
        lines.append("No action was run.")

    if incident.blocks_in_force:
        rows = [
            (
                block.kind.value,
                _code(block.target),
                "in force",
                _cell(block.detail),
                _when(block.expires_at) if block.expires_at else "–",
            )
            for block in incident.blocks_in_force
        ]
        lines += [
            "",
            "### Blocks in force",
            "",
            "Applied for this incident before this report, and not lifted yet:",
            "",
            *_table(("Kind", "Target", "Status", "Detail", "Expires"), rows),
        ]
    return "\n".join(lines)


def _failure_section(incident: Incident) -> str:
    failure = incident.failure
    if failure is None:
        return ""
    message = failure_message(failure.cause) if failure.cause else "no cause given"
    return "\n".join(["## Failure", "", f"- Error: {_code(failure.error)}", "", _fenced(message)])


def _timeline_section(incident: Incident) -> str:
    events: list[tuple[datetime, str]] = []
    finding = incident.finding
    if finding is not None:
        events.append((finding.created_at, "finding created by GuardDuty"))
        if finding.updated_at != finding.created_at:
            events.append((finding.updated_at, "finding last updated by GuardDuty"))
    if incident.received_at:
        events.append((incident.received_at, "finding received"))
    if incident.execution_started_at:
        events.append((incident.execution_started_at, "execution started"))
    if incident.approval is not None:
        events.append((incident.approval.requested_at, "approval requested"))
        if incident.approval.answered_at:
            status = incident.approval.status.value
            events.append((incident.approval.answered_at, f"approval answered: {status}"))
    for action in incident.actions:
        events.append((action.at, f"{action.kind.value} {action.target}: {action.status.value}"))
    for block in incident.blocks_in_force:
        state = "applied" if block.status is ActionStatus.APPLIED else block.status.value
        events.append((block.at, f"{block.kind.value} {block.target}: {state}, still in force"))
    events.append((incident.reported_at, f"reported: {incident.outcome.value}"))

    events.sort(key=lambda event: _utc(event[0]))
    rows = [(_when(at), _cell(what)) for at, what in events]
    return "\n".join(["## Timeline", "", *_table(("When", "What"), rows)])


def _summary_item(incident: Incident, keys: ReportKeys) -> dict[str, Any]:
    summary = summarize(incident)
    item: dict[str, Any] = {
        "incident_id": incident.incident_id,
        "execution_name": incident.execution_name,
        "execution_started_at": _iso(incident.execution_started_at),
        "dry_run": incident.dry_run,
        "outcome": incident.outcome.value,
        "finding_id": summary.id,
        "finding_type": summary.type,
        # DynamoDB numbers are decimals; a float would be refused.
        "severity": Decimal(str(summary.severity)) if summary.severity is not None else None,
        "account_id": summary.account_id,
        "region": summary.region,
        "decision_mode": incident.decision.mode.value if incident.decision else None,
        "reported_at": _iso(incident.reported_at),
        "report_json_key": keys.json,
        "report_markdown_key": keys.markdown,
        "report": render_json(incident),
    }
    return {key: value for key, value in item.items() if value is not None}


def _same_kind(incident: Incident, previous: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The stored item if it records the same kind of run; a real run starts over a dry run's."""
    previous = previous or {}
    return previous if bool(previous.get("dry_run")) == incident.dry_run else {}


def _delivery(incident: Incident) -> Delivery:
    finding = incident.finding
    return Delivery(
        execution_name=incident.execution_name or "",
        updated_at=finding.updated_at if finding else None,
        count=finding.count if finding else None,
        last_seen=finding.last_seen if finding else None,
    )


def _update_order(delivery: Delivery) -> tuple[datetime, int, str]:
    # An unread delivery has no update time: it sorts first, and is the first to leave.
    updated = _utc(delivery.updated_at) if delivery.updated_at else _NEVER
    count = delivery.count if delivery.count is not None else -1
    return updated, count, delivery.execution_name


def _deliveries_fields(deliveries: Deliveries | None) -> dict[str, Any]:
    deliveries = deliveries or Deliveries()
    return {
        "deliveries": deliveries.total,
        "count": deliveries.count,
        "first_seen": _iso(deliveries.first_seen),
        "last_seen": _iso(deliveries.last_seen),
        "delivery_history": [
            delivery.model_dump(mode="json", exclude_none=True) for delivery in deliveries.history
        ],
    }


def _datetime(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _decision_line(decision: Decision) -> str:
    rule = f" (rule {decision.rule})" if decision.rule else ""
    return f"{decision.mode.value}: {decision.reason}{rule}"


def _history_cells(history: IndicatorHistory) -> tuple[str, ...]:
    return (
        "yes" if history.seen_before else "no",
        str(history.sightings),
        _when(history.first_seen) if history.seen_before else "–",
        _when(history.last_seen) if history.seen_before else "–",
        "yes" if history.blocked_before else "no",
        _cell(history.block_state),
    )


def _result_reason(result: ActionResult) -> str:
    detail = f" ({result.detail})" if result.detail else ""
    return f"{result.kind.value} {result.target}: {result.status.value}{detail}"


def _describe_raw_resource(resource: Mapping[str, Any]) -> str | None:
    kind = _text(_first(resource, "resourceType", "ResourceType"))
    instance = _first(resource, "instanceDetails", "InstanceDetails") or {}
    key = _first(resource, "accessKeyDetails", "AccessKeyDetails") or {}
    identity = _first(instance, "instanceId", "InstanceId") or _first(
        key, "accessKeyId", "AccessKeyId"
    )
    parts = [part for part in (kind, _text(identity)) if part]
    return " ".join(parts) or None


def _first(mapping: Any, *names: str) -> Any:
    if not isinstance(mapping, Mapping):
        return None
    for name in names:
        if mapping.get(name) not in (None, ""):
            return mapping[name]
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# Text from findings and approvers goes into tables and lists: it must not break their layout.
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def _inline(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text).strip()


def _cell(text: str | None) -> str:
    if not text:
        return "–"
    return _inline(text).replace("|", "\\|")


def _code(text: str | None) -> str:
    if not text:
        return "–"
    text = _inline(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _fenced(text: str) -> str:
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}\n{text}\n{fence}"


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _when(at: datetime) -> str:
    return _utc(at).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(at: datetime | None) -> str | None:
    return _utc(at).isoformat() if at else None
