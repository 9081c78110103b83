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
    FILE_HASH = "file_hash"  # SHA-256 of a file or executable, lower-case hex


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


class Container(Model):
    """A container the finding names: in a pod, an ECS task or on an instance."""

    id: str | None = None
    name: str | None = None
    image: str | None = None
    privileged: bool | None = None


class RelatedResource(Model):
    """A resource an attack sequence names besides the affected one."""

    uid: str
    kind: str | None = None
    name: str | None = None


class Resource(Model):
    """The affected resource: its GuardDuty resource type, kept as given, and what identifies it."""

    kind: str
    arns: list[str] = Field(default_factory=list)
    instance_id: str | None = None
    instance_profile_arn: str | None = None
    vpc_id: str | None = None
    subnet_ids: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    public_ips: list[str] = Field(default_factory=list)
    private_ips: list[str] = Field(default_factory=list)
    access_key_id: str | None = None
    principal: str | None = None
    principal_id: str | None = None
    # IAMUser, AssumedRole, Root, FederatedUser...: who holds the access key.
    user_type: str | None = None
    bucket_names: list[str] = Field(default_factory=list)
    object_keys: list[str] = Field(default_factory=list)  # "bucket/key" of S3 objects
    cluster: str | None = None
    task_arn: str | None = None
    workload: str | None = None  # a Kubernetes workload, "namespace/kind/name"
    namespace: str | None = None
    kubernetes_user: str | None = None
    containers: list[Container] = Field(default_factory=list)
    function_name: str | None = None
    db_instance_id: str | None = None
    db_cluster_id: str | None = None
    db_shard_group_id: str | None = None
    db_user: str | None = None
    volume_arns: list[str] = Field(default_factory=list)
    snapshot_arn: str | None = None
    image_arn: str | None = None
    recovery_point_arn: str | None = None
    related: list[RelatedResource] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)


class ApiCall(Model):
    """An AWS API call a finding is about."""

    service: str | None = None
    name: str | None = None
    caller_type: str | None = None
    user_agent: str | None = None
    error_code: str | None = None
    remote_account_id: str | None = None


class KubernetesCall(Model):
    """A Kubernetes API call a finding is about."""

    verb: str | None = None
    request_uri: str | None = None
    resource: str | None = None
    namespace: str | None = None
    resource_name: str | None = None
    user_agent: str | None = None
    status_code: int | None = None


class DatabaseLogin(Model):
    """Login attempts on a database, as RDS Protection counts them."""

    user: str | None = None
    application: str | None = None
    failed_attempts: int = 0
    successful_attempts: int = 0


class Process(Model):
    """A process Runtime Monitoring saw, with the names of its ancestors (parent first)."""

    name: str | None = None
    executable_path: str | None = None
    executable_sha256: str | None = None
    pid: int | None = None
    user: str | None = None
    lineage: list[str] = Field(default_factory=list)


class Threat(Model):
    """Malware found by a scan: its name and the files it was found in."""

    name: str
    severity: str | None = None
    file_paths: list[str] = Field(default_factory=list)
    hashes: list[str] = Field(default_factory=list)


class Signal(Model):
    """One signal an attack sequence chains: a finding, an API call or another detection."""

    uid: str | None = None
    type: str | None = None
    name: str | None = None
    description: str | None = None
    severity: float | None = None
    count: int | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class Activity(Model):
    """What happened, read from the finding's action, runtime, malware or sequence details."""

    action_type: str | None = None
    api_call: ApiCall | None = None
    kubernetes_call: KubernetesCall | None = None
    database_logins: list[DatabaseLogin] = Field(default_factory=list)
    process: Process | None = None
    # Runtime Monitoring's context: the tool, file, module or socket the behaviour involved.
    runtime_context: dict[str, str] = Field(default_factory=dict)
    threats: list[Threat] = Field(default_factory=list)
    scan_id: str | None = None
    signals: list[Signal] = Field(default_factory=list)
    sequence: str | None = None  # an attack sequence's description
    # An attack sequence's own indicators by key: ATTACK_TACTIC, HIGH_RISK_API, MALICIOUS_IP...
    sequence_indicators: dict[str, list[str]] = Field(default_factory=dict)


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
    activity: Activity = Field(default_factory=Activity)
    product: str = "GuardDuty"  # the product that found it, as Security Hub names products
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


TACTIC_ID = r"^TA\d{4}$"
TECHNIQUE_ID = r"^T\d{4}(\.\d{3})?$"


class AttackTactic(Model):
    """An ATT&CK tactic, such as TA0006 Credential Access."""

    model_config = ConfigDict(frozen=True)

    id: Annotated[str, Field(pattern=TACTIC_ID)]
    name: Annotated[str, Field(min_length=1)]


class AttackTechnique(Model):
    """An ATT&CK technique or sub-technique, such as T1110.001 Password Guessing."""

    model_config = ConfigDict(frozen=True)

    id: Annotated[str, Field(pattern=TECHNIQUE_ID)]
    name: Annotated[str, Field(min_length=1)]


class AttackMapping(Model):
    """What a finding type means in ATT&CK terms, and why."""

    model_config = ConfigDict(frozen=True)

    # Tuples: one instance is cached and shared by every caller.
    tactics: Annotated[tuple[AttackTactic, ...], Field(min_length=1)]
    techniques: Annotated[tuple[AttackTechnique, ...], Field(min_length=1)]
    reason: Annotated[str, Field(min_length=1)]
    attack_version: str


class Enrichment(Model):
    indicators: list[IndicatorHistory] = Field(default_factory=list)
    # What the finding type means in MITRE ATT&CK; None for a type the mapping does not know.
    attack: AttackMapping | None = None

    @property
    def known_indicators(self) -> int:
        return sum(1 for history in self.indicators if history.seen_before)


class Mode(StrEnum):
    AUTO = "auto"
    APPROVAL = "approval"
    NOTIFY = "notify"
    IGNORE = "ignore"


class ActionKind(StrEnum):
    WAF_BLOCK = "waf_block"  # the attacker's address in the WAF IP sets
    NACL_BLOCK = "nacl_block"  # an inbound deny of the attacker in the subnets' network ACLs
    C2_BLOCK = "c2_block"  # cut the C2 address outbound and its domain in DNS Firewall
    ISOLATE_INSTANCE = "isolate_instance"  # quarantine security group, forensic snapshots
    REVOKE_CREDENTIALS = "revoke_credentials"  # deactivate the key or revoke the role's sessions
    BLOCK_PUBLIC_ACCESS = "block_public_access"  # restore the bucket's public access block


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


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class OnApprovalTimeout(StrEnum):
    """What an approval nobody answers in time comes to."""

    DENY = "deny"  # nothing is done; the report says it timed out
    ESCALATE = "escalate"  # asked once more, of the escalation topic, for as long again


class Decision(Model):
    mode: Mode
    reason: str
    rule: str | None = None
    priority: Priority = Priority.NORMAL
    actions: list[PlannedAction] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)
    # Planned by the policy but not yet available in this version: reported, never run.
    unavailable: list[PlannedAction] = Field(default_factory=list)
    approval_timeout_seconds: int | None = None
    on_approval_timeout: OnApprovalTimeout | None = None
    # The blast radius the safeguards counted: what depends on each disruptive action's target,
    # in words, by action id; an action absent here was not counted.
    dependents: dict[str, list[str]] = Field(default_factory=dict)


class ActionStatus(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    QUEUED = "queued"  # handed to the WAF writer, which applies it within its interval
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
    # When nobody answered in time and the request went to the escalation topic.
    escalated_at: datetime | None = None


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


class Delivery(Model):
    """One delivery of an incident's finding: the update one execution ran for."""

    execution_name: str
    updated_at: datetime | None = None  # None when the delivery could not be read as a finding
    count: int | None = None
    last_seen: datetime | None = None


class Deliveries(Model):
    """The incident's finding over all its deliveries, so a person sees the activity goes on."""

    total: int = 1
    # GuardDuty's count and last seen as of the latest update; the first seen of the earliest.
    count: int | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    history: list[Delivery] = Field(default_factory=list)  # the latest ones, oldest update first


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
    deliveries: Deliveries | None = None
