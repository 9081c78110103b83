"""The domain vocabulary: finding, indicator, enrichment, decision, action, approval, incident."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """Base of every model the project owns: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class SeverityLabel(StrEnum):
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"
    CRITICAL = "Critical"


def severity_label(score: float) -> SeverityLabel:
    """Label a numeric severity the way GuardDuty documents its bands."""
    if score >= 9.0:
        return SeverityLabel.CRITICAL
    if score >= 7.0:
        return SeverityLabel.HIGH
    if score >= 4.0:
        return SeverityLabel.MEDIUM
    return SeverityLabel.LOW


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    UNKNOWN = "unknown"


class IndicatorKind(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DOMAIN = "domain"
    ACCESS_KEY = "access_key"
    PRINCIPAL = "principal"


class IndicatorRole(StrEnum):
    """What the indicator is to the affected resource."""

    ATTACKER = "attacker"  # a remote party acting against the resource (inbound, API caller)
    TARGET = "target"  # a remote party the resource acted against (outbound): a possible victim
    OBSERVED = "observed"  # named by the finding without a clear role (domain, key, principal)


class Indicator(Model):
    """One indicator of compromise named by a finding."""

    kind: IndicatorKind
    value: str
    role: IndicatorRole = IndicatorRole.OBSERVED
    direction: Direction | None = None
    local_port: int | None = None
    remote_port: int | None = None
    protocol: str | None = None
    threat_lists: list[str] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.kind.value}#{self.value}"

    @property
    def is_address(self) -> bool:
        return self.kind in (IndicatorKind.IPV4, IndicatorKind.IPV6)


class Resource(Model):
    """The affected resource: its GuardDuty resource type, kept as given, and what identifies it."""

    kind: str
    instance_id: str | None = None
    vpc_id: str | None = None
    subnet_ids: list[str] = Field(default_factory=list)
    public_ips: list[str] = Field(default_factory=list)
    private_ips: list[str] = Field(default_factory=list)
    access_key_id: str | None = None
    principal: str | None = None
    bucket_names: list[str] = Field(default_factory=list)
    cluster: str | None = None
    function_name: str | None = None
    db_instance_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Finding(Model):
    """A security finding, normalized from any delivery shape."""

    id: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1)]
    source: str = "aws.guardduty"
    title: str = ""
    description: str = ""
    severity: Annotated[float, Field(ge=0, le=10)]
    severity_label: SeverityLabel
    account_id: str
    region: str
    partition: str = "aws"
    created_at: datetime
    updated_at: datetime
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    count: int = 1
    resource: Resource
    indicators: list[Indicator] = Field(default_factory=list)
    sample: bool = False
    archived: bool = False

    def addresses(self) -> list[Indicator]:
        return [indicator for indicator in self.indicators if indicator.is_address]


class IndicatorHistory(Model):
    """What the knowledge base knew of an indicator before this finding."""

    kind: IndicatorKind
    value: str
    seen_before: bool
    sightings: int
    first_seen: datetime
    last_seen: datetime
    finding_types: list[str] = Field(default_factory=list)
    blocked_before: bool = False
    block_state: str | None = None


class Enrichment(Model):
    indicators: list[IndicatorHistory] = Field(default_factory=list)

    @property
    def known_indicators(self) -> int:
        return sum(1 for history in self.indicators if history.seen_before)


class Mode(StrEnum):
    AUTO = "auto"
    APPROVAL = "approval"
    NOTIFY = "notify"
    IGNORE = "ignore"


class ActionKind(StrEnum):
    WAF_BLOCK = "waf_block"
    NACL_BLOCK = "nacl_block"


class PlannedAction(Model):
    """An action the decision asks for, before it runs."""

    id: str
    kind: ActionKind
    target: str
    params: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int | None = None


class Refusal(Model):
    """An action the policy asked for that a safety rule refused."""

    target: str
    kind: str
    reason: str


class Decision(Model):
    mode: Mode
    reason: str
    rule: str | None = None
    actions: list[PlannedAction] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)
    approval_timeout_seconds: int | None = None


class ActionStatus(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    PLANNED = "planned"  # dry run: recorded, nothing changed
    NOT_FOUND = "not_found"  # the target resource does not exist in the account
    UNAVAILABLE = "unavailable"
    FAILED = "failed"


class ActionResult(Model):
    action_id: str
    kind: ActionKind
    target: str
    status: ActionStatus
    detail: str = ""
    block_id: str | None = None
    expires_at: datetime | None = None
    at: datetime


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    TIMED_OUT = "timed_out"


class Approval(Model):
    approval_id: str
    status: ApprovalStatus
    requested_at: datetime
    expires_at: datetime
    approver: str | None = None
    reason: str | None = None
    answered_at: datetime | None = None


class Outcome(StrEnum):
    MITIGATED = "mitigated"
    PARTIALLY_MITIGATED = "partially_mitigated"
    PLANNED = "planned"  # dry run
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    NOTIFIED = "notified"
    IGNORED = "ignored"
    REFUSED = "refused"  # every requested action was refused by a safety rule
    FAILED = "failed"


class Failure(Model):
    error: str
    cause: str


class Incident(Model):
    """Everything the pipeline learned and did about one finding."""

    incident_id: str
    execution_name: str | None = None
    dry_run: bool = False
    # None when the delivery could not be read as a finding; `event` keeps it as received.
    finding: Finding | None = None
    event: dict[str, Any] | None = None
    enrichment: Enrichment | None = None
    decision: Decision | None = None
    approval: Approval | None = None
    actions: list[ActionResult] = Field(default_factory=list)
    # Blocks of this incident still in force that no action result above names: applied by an
    # earlier attempt of a step that then failed, or by an earlier execution.
    blocks_in_force: list[ActionResult] = Field(default_factory=list)
    outcome: Outcome
    failure: Failure | None = None
    received_at: datetime | None = None
    execution_started_at: datetime | None = None
    reported_at: datetime
