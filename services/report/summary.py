"""The summary of a period: the incidents reported in it, what was done about them, how fast."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cloud_sniper.domain.models import (
    ActionKind,
    ActionStatus,
    ApprovalStatus,
    IndicatorKind,
    Mode,
    Model,
    Outcome,
    SeverityLabel,
    severity_label,
)

SUMMARY_SCHEMA = "cloud-sniper/summary-report"
SUMMARY_VERSION = 1
TOP_INDICATORS = 10
# How many unreadable records a summary names; it counts them all.
UNREADABLE_LISTED = 20

# A block queued for the WAF writer counts: the queue keeps it until the writer applies it.
EFFECTIVE = frozenset({ActionStatus.APPLIED, ActionStatus.ALREADY_APPLIED, ActionStatus.QUEUED})
# What an execution itself put in force; an action already applied was in force before it.
APPLIED_NOW = frozenset({ActionStatus.APPLIED, ActionStatus.QUEUED})
MITIGATED = frozenset({Outcome.MITIGATED, Outcome.PARTIALLY_MITIGATED})

# The indicators a summary ranks, by the name it groups them under.
INDICATOR_GROUPS = {
    IndicatorKind.IPV4: "address",
    IndicatorKind.IPV6: "address",
    IndicatorKind.DOMAIN: "domain",
    IndicatorKind.ACCESS_KEY: "key",
}
IndicatorGroup = Literal["address", "domain", "key"]

# The buckets of the time-to-mitigation distribution: upper bound in seconds, label.
MITIGATION_BUCKETS: tuple[tuple[float, str], ...] = (
    (60, "< 1 min"),
    (5 * 60, "1-5 min"),
    (15 * 60, "5-15 min"),
    (3600, "15-60 min"),
    (4 * 3600, "1-4 h"),
    (24 * 3600, "4-24 h"),
    (math.inf, ">= 1 day"),
)

_RELATIVE = re.compile(r"(?P<amount>\d+)(?P<unit>[mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class SummaryError(ValueError):
    """A period or an input the summary cannot work with; the message names it."""


# --- the summary ------------------------------------------------------------------------------


class Period(Model):
    """The period a summary covers: reports from `since` (included) to `until` (excluded)."""

    since: datetime
    until: datetime

    @model_validator(mode="after")
    def check_order(self) -> Period:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("since and until must carry a time zone")
        if self.since >= self.until:
            raise ValueError(f"since {self.since.isoformat()} is not before until")
        return self

    def holds(self, at: datetime) -> bool:
        return self.since <= _utc(at) < self.until


class Count(Model):
    """How many of something, by its name."""

    name: str
    count: int


class IndicatorCount(Model):
    """An indicator and how many incidents of the period named it."""

    group: IndicatorGroup
    kind: IndicatorKind
    value: str
    incidents: int


class MitigationTimes(Model):
    """How long the mitigated incidents took: from the finding's first seen to the last action.

    The start is the finding's first seen when the record holds it, else the execution's start;
    the end is the time of the last action the execution applied. An incident whose actions were
    all in force already (a later delivery of its finding) was mitigated before: unmeasured.
    """

    measured: int
    median_seconds: float | None = None
    p95_seconds: float | None = None
    from_first_seen: int = 0
    from_execution_start: int = 0
    # Mitigated incidents whose record holds no start, or no action applied by its execution.
    unmeasured: int = 0
    distribution: list[Count] = Field(default_factory=list)


class CsfFunction(Model):
    """A NIST CSF 2.0 function and what in the period shows it at work."""

    id: Literal["DE", "RS", "RC"]
    name: Literal["Detect", "Respond", "Recover"]
    covered: bool
    evidence: list[Count]


class Unreadable(Model):
    """A record the summary could not read, and why."""

    record: str
    reason: str


class Summary(Model):
    """What the incidents of a period were, what was done about them, and how fast."""

    period: Period
    generated_at: datetime
    incidents: int
    # Dry runs changed nothing: they are counted here and nowhere else.
    dry_runs: int = 0
    by_family: list[Count] = Field(default_factory=list)
    by_severity: list[Count] = Field(default_factory=list)
    by_mode: list[Count] = Field(default_factory=list)
    by_outcome: list[Count] = Field(default_factory=list)
    top_indicators: list[IndicatorCount] = Field(default_factory=list)
    time_to_mitigation: MitigationTimes
    nist_csf: list[CsfFunction] = Field(default_factory=list)
    unreadable: int = 0
    unreadable_listed: list[Unreadable] = Field(default_factory=list)

    def count_of(self, field: str, name: str) -> int:
        """The count of one name in a by_* list, 0 when absent."""
        counts: list[Count] = getattr(self, field)
        return next((count.count for count in counts if count.name == name), 0)


# --- what the tables hold, read leniently: another service's additions must not break it ------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class IncidentRecord(_Lenient):
    """An incidents table item, as services/report/incident.py incident_item writes it."""

    incident_id: Annotated[str, Field(min_length=1)]
    dry_run: bool = False
    outcome: Outcome
    finding_type: str | None = None
    severity: float | None = None
    decision_mode: Mode | None = None
    reported_at: datetime
    execution_started_at: datetime | None = None
    # The earliest first seen of the finding over its deliveries.
    first_seen: datetime | None = None
    report: str | None = None


class _IndicatorView(_Lenient):
    kind: IndicatorKind
    value: str


class _FindingView(_Lenient):
    indicators: list[_IndicatorView] = Field(default_factory=list)
    first_seen: datetime | None = None


class _HistoryView(_Lenient):
    kind: IndicatorKind
    value: str
    seen_before: bool = False


class _EnrichmentView(_Lenient):
    indicators: list[_HistoryView] = Field(default_factory=list)


class _DecisionView(_Lenient):
    mode: Mode
    actions: list[dict[str, Any]] = Field(default_factory=list)
    refusals: list[dict[str, Any]] = Field(default_factory=list)


class _ApprovalView(_Lenient):
    status: ApprovalStatus


class _ResultView(_Lenient):
    kind: ActionKind
    status: ActionStatus
    at: datetime


class ReportView(_Lenient):
    """The parts of an incident report (the item's `report`) a summary counts."""

    finding: _FindingView | None = None
    enrichment: _EnrichmentView | None = None
    decision: _DecisionView | None = None
    approval: _ApprovalView | None = None
    actions: list[_ResultView] = Field(default_factory=list)


class RemovedBlock(_Lenient):
    """A blocks table item the mitigate service marked removed."""

    block_id: str
    kind: ActionKind
    status: str
    removed_at: datetime | None = None
    removed_reason: str | None = None


class UndoneAction(_Lenient):
    """An actions table record of the response catalogue, undone by a person or the expiry."""

    record_id: str
    kind: ActionKind
    status: str
    undone_at: datetime | None = None


# --- the period -------------------------------------------------------------------------------


def period_bound(text: str, now: datetime, name: str = "--since") -> datetime:
    """Read a bound of the period: a time ago (`30m`, `12h`, `7d`, `2w`) or an ISO date or time.

    A date or a time without a zone is UTC.
    """
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        amount = int(relative["amount"])
        return _utc(now) - timedelta(**{_UNITS[relative["unit"]]: amount})
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SummaryError(
            f"{name} {text!r}: not a time ago (30m, 12h, 7d, 2w) nor an ISO date or time"
        ) from None
    return _utc(at)


def period(since: datetime, until: datetime) -> Period:
    """The period between two bounds, refused when empty."""
    try:
        return Period(since=_utc(since), until=_utc(until))
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise SummaryError(f"period: {reason}") from None


# --- the summary of the period ----------------------------------------------------------------


def summarize_period(
    items: Iterable[Mapping[str, Any]],
    span: Period,
    generated_at: datetime,
    removed_blocks: Iterable[Mapping[str, Any]] = (),
    undone_actions: Iterable[Mapping[str, Any]] = (),
) -> Summary:
    """Summarize the incidents reported in the period, and the blocks and actions undone in it.

    items are incidents table items; removed_blocks blocks table items; undone_actions actions
    table records. Those outside the period are left out, whatever the caller's filter was.
    """
    unreadable: list[Unreadable] = []
    records: list[tuple[IncidentRecord, ReportView | None]] = []
    dry_runs = 0
    for item in items:
        record = _read(IncidentRecord, item, "incident_id", unreadable)
        if record is None or not span.holds(record.reported_at):
            continue
        if record.dry_run:
            dry_runs += 1
            continue
        records.append((record, _report_view(record, unreadable)))

    blocks = [
        block
        for block in (_read(RemovedBlock, item, "block_id", unreadable) for item in removed_blocks)
        if block is not None and block.removed_at is not None and span.holds(block.removed_at)
    ]
    undone = [
        action
        for action in (
            _read(UndoneAction, item, "record_id", unreadable) for item in undone_actions
        )
        if action is not None and action.undone_at is not None and span.holds(action.undone_at)
    ]

    return Summary(
        period=span,
        generated_at=_utc(generated_at),
        incidents=len(records),
        dry_runs=dry_runs,
        by_family=_ranked(Counter(finding_family(r.finding_type) for r, _ in records)),
        by_severity=_severities(record for record, _ in records),
        by_mode=_ranked(
            Counter(r.decision_mode.value if r.decision_mode else "none" for r, _ in records)
        ),
        by_outcome=_ranked(Counter(record.outcome.value for record, _ in records)),
        top_indicators=top_indicators(view for _, view in records),
        time_to_mitigation=mitigation_times(records),
        nist_csf=csf_functions(records, blocks, undone),
        unreadable=len(unreadable),
        unreadable_listed=unreadable[:UNREADABLE_LISTED],
    )


def finding_family(finding_type: str | None) -> str:
    """The family of a finding type: GuardDuty's threat purpose, or the ASFF type's namespace.

    "UnauthorizedAccess:EC2/SSHBruteForce" is of UnauthorizedAccess, the threat purpose the
    finding-types data and the policy's globs name; "Software and Configuration
    Checks/Vulnerabilities/CVE" (Inspector through Security Hub) is of its first part.
    """
    if not finding_type or not finding_type.strip():
        return "unknown"
    finding_type = finding_type.strip()
    colon, slash = finding_type.find(":"), finding_type.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        return finding_type[:colon]
    if slash > 0:
        return finding_type[:slash]
    return finding_type


def top_indicators(
    views: Iterable[ReportView | None], limit: int = TOP_INDICATORS
) -> list[IndicatorCount]:
    """The indicators named by most incidents, the first `limit` of each group."""
    counts: Counter[tuple[IndicatorKind, str]] = Counter()
    for view in views:
        if view is None or view.finding is None:
            continue
        # An incident counts once per indicator, however often its finding names it.
        counts.update(
            {
                (indicator.kind, indicator.value)
                for indicator in view.finding.indicators
                if indicator.kind in INDICATOR_GROUPS
            }
        )
    ranked = sorted(counts.items(), key=lambda entry: (-entry[1], entry[0][1]))
    found: list[IndicatorCount] = []
    kept: Counter[str] = Counter()
    for (kind, value), incidents in ranked:
        group = INDICATOR_GROUPS[kind]
        if kept[group] < limit:
            kept[group] += 1
            found.append(IndicatorCount(group=group, kind=kind, value=value, incidents=incidents))
    return found


def mitigation_times(
    records: Iterable[tuple[IncidentRecord, ReportView | None]],
) -> MitigationTimes:
    """The time to mitigation of the mitigated incidents: median, p95 and distribution."""
    seconds: list[float] = []
    from_first_seen = from_start = unmeasured = 0
    for record, view in records:
        if record.outcome not in MITIGATED:
            continue
        # TODO(summary-mitigation-time): the record keeps its latest execution alone, so the
        # first mitigation of a finding delivered again is not measured, only counted unmeasured.
        done = [
            result.at for result in (view.actions if view else []) if result.status in APPLIED_NOW
        ]
        start = record.first_seen or record.execution_started_at
        if not done or start is None or max(map(_utc, done)) < _utc(start):
            unmeasured += 1
            continue
        seconds.append((max(map(_utc, done)) - _utc(start)).total_seconds())
        if record.first_seen is not None:
            from_first_seen += 1
        else:
            from_start += 1

    distribution = Counter(_bucket(value) for value in seconds)
    return MitigationTimes(
        measured=len(seconds),
        median_seconds=statistics.median(seconds) if seconds else None,
        p95_seconds=percentile(seconds, 95) if seconds else None,
        from_first_seen=from_first_seen,
        from_execution_start=from_start,
        unmeasured=unmeasured,
        distribution=[
            Count(name=label, count=distribution[label]) for _, label in MITIGATION_BUCKETS
        ],
    )


def percentile(values: Iterable[float], rank: float) -> float:
    """The nearest-rank percentile: a value observed, the smallest with rank% at or below it."""
    ordered = sorted(values)
    if not ordered:
        raise SummaryError("percentile of no value")
    index = max(0, math.ceil(rank / 100 * len(ordered)) - 1)
    return ordered[index]


def csf_functions(
    records: list[tuple[IncidentRecord, ReportView | None]],
    blocks: list[RemovedBlock],
    undone: list[UndoneAction],
) -> list[CsfFunction]:
    """The NIST CSF 2.0 functions the period shows at work, each with the evidence counted."""
    views = [view for _, view in records if view is not None]
    named = {
        (indicator.kind, indicator.value)
        for view in views
        if view.finding
        for indicator in view.finding.indicators
    }
    known = {
        (history.kind, history.value)
        for view in views
        if view.enrichment
        for history in view.enrichment.indicators
        if history.seen_before
    }
    results = [result for view in views for result in view.actions]
    approvals = [view.approval for view in views if view.approval is not None]
    reasons = Counter(block.removed_reason for block in blocks)
    # TODO(summary-releases): the catalogue records a release and a rollback alike, so every
    # isolation undone counts as a release, one undone by `rollback` too.
    undone_by_person = [action for action in undone if action.status == "undone"]
    releases = sum(1 for action in undone_by_person if action.kind is ActionKind.ISOLATE_INSTANCE)

    detect = [
        Count(name="findings received", count=len(records)),
        Count(name="indicators named", count=len(named)),
        Count(name="indicators seen before", count=len(known)),
    ]
    respond = [
        Count(name="decisions", count=sum(1 for record, _ in records if record.decision_mode)),
        Count(
            name="approvals requested",
            count=sum(1 for record, _ in records if record.decision_mode is Mode.APPROVAL),
        ),
        Count(
            name="approvals answered",
            count=sum(
                1
                for approval in approvals
                if approval.status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED)
            ),
        ),
        Count(
            name="actions taken", count=sum(1 for result in results if result.status in EFFECTIVE)
        ),
        Count(
            name="actions failed",
            count=sum(1 for result in results if result.status is ActionStatus.FAILED),
        ),
    ]
    recover = [
        Count(name="blocks expired", count=reasons["expired"]),
        Count(name="blocks rolled back", count=reasons["rolled_back"]),
        Count(name="actions expired", count=sum(1 for a in undone if a.status == "expired")),
        Count(name="actions rolled back", count=len(undone_by_person) - releases),
        Count(name="releases", count=releases),
    ]
    return [
        _csf("DE", "Detect", detect),
        _csf("RS", "Respond", respond),
        _csf("RC", "Recover", recover),
    ]


def duration_text(seconds: float | None) -> str:
    """A duration as a person reads it: 45 s, 12 min, 3.5 h, 2.1 d."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _csf(id_: Literal["DE", "RS", "RC"], name: Any, evidence: list[Count]) -> CsfFunction:
    return CsfFunction(
        id=id_, name=name, covered=any(count.count for count in evidence), evidence=evidence
    )


def _read(
    model: type[_Lenient], item: Mapping[str, Any], key: str, unreadable: list[Unreadable]
) -> Any:
    try:
        return model.model_validate(dict(item))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "record"
        unreadable.append(
            Unreadable(record=str(item.get(key, "?")), reason=f"{where}: {error['msg']}")
        )
        return None


def _report_view(record: IncidentRecord, unreadable: list[Unreadable]) -> ReportView | None:
    if not record.report:
        unreadable.append(Unreadable(record=record.incident_id, reason="report: missing"))
        return None
    try:
        document = json.loads(record.report)
    except ValueError as exc:
        unreadable.append(Unreadable(record=record.incident_id, reason=f"report: {exc}"))
        return None
    if not isinstance(document, dict) or not str(document.get("schema", "")).startswith(
        "cloud-sniper/incident-report"
    ):
        unreadable.append(
            Unreadable(record=record.incident_id, reason="report: not an incident report")
        )
        return None
    return _read(ReportView, document, "incident_id", unreadable)


def _ranked(counts: Counter[str]) -> list[Count]:
    return [
        Count(name=name, count=count)
        for name, count in sorted(counts.items(), key=lambda entry: (-entry[1], entry[0]))
    ]


def _severities(records: Iterable[IncidentRecord]) -> list[Count]:
    counts = Counter(
        severity_label(record.severity).value if record.severity is not None else "unknown"
        for record in records
    )
    # Every label, in GuardDuty's order, so that charts of two periods compare.
    names = [label.value for label in SeverityLabel] + (["unknown"] if counts["unknown"] else [])
    return [Count(name=name, count=counts[name]) for name in names]


def _bucket(seconds: float) -> str:
    return next(label for bound, label in MITIGATION_BUCKETS if seconds < bound)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
