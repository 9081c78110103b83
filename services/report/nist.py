"""The incident report document: the incident by the phases of NIST SP 800-61, and its timeline.

The document keeps every field of the incident as recorded (the record) and adds, derived from
it, one section per phase: detection and analysis; containment, eradication and recovery; and
post-incident activity (preparation happens before any finding, so no report shows it). The
timeline comes from the execution's own history: each state entered and exited, and from them
the time to decision and to mitigation.

`python -m services.report.nist > docs/incident-report.schema.json` writes the document's JSON
Schema; a test generates it again, so the docs and the model cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, computed_field

from cloud_sniper.domain.models import (
    ActionKind,
    ActionResult,
    ActionStatus,
    ApprovalStatus,
    AttackMapping,
    Direction,
    Incident,
    IndicatorHistory,
    IndicatorKind,
    IndicatorRole,
    Mode,
    Model,
    Outcome,
    PlannedAction,
    Priority,
    Refusal,
    Resource,
    severity_label,
)
from services.report.nist_playbook import ENDINGS, VERIFIED_IN_ACCOUNT, Ending, family_for

REPORT_SCHEMA = "cloud-sniper/incident-report"
# 2: the phases, the timeline from the execution history and the response times.
REPORT_VERSION = 2

_MITIGATED = frozenset({Outcome.MITIGATED, Outcome.PARTIALLY_MITIGATED})
# The states that wait for a person: the request, and its escalation when nobody answered it.
_APPROVAL_STATES = ("RequestApproval", "EscalateApproval")
# A block queued for the WAF writer counts: the queue keeps it until the writer applies it.
_IN_FORCE = frozenset({ActionStatus.APPLIED, ActionStatus.ALREADY_APPLIED, ActionStatus.QUEUED})


class HistoryUnavailableError(Exception):
    """The execution's history could not be read; the message says why."""


# --- the timeline -------------------------------------------------------------------------------


class HistoryEvent(Model):
    """One event of an execution's history as the report keeps it: never its input or output."""

    type: Annotated[str, Field(min_length=1)]
    timestamp: datetime
    state: Annotated[
        str | None,
        Field(description="The state the event entered or exited; None for the other events."),
    ] = None


def history_event(event: Mapping[str, Any]) -> HistoryEvent:
    """Copy of a GetExecutionHistory event: its type, time and state name, never its data.

    The inputs and outputs hold the approval's task token, which resumes the execution.
    """
    details = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}
    return HistoryEvent(type=event["type"], timestamp=event["timestamp"], state=details.get("name"))


class StateVisit(Model):
    """One pass through a state of the execution: when it was entered and left, and its tries."""

    name: str
    type: Annotated[
        str,
        Field(description="The state's type as the history names it: Task, Choice, Pass, Fail..."),
    ]
    entered_at: datetime
    exited_at: Annotated[
        datetime | None,
        Field(
            description="None while the state runs: the report's own state, or one the execution "
            "ended in."
        ),
    ] = None
    attempts: Annotated[
        int,
        Field(
            description="Invocations scheduled by a task state: more than one means it was retried."
        ),
    ] = 0
    failures: Annotated[int, Field(description="Invocations that failed or timed out.")] = 0

    @computed_field
    @property
    def seconds(self) -> float | None:
        """Seconds the state took, once it was left."""
        return _seconds(self.entered_at, self.exited_at)


class Timeline(Model):
    """The execution's path through the states, read from its history."""

    execution_arn: str | None = None
    started_at: datetime | None = None
    states: list[StateVisit] = Field(default_factory=list)
    missing: Annotated[
        str | None,
        Field(
            description="Why there is no timeline: the history could not be read, or no execution "
            "was named."
        ),
    ] = None


def timeline_from(execution_arn: str, events: Iterable[HistoryEvent]) -> Timeline:
    """The states an execution went through, from its history events in their order."""
    started: datetime | None = None
    visits: list[StateVisit] = []
    current: StateVisit | None = None
    for event in events:
        kind = event.type
        if kind == "ExecutionStarted":
            started = event.timestamp
        elif kind.endswith("StateEntered"):
            current = StateVisit(
                name=event.state or "?",
                type=kind.removesuffix("StateEntered"),
                entered_at=event.timestamp,
            )
            visits.append(current)
        elif kind.endswith("StateExited"):
            visit = next(
                (v for v in reversed(visits) if v.name == event.state and v.exited_at is None),
                None,
            )
            if visit is not None:
                visit.exited_at = event.timestamp
            current = None
        elif current is not None and kind.endswith("Scheduled"):
            current.attempts += 1
        elif current is not None and kind.endswith(("Failed", "TimedOut")):
            current.failures += 1
    return Timeline(execution_arn=execution_arn, started_at=started, states=visits)


def read_timeline(
    execution_arn: str | None, read: Callable[[str], Iterable[HistoryEvent]]
) -> Timeline:
    """The execution's timeline from its history; when it cannot be read, why not."""
    if not execution_arn:
        return Timeline(missing="the report task was given no execution ARN")
    try:
        events = list(read(execution_arn))
    except HistoryUnavailableError as exc:
        return Timeline(execution_arn=execution_arn, missing=str(exc))
    return timeline_from(execution_arn, events)


_SECONDS = Field(description="Seconds; None when not known.")


class ResponseTimes(Model):
    """How fast the pipeline answered: to the decision and to the mitigation, in seconds.

    Each is measured from the execution's start and from the finding's first seen (the earliest
    over its deliveries). The decision is made when Decide is left; the mitigation is done when
    Mitigate is left, for an incident mitigated at least in part. None when not known.
    """

    decided_at: Annotated[datetime | None, Field(description="When Decide was left.")] = None
    mitigated_at: Annotated[
        datetime | None, Field(description="When Mitigate was left, if it mitigated.")
    ] = None
    to_decision_from_start: Annotated[float | None, _SECONDS] = None
    to_decision_from_first_seen: Annotated[float | None, _SECONDS] = None
    to_mitigation_from_start: Annotated[float | None, _SECONDS] = None
    to_mitigation_from_first_seen: Annotated[float | None, _SECONDS] = None
    approval_wait: Annotated[
        float | None,
        Field(
            description="How long the execution waited for a person's answer: from the request to "
            "the answer, the escalated request included."
        ),
    ] = None


def response_times(incident: Incident, timeline: Timeline) -> ResponseTimes:
    """The time to decision and to mitigation, from the timeline."""
    start = timeline.started_at or incident.execution_started_at
    first_seen = first_seen_of(incident)
    decided = _exit_of(timeline, "Decide")
    mitigated = _exit_of(timeline, "Mitigate") if incident.outcome in _MITIGATED else None
    asked = [v for v in timeline.states if v.name in _APPROVAL_STATES]
    answered = [v.exited_at for v in asked if v.exited_at]
    return ResponseTimes(
        decided_at=decided,
        mitigated_at=mitigated,
        to_decision_from_start=_seconds(start, decided),
        to_decision_from_first_seen=_seconds(first_seen, decided),
        to_mitigation_from_start=_seconds(start, mitigated),
        to_mitigation_from_first_seen=_seconds(first_seen, mitigated),
        approval_wait=_seconds(asked[0].entered_at, max(answered)) if answered else None,
    )


def first_seen_of(incident: Incident) -> datetime | None:
    """The finding's first seen, the earliest over its deliveries when they are known."""
    if incident.deliveries is not None and incident.deliveries.first_seen is not None:
        return incident.deliveries.first_seen
    return incident.finding.first_seen if incident.finding else None


def _exit_of(timeline: Timeline, state: str) -> datetime | None:
    exits = [v.exited_at for v in timeline.states if v.name == state and v.exited_at]
    return max(exits, default=None)


# --- detection and analysis ---------------------------------------------------------------------


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


class FindingFacts(Model):
    """The finding as detected: what, how bad, where, since when."""

    read: Annotated[
        bool,
        Field(
            description="False when the delivery could not be read as a finding: the facts are "
            "the raw event's."
        ),
    ]
    id: str | None = None
    type: str | None = None
    product: str | None = None
    severity: float | None = None
    severity_label: str | None = None
    title: str | None = None
    description: str | None = None
    account_id: str | None = None
    region: str | None = None
    resource: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    count: int | None = None


class IndicatorEvidence(Model):
    """An indicator the finding names, with what the knowledge base knew of it before."""

    kind: IndicatorKind
    value: str
    role: IndicatorRole
    direction: Direction | None = None
    local_port: int | None = None
    remote_port: int | None = None
    protocol: str | None = None
    threat_lists: list[str] = Field(default_factory=list)
    history: Annotated[
        IndicatorHistory | None, Field(description="None when the enrich step did not run.")
    ] = None


class DetectionAndAnalysis(Model):
    """NIST SP 800-61 detection and analysis: the finding, its indicators, what they mean."""

    finding: FindingFacts
    indicators: list[IndicatorEvidence] = Field(default_factory=list)
    threat_lists: Annotated[
        list[str], Field(description="Every threat list an indicator is on.")
    ] = Field(default_factory=list)
    enriched: Annotated[
        bool,
        Field(description="False when the enrich step did not run: no history, no ATT&CK mapping."),
    ]
    known_indicators: int = 0
    attack: AttackMapping | None = None


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
    severity = raw_value(raw, "severity", "Severity")
    if not isinstance(severity, int | float) or isinstance(severity, bool):
        severity = None
    resource = raw_value(raw, "resource", "Resource")
    return FindingSummary(
        id=_text(raw_value(raw, "id", "Id")),
        type=_text(raw_value(raw, "type", "Type")),
        severity=severity,
        severity_label=severity_label(severity).value if severity is not None else None,
        title=_text(raw_value(raw, "title", "Title")),
        account_id=_text(raw_value(raw, "accountId", "AccountId", "account_id")),
        region=_text(raw_value(raw, "region", "Region")),
        resource=_describe_raw_resource(resource) if isinstance(resource, Mapping) else None,
    )


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


def detection_and_analysis(incident: Incident) -> DetectionAndAnalysis:
    """The detection and analysis phase of an incident."""
    summary = summarize(incident)
    finding = incident.finding
    facts = FindingFacts(read=finding is not None, **asdict(summary))
    if finding is not None:
        facts = facts.model_copy(
            update={
                "product": finding.product,
                "description": finding.description or None,
                "created_at": finding.created_at,
                "updated_at": finding.updated_at,
                "first_seen": first_seen_of(incident),
                "last_seen": finding.last_seen,
                "count": finding.count,
            }
        )
    if incident.deliveries is not None and incident.deliveries.count is not None:
        # Over every delivery: the latest update's count and last seen.
        deliveries = incident.deliveries
        facts = facts.model_copy(
            update={"count": deliveries.count, "last_seen": deliveries.last_seen or facts.last_seen}
        )

    enrichment = incident.enrichment
    histories = {
        (history.kind, history.value): history
        for history in (enrichment.indicators if enrichment else [])
    }
    indicators = [
        IndicatorEvidence(
            kind=indicator.kind,
            value=indicator.value,
            role=indicator.role,
            direction=indicator.direction,
            local_port=indicator.local_port,
            remote_port=indicator.remote_port,
            protocol=indicator.protocol,
            threat_lists=list(indicator.threat_lists),
            history=histories.get((indicator.kind, indicator.value)),
        )
        for indicator in (finding.indicators if finding else [])
    ]
    lists = dict.fromkeys(name for i in indicators for name in i.threat_lists)
    return DetectionAndAnalysis(
        finding=facts,
        indicators=indicators,
        threat_lists=list(lists),
        enriched=enrichment is not None,
        known_indicators=enrichment.known_indicators if enrichment else 0,
        attack=enrichment.attack if enrichment else None,
    )


# --- containment, eradication and recovery ------------------------------------------------------


class Strategy(Model):
    """The containment strategy chosen: the decision under the policy."""

    mode: Mode
    rule: str | None = None
    reason: str
    priority: Priority = Priority.NORMAL
    approval_timeout_seconds: int | None = None
    refusals: list[Refusal] = Field(default_factory=list)
    unavailable: Annotated[
        list[PlannedAction],
        Field(description="Planned by the policy, not carried out by this version."),
    ] = Field(default_factory=list)


class ApprovalEvidence(Model):
    """Who allowed or refused the disruptive actions, when, and why."""

    approval_id: str | None = None
    status: ApprovalStatus
    approver: Annotated[
        str | None,
        Field(description="The principal who answered, as the approvals service recorded it."),
    ] = None
    requested_at: datetime | None = None
    answered_at: datetime | None = None
    reason: str | None = None
    expires_at: datetime | None = None
    escalated_at: datetime | None = None
    waited: Annotated[
        float | None, Field(description="Seconds from the request to the answer.")
    ] = None


class Undo(Model):
    """How an action ends: on its own at its expiry, or by a person's command."""

    expires: Annotated[
        bool,
        Field(
            description="Whether the expiry run lifts it; isolation, revocation and closing a "
            "bucket never expire."
        ),
    ]
    command: Annotated[
        str | None,
        Field(
            description="The command that ends it (sooner, for an action that expires); None when "
            "nothing was applied."
        ),
    ] = None
    effect: Annotated[str, Field(description="What the command puts back.")]


class ActionEvidence(Model):
    """One action taken: when, with what outcome, how it was verified and how it is undone."""

    action_id: str
    kind: ActionKind
    target: str
    status: ActionStatus
    at: datetime
    detail: str = ""
    verification: str
    undo: Undo
    expires_at: datetime | None = None
    record_id: Annotated[
        str | None,
        Field(description="The block or catalogue record id; the rollback command takes it."),
    ] = None
    from_before: Annotated[
        bool,
        Field(
            description="True for a block left in force by an earlier attempt or execution that "
            "no result shows."
        ),
    ] = False


class ContainmentEradicationRecovery(Model):
    """NIST SP 800-61 containment, eradication and recovery: the decision, approval, actions."""

    strategy: Annotated[
        Strategy | None,
        Field(description="None when no decision was made: the execution failed before Decide."),
    ] = None
    approval: ApprovalEvidence | None = None
    actions: list[ActionEvidence] = Field(default_factory=list)
    dry_run: bool = False


def containment(incident: Incident) -> ContainmentEradicationRecovery:
    """The containment, eradication and recovery phase of an incident."""
    decision = incident.decision
    strategy = None
    if decision is not None:
        strategy = Strategy(
            mode=decision.mode,
            rule=decision.rule,
            reason=decision.reason,
            priority=decision.priority,
            approval_timeout_seconds=decision.approval_timeout_seconds,
            refusals=decision.refusals,
            unavailable=decision.unavailable,
        )
    actions = [_evidence(incident, result, False) for result in incident.actions]
    actions += [_evidence(incident, block, True) for block in incident.blocks_in_force]
    return ContainmentEradicationRecovery(
        strategy=strategy,
        approval=_approval(incident),
        actions=actions,
        dry_run=incident.dry_run,
    )


def _approval(incident: Incident) -> ApprovalEvidence | None:
    approval = incident.approval
    if approval is not None:
        return ApprovalEvidence(
            approval_id=approval.approval_id,
            status=approval.status,
            approver=approval.approver,
            requested_at=approval.requested_at,
            answered_at=approval.answered_at,
            reason=approval.reason,
            expires_at=approval.expires_at,
            escalated_at=approval.escalated_at,
            waited=_seconds(approval.requested_at, approval.answered_at),
        )
    if incident.outcome is Outcome.TIMED_OUT:
        return ApprovalEvidence(status=ApprovalStatus.TIMED_OUT)
    return None


def verification(result: ActionResult) -> str:
    """How the action's effect was checked, as its result tells."""
    # TODO(report-verification): the catalogue's own check is in the result's detail only; the
    # actions table keeps it apart (verified, verification), but the report does not read it.
    status = result.status
    if status is ActionStatus.PLANNED:
        return "dry run: nothing was changed, nothing to verify"
    if status is ActionStatus.QUEUED:
        return (
            "queued: the WAF writer writes the IP set within its interval; "
            "cloud-sniper blocks list shows it active once written"
        )
    if status is ActionStatus.NOT_FOUND:
        return "not applied: the target does not exist in the account"
    if status is ActionStatus.UNAVAILABLE:
        return "not applied: not available where it ran"
    if status is ActionStatus.FAILED:
        return "not in force: it failed (see the detail)"

    if result.kind in VERIFIED_IN_ACCOUNT:
        if status is ActionStatus.ALREADY_APPLIED:
            return "in force from before, checked again in the account"
        return "checked in the account once applied"
    if status is ActionStatus.ALREADY_APPLIED:
        return "already in force; its record was found"
    # Blocks are written in one call each; a write AWS accepted is the check.
    return "accepted by AWS when written"


def undo(incident: Incident, result: ActionResult) -> Undo:
    """How the action ends: on its own at its expiry, or by a person's command."""
    ending = ENDINGS[result.kind]
    if result.status in (ActionStatus.PLANNED, ActionStatus.NOT_FOUND, ActionStatus.UNAVAILABLE):
        return Undo(expires=ending.expires, effect="nothing to undo: nothing was applied")
    command = _command(incident, result, ending)
    return Undo(expires=ending.expires, command=command, effect=ending.undoes)


def _command(incident: Incident, result: ActionResult, ending: Ending) -> str:
    return ending.undo.format(
        incident_id=incident.incident_id,
        target=result.target,
        action=result.block_id or result.action_id,
    )


def _evidence(incident: Incident, result: ActionResult, from_before: bool) -> ActionEvidence:
    return ActionEvidence(
        action_id=result.action_id,
        kind=result.kind,
        target=result.target,
        status=result.status,
        at=result.at,
        detail=result.detail,
        verification=verification(result),
        undo=undo(incident, result),
        expires_at=result.expires_at,
        record_id=result.block_id,
        from_before=from_before,
    )


# --- post-incident activity ---------------------------------------------------------------------


class Expiry(Model):
    """When an action in force ends: at its expiry, or only by a person."""

    kind: ActionKind
    target: str
    expires_at: Annotated[
        datetime | None, Field(description="None for an action that never expires.")
    ] = None
    command: Annotated[
        str,
        Field(description="The command that ends it sooner, or at all for one that never expires."),
    ]


class PostIncidentActivity(Model):
    """NIST SP 800-61 post-incident activity: what to check next, and when the blocks end."""

    family: str
    family_title: str
    checks: list[str]
    expiries: list[Expiry] = Field(default_factory=list)


def post_incident(incident: Incident) -> PostIncidentActivity:
    """The post-incident activity of an incident: its family's checks and the expiries."""
    family = family_for(incident.finding, summarize(incident).type)
    expiries = []
    for result in [*incident.actions, *incident.blocks_in_force]:
        if result.status not in _IN_FORCE:
            continue
        ending = ENDINGS[result.kind]
        expiries.append(
            Expiry(
                kind=result.kind,
                target=result.target,
                expires_at=result.expires_at if ending.expires else None,
                command=_command(incident, result, ending),
            )
        )
    expiries.sort(key=lambda e: (e.expires_at is None, _utc(e.expires_at) if e.expires_at else 0))
    return PostIncidentActivity(
        family=family.name,
        family_title=family.title,
        checks=list(family.checks),
        expiries=expiries,
    )


# --- the document -------------------------------------------------------------------------------


class IncidentReport(Incident):
    """The incident report: the incident as recorded, its timeline and its NIST phases.

    Every field of the incident is kept as it is recorded; the phase sections and the response
    times are derived from them and from the timeline, and are written, never read back.
    """

    report_schema: Annotated[Literal["cloud-sniper/incident-report"], Field(alias="schema")] = (
        REPORT_SCHEMA
    )
    version: Literal[2] = REPORT_VERSION
    timeline: Timeline

    @computed_field
    @property
    def response_times(self) -> ResponseTimes:
        """The time to decision and to mitigation."""
        return response_times(self, self.timeline)

    @computed_field
    @property
    def detection_and_analysis(self) -> DetectionAndAnalysis:
        """NIST SP 800-61 phase 2: detection and analysis."""
        return detection_and_analysis(self)

    @computed_field
    @property
    def containment_eradication_recovery(self) -> ContainmentEradicationRecovery:
        """NIST SP 800-61 phase 3: containment, eradication and recovery."""
        return containment(self)

    @computed_field
    @property
    def post_incident_activity(self) -> PostIncidentActivity:
        """NIST SP 800-61 phase 4: post-incident activity."""
        return post_incident(self)

    def incident(self) -> Incident:
        """The incident as recorded, without the report's additions."""
        return Incident.model_validate(self.model_dump(include=set(Incident.model_fields)))


def incident_report(incident: Incident, timeline: Timeline) -> IncidentReport:
    """The report of an incident with its timeline."""
    return IncidentReport.model_validate(
        {**incident.model_dump(include=set(Incident.model_fields)), "timeline": timeline}
    )


def render_json(report: IncidentReport) -> str:
    """The report as a versioned JSON document: schema and version first."""
    document = report.model_dump(mode="json", by_alias=True)
    head = {"schema": document.pop("schema"), "version": document.pop("version")}
    return json.dumps({**head, **document}, indent=2) + "\n"


def read_json(text: str) -> IncidentReport:
    """Read back a document written by render_json, refusing other schemas and versions."""
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError(f"not a {REPORT_SCHEMA} document: a JSON {type(document).__name__}")
    schema, version = document.get("schema"), document.get("version")
    if (schema, version) != (REPORT_SCHEMA, REPORT_VERSION):
        raise ValueError(f"not a {REPORT_SCHEMA} v{REPORT_VERSION} document: {schema} v{version}")
    # The derived sections are computed again from the record.
    for name in IncidentReport.model_computed_fields:
        document.pop(name, None)
    for visit in document.get("timeline", {}).get("states", []):
        for name in StateVisit.model_computed_fields:
            visit.pop(name, None)
    return IncidentReport.model_validate(document)


def json_schema() -> str:
    """The JSON Schema of the report document, as docs/incident-report.schema.json holds it."""
    schema = IncidentReport.model_json_schema(by_alias=True, mode="serialization")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:{REPORT_SCHEMA.replace('/', ':')}:{REPORT_VERSION}",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


# --- shared by the renderers --------------------------------------------------------------------


def milestones(incident: Incident) -> list[tuple[datetime, str]]:
    """What happened when, from the finding's creation to the report, oldest first."""
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
        if incident.approval.escalated_at:
            events.append((incident.approval.escalated_at, "approval escalated"))
        if incident.approval.answered_at:
            status = incident.approval.status.value
            events.append((incident.approval.answered_at, f"approval answered: {status}"))
    for action in incident.actions:
        events.append((action.at, f"{action.kind.value} {action.target}: {action.status.value}"))
    for block in incident.blocks_in_force:
        state = "applied" if block.status is ActionStatus.APPLIED else block.status.value
        events.append((block.at, f"{block.kind.value} {block.target}: {state}, still in force"))
    events.append((incident.reported_at, f"reported: {incident.outcome.value}"))
    return sorted(events, key=lambda event: _utc(event[0]))


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


def when(at: datetime) -> str:
    """A time as the reports show it, in UTC."""
    return _utc(at).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """A duration for a person: 2 h 05 min, 3 min 20 s, 1.2 s."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((_utc(end) - _utc(start)).total_seconds(), 3)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _describe_raw_resource(resource: Mapping[str, Any]) -> str | None:
    kind = _text(raw_value(resource, "resourceType", "ResourceType"))
    instance = raw_value(resource, "instanceDetails", "InstanceDetails") or {}
    key = raw_value(resource, "accessKeyDetails", "AccessKeyDetails") or {}
    identity = raw_value(instance, "instanceId", "InstanceId") or raw_value(
        key, "accessKeyId", "AccessKeyId"
    )
    parts = [part for part in (kind, _text(identity)) if part]
    return " ".join(parts) or None


def raw_value(mapping: Any, *names: str) -> Any:
    """The first of the names a raw mapping holds a value for; None when it holds none."""
    if not isinstance(mapping, Mapping):
        return None
    for name in names:
        if mapping.get(name) not in (None, ""):
            return mapping[name]
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


if __name__ == "__main__":
    sys.stdout.write(json_schema())
