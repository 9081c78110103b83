"""Incidents: what an execution learned and did about a finding, its outcome, and its reports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

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
    Mode,
    Model,
    Outcome,
)
from services.report.nist import IncidentReport, raw_finding, raw_value, render_json, summarize

# The incident or its report: the merges keep the report's derived sections in step.
IncidentT = TypeVar("IncidentT", bound=Incident)

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
    # The execution's ARN, to read its history; None from a state machine that does not pass it.
    execution_arn: Annotated[str | None, Field(min_length=1)] = None


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
    """Where an execution's reports are kept in the reports bucket."""

    json: str
    markdown: str
    html: str

    def as_dict(self) -> dict[str, str]:
        """The keys by format, as the handler's result and the event name them."""
        return {"json": self.json, "markdown": self.markdown, "html": self.html}


def outcome_of(state: PipelineState) -> tuple[Outcome, Failure | None]:
    """Judge how the execution ended, and why it failed when it did."""
    if state.failure is not None:
        return Outcome.FAILED, Failure(error=state.failure.error, cause=state.failure.cause or "")
    # An answer to an escalated approval follows the first wait's timeout: the answer decides.
    if state.approval_error is not None and state.approval is None:
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


def with_deliveries(incident: IncidentT, previous: Mapping[str, Any] | None) -> IncidentT:
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


def with_blocks_in_force(incident: IncidentT, items: Iterable[Mapping[str, Any]]) -> IncidentT:
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
    finding_id = raw_value(raw, "id", "Id")
    if finding_id:
        source = raw_value(raw, "source") or "aws.guardduty"
        return naming.incident_id(str(source), str(finding_id))
    return naming.incident_id("execution", execution_name)


def report_keys(incident: Incident) -> ReportKeys:
    """The bucket keys of the execution's reports: one folder per incident, one name per run."""
    base = f"reports/{incident.incident_id}/{incident.execution_name or 'execution'}"
    return ReportKeys(json=f"{base}.json", markdown=f"{base}.md", html=f"{base}.html")


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
        "report_keys": keys.as_dict(),
    }


def incident_item(
    incident: IncidentReport, keys: ReportKeys, previous: Mapping[str, Any] | None
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


def _summary_item(incident: IncidentReport, keys: ReportKeys) -> dict[str, Any]:
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
        "report_html_key": keys.html,
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


def _result_reason(result: ActionResult) -> str:
    detail = f" ({result.detail})" if result.detail else ""
    return f"{result.kind.value} {result.target}: {result.status.value}{detail}"


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _iso(at: datetime | None) -> str | None:
    return _utc(at).isoformat() if at else None
