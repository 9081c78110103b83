"""Approvals as the API serves them: listed, read, and answered once by an approver.

An answer is recorded first, only while the approval is pending and holds the task token that
was read (the first answer wins; a retried request that replaced the token meanwhile makes the
answer go nowhere, so it is refused), then sent to the execution that waits for it: an approval
with SendTaskSuccess, a denial with SendTaskFailure. A task Step Functions no longer waits for
makes the approval timed out (pending again when the policy escalates it: it is asked once
more); any other refusal leaves it pending, as if never answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol

from pydantic import StringConstraints, ValidationError

from cloud_sniper.domain import naming
from cloud_sniper.domain.approvals import ApprovalRecord
from cloud_sniper.domain.models import Approval, ApprovalStatus, Model, OnApprovalTimeout
from services.approvals.access import Directory

ALL = "all"
STATUS_FILTERS = (*(status.value for status in ApprovalStatus), ALL)
DEFAULT_STATUS_FILTER = ApprovalStatus.PENDING.value
# A reason is for the incident record; a page of text is more than anyone reads there.
REASON_LIMIT = 1000
APPROVAL_ID_LIMIT = 128


class ApprovalServiceError(Exception):
    """A request the service refuses; `status` is the HTTP status the API answers with."""

    status = 500


class BadRequestError(ApprovalServiceError):
    status = 400


class NotFoundError(ApprovalServiceError):
    status = 404


class ConflictError(ApprovalServiceError):
    status = 409


class StepFunctionsRefusedError(ApprovalServiceError):
    status = 502


class TaskGoneError(Exception):
    """Step Functions no longer waits for the task: it timed out, or its execution ended."""


class TaskRefusedError(Exception):
    """Step Functions refused the answer for another reason (throttling, a service error)."""


class UnreadableRecordError(Exception):
    """An item of the approvals table is not an approval this service can read."""


class Verdict(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class AnswerBody(Model):
    """What an approver sends with an answer; who answers comes from IAM, never from here."""

    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=REASON_LIMIT)
    ]


class ApprovalStore(Protocol):
    def get(self, approval_id: str) -> ApprovalRecord | None: ...

    def scan(self, status: ApprovalStatus | None) -> list[ApprovalRecord]: ...

    def record_answer(self, answered: ApprovalRecord) -> bool:
        """Store the answer if the approval is pending with the same token; False if not."""
        ...

    def move(self, approval_id: str, status: ApprovalStatus, expected: ApprovalStatus) -> bool:
        """Set the status, forgetting any answer, if it is `expected`; False if it was not."""
        ...


class Tasks(Protocol):
    def succeed(self, token: str, output: str) -> None: ...

    def fail(self, token: str, error: str, cause: str) -> None: ...


@dataclass(frozen=True)
class Ports:
    approvals: ApprovalStore
    tasks: Tasks
    directory: Directory


def status_filter(value: str | None) -> ApprovalStatus | None:
    """The status a listing asks for (pending by default); None for every status."""
    value = DEFAULT_STATUS_FILTER if value is None else value.strip().lower()
    if value == ALL:
        return None
    if value not in STATUS_FILTERS:
        raise BadRequestError(f"status {value!r} is not one of {', '.join(STATUS_FILTERS)}")
    return ApprovalStatus(value)


def list_approvals(ports: Ports, status: str | None) -> list[dict[str, Any]]:
    """The approvals with the status asked for, oldest request first, without their tokens."""
    wanted = status_filter(status)
    records = _readable(lambda: ports.approvals.scan(wanted))
    return [view(record) for record in sorted(records, key=lambda record: record.requested_at)]


def get_approval(ports: Ports, approval_id: str) -> dict[str, Any]:
    """One approval, with its request and its answer, without its token."""
    return view(_get(ports, approval_id))


def answer(
    ports: Ports,
    approval_id: str,
    verdict: Verdict,
    body: str | None,
    approver: str,
    now: datetime,
) -> Approval:
    """Answer a pending approval for an approver and resume the execution waiting for it."""
    reason = parse_body(body).reason
    record = _get(ports, approval_id)
    if record.status is not ApprovalStatus.PENDING:
        raise ConflictError(not_pending(record))
    if now >= record.expires_at:
        if final(record):
            ports.approvals.move(
                approval_id, ApprovalStatus.TIMED_OUT, expected=ApprovalStatus.PENDING
            )
        raise ConflictError(expired(record))

    status = ApprovalStatus.APPROVED if verdict is Verdict.APPROVE else ApprovalStatus.DENIED
    answered = record.model_copy(
        update={"status": status, "approver": approver, "reason": reason, "answered_at": now}
    )
    if not ports.approvals.record_answer(answered):
        current = _get(ports, approval_id)
        if current.status is ApprovalStatus.PENDING:
            raise ConflictError(
                f"approval {approval_id} was requested again meanwhile; nothing was recorded, "
                "answer it again"
            )
        raise ConflictError(not_pending(current))

    approval = answered.approval()
    try:
        resume(ports.tasks, record.token, approval)
    except TaskGoneError as exc:
        after = ApprovalStatus.TIMED_OUT if final(record) else ApprovalStatus.PENDING
        ports.approvals.move(approval_id, after, expected=status)
        later = "" if final(record) else "; it is escalated: answer it once it is asked again"
        raise ConflictError(
            f"approval {approval_id} can no longer be answered: its execution no longer waits "
            f"for it (Step Functions: {exc}; the approval expires at "
            f"{_when(record.expires_at)}){later}"
        ) from exc
    except TaskRefusedError as exc:
        # TODO(approvals): should this undo itself fail (the table throttling past the SDK's
        # retries), the answer stays recorded while the task still waits, and the approval
        # can no longer be answered; a transaction cannot span DynamoDB and Step Functions.
        ports.approvals.move(approval_id, ApprovalStatus.PENDING, expected=status)
        raise StepFunctionsRefusedError(
            f"approval {approval_id}: Step Functions refused the answer ({exc}); it is still "
            "pending, answer it again"
        ) from exc
    return approval


def resume(tasks: Tasks, token: str, approval: Approval) -> None:
    """Send the answer to the waiting task: the approval as its output, or a denial.

    A denial fails the task with APPROVAL_DENIED_ERROR, the approval as the cause: the state
    machine catches it and reports the denial, with who denied and why.
    """
    document = approval.model_dump_json()
    if approval.status is ApprovalStatus.APPROVED:
        tasks.succeed(token, document)
    else:
        tasks.fail(token, naming.APPROVAL_DENIED_ERROR, document)


def final(record: ApprovalRecord) -> bool:
    """Whether the approval's timeout ends it, or the policy asks once more (escalation)."""
    return record.on_timeout is OnApprovalTimeout.DENY or record.escalated_at is not None


def expired(record: ApprovalRecord) -> str:
    """Why an approval past its expiry cannot be answered, and what comes of it."""
    text = f"approval {record.approval_id} expired at {_when(record.expires_at)}"
    if not final(record):
        text += " (it is escalated: answer it once it is asked again)"
    return text


def parse_body(body: str | None) -> AnswerBody:
    """The answer's body, or a 400 that names what is wrong with it."""
    expected = 'the body must be a JSON object {"reason": "why, for the incident record"}'
    if not body or not body.strip():
        raise BadRequestError(f"{expected}; it is empty")
    try:
        return AnswerBody.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors(include_url=False))
        raise BadRequestError(f"{expected}: {problems}") from exc


def view(record: ApprovalRecord) -> dict[str, Any]:
    """An approval as the API shows it: the request and its answer, never the task token."""
    return record.model_dump(mode="json")


def not_pending(record: ApprovalRecord) -> str:
    """Why an approval that is not pending cannot be answered."""
    if record.status is ApprovalStatus.TIMED_OUT:
        return f"approval {record.approval_id} expired at {_when(record.expires_at)}"
    by = f" by {record.approver}" if record.approver else ""
    at = f" at {_when(record.answered_at)}" if record.answered_at else ""
    return f"approval {record.approval_id} was already answered: {record.status}{by}{at}"


def _get(ports: Ports, approval_id: str) -> ApprovalRecord:
    record = None
    if 0 < len(approval_id) <= APPROVAL_ID_LIMIT:
        record = _readable(lambda: ports.approvals.get(approval_id))
    if record is None:
        raise NotFoundError(f"approval {approval_id} does not exist")
    return record


def _readable(read: Any) -> Any:
    try:
        return read()
    except UnreadableRecordError as exc:
        raise ApprovalServiceError(str(exc)) from exc


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "json_invalid":
        return "it is not JSON"
    if error["type"] == "extra_forbidden":
        return f"{where} is not a field of an answer (the approver is who signed the request)"
    return f"{where}: {error['msg']}"


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "an unknown time"
