"""Intake of finding deliveries: validate, name and start one execution per finding update.

One delivery (an SQS message) holds one finding, or, as a Security Hub event, several: each
finding is admitted, started or quarantined on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from cloud_sniper.domain import asff, naming
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import Finding
from cloud_sniper.domain.normalize import normalize, peel_replay, unwrap

# Step Functions refuses an execution input larger than 256 KiB.
MAX_EXECUTION_INPUT_BYTES = 256 * 1024


class Pipeline(Protocol):
    """What the intake needs of AWS: start an execution, keep a delivery it cannot read."""

    def start_execution(self, name: str, state: str) -> bool: ...

    def quarantine(self, body: str, error: str, source: str) -> None: ...


class Outcome(StrEnum):
    STARTED = "started"
    DUPLICATE = "duplicate"  # the execution already exists: an earlier delivery started it
    QUARANTINED = "quarantined"
    # A Security Hub finding resolved, suppressed or archived: nothing to act on.
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Admission:
    """A readable delivery and the execution that will handle it."""

    finding: Finding
    execution_name: str
    incident_id: str
    dry_run: bool
    state: str  # the execution's input, STATE as JSON


@dataclass(frozen=True)
class Receipt:
    """What became of one finding of a delivery."""

    outcome: Outcome
    source: str  # "<queue name>#<message id>", and "#<n>" for the n-th finding of several
    admission: Admission | None = None
    error: str | None = None


def read(body: str) -> tuple[list[dict], bool]:
    """The findings' deliveries in one SQS message body, one per finding, and its dry-run flag.

    Raises InvalidFindingError naming the field when the body holds no delivery we can read.
    """
    try:
        document = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidFindingError(
            f"event: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    delivery, dry_run = peel_replay(document)
    return asff.split(delivery), dry_run


def admit(delivery: dict, dry_run: bool, received_at: datetime) -> Admission:
    """Build the execution that will handle one finding's delivery.

    Raises InvalidFindingError naming the field when the delivery is not a finding we can read.
    """
    finding = normalize(delivery)

    incident = naming.incident_id(finding.source, finding.id)
    state = {
        # A replay's envelope only carries the delivery and the dry-run flag, both kept here.
        "event": delivery,
        "dry_run": dry_run,
        "received_at": _iso(received_at),
        "incident_id": incident,
    }
    encoded = json.dumps(state, separators=(",", ":"))
    size = len(encoded.encode())
    if size > MAX_EXECUTION_INPUT_BYTES:
        raise InvalidFindingError(
            f"event: {size} bytes, more than an execution input takes ({MAX_EXECUTION_INPUT_BYTES})"
        )
    return Admission(
        finding=finding,
        execution_name=naming.execution_name(finding.id, finding.updated_at, dry_run),
        incident_id=incident,
        dry_run=dry_run,
        state=encoded,
    )


def receive(body: str, *, source: str, received_at: datetime, pipeline: Pipeline) -> list[Receipt]:
    """Start the execution of each finding in one delivery; quarantine those it cannot read.

    A Security Hub finding that is resolved, suppressed or archived is skipped. AWS failures
    propagate, so that the delivery is retried: the executions already started are then
    duplicates, and nothing is quarantined before every execution has started.
    """
    try:
        deliveries, dry_run = read(body)
    except InvalidFindingError as exc:
        pipeline.quarantine(body, str(exc), source)
        return [Receipt(Outcome.QUARANTINED, source, error=str(exc))]

    receipts: list[Receipt] = []
    rejected: list[tuple[str, Receipt]] = []
    several = len(deliveries) > 1
    for number, delivery in enumerate(deliveries, start=1):
        where = f"{source}#{number}" if several else source
        try:
            admission = admit(delivery, dry_run, received_at)
        except InvalidFindingError as exc:
            # One finding of several is kept alone, so that a replay of it reads it alone.
            kept = _message(delivery, dry_run) if several else body
            rejected.append((kept, Receipt(Outcome.QUARANTINED, where, error=str(exc))))
            continue
        reason = _closed(delivery)
        if reason is not None:
            receipts.append(Receipt(Outcome.SKIPPED, where, admission, error=reason))
            continue
        started = pipeline.start_execution(admission.execution_name, admission.state)
        outcome = Outcome.STARTED if started else Outcome.DUPLICATE
        receipts.append(Receipt(outcome, where, admission))

    for kept, receipt in rejected:
        pipeline.quarantine(kept, receipt.error or "", receipt.source)
    return receipts + [receipt for _, receipt in rejected]


def _closed(delivery: dict) -> str | None:
    # EventBridge cannot leave these out: its rules match an event when any of its findings
    # matches, and the local runtime's emulated rules cannot read into arrays of objects.
    finding, _ = unwrap(delivery)
    return asff.closed(finding) if asff.is_finding(finding) else None


def _message(delivery: dict, dry_run: bool) -> str:
    if dry_run:
        delivery = {
            "source": naming.EVENT_SOURCE,
            "detail-type": naming.REPLAY_DETAIL_TYPE,
            "detail": {"finding": delivery, "dry_run": True},
        }
    return json.dumps(delivery, separators=(",", ":"))


def ingest(state: Any) -> Finding:
    """The Ingest state: normalize the delivery an execution was started with (STATE.event)."""
    if not isinstance(state, dict) or state.get("event") is None:
        raise InvalidFindingError("state.event: missing")
    return normalize(state["event"])


def received_at(sent_timestamp: str | None, now: datetime | None = None) -> datetime:
    """When the pipeline received a delivery: the time SQS took the message, in UTC.

    The queue's timestamp rather than the clock's keeps a retried message's STATE unchanged.
    """
    if sent_timestamp and sent_timestamp.isdigit():
        return datetime.fromtimestamp(int(sent_timestamp) / 1000, tz=UTC)
    return now or datetime.now(UTC)


def record_source(event_source_arn: str | None, message_id: str) -> str:
    """Name where a delivery came from as "<queue name>#<message id>"."""
    queue = (event_source_arn or "sqs").rsplit(":", 1)[-1]
    return f"{queue}#{message_id}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
