"""Intake of finding deliveries: validate, name and start one execution per finding update."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import Finding
from cloud_sniper.domain.normalize import normalize, peel_replay

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
    """What became of one delivery."""

    outcome: Outcome
    admission: Admission | None = None
    error: str | None = None


def admit(body: str, received_at: datetime) -> Admission:
    """Read one delivery (an SQS message body) and build the execution that will handle it.

    Raises InvalidFindingError naming the field when the delivery is not a finding we can read.
    """
    try:
        document = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidFindingError(
            f"event: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    delivery, dry_run = peel_replay(document)
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


def receive(body: str, *, source: str, received_at: datetime, pipeline: Pipeline) -> Receipt:
    """Start the execution for one delivery, or quarantine it when it cannot be read.

    AWS failures propagate, so that the delivery is retried.
    """
    try:
        admission = admit(body, received_at)
    except InvalidFindingError as exc:
        pipeline.quarantine(body, str(exc), source)
        return Receipt(Outcome.QUARANTINED, error=str(exc))

    started = pipeline.start_execution(admission.execution_name, admission.state)
    return Receipt(Outcome.STARTED if started else Outcome.DUPLICATE, admission=admission)


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
