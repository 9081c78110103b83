"""Approvals as a person sees them: list the waiting ones, approve or deny, resume the execution.

Runs outside Lambda (the CLI). Every function takes a boto3 Session, or anything with a
`client(service_name)` method, and uses only its DynamoDB and Step Functions clients.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError
from pydantic import ValidationError

from cloud_sniper.domain import naming
from cloud_sniper.domain.approvals import ApprovalRecord
from cloud_sniper.domain.models import Approval, ApprovalStatus

# What Step Functions answers when the task no longer waits: its timeout passed, or the
# execution ended (stopped, or timed out and moved on).
GONE_ERRORS = frozenset({"TaskTimedOut", "TaskDoesNotExist"})

_STATUS = {"#status": "status"}


class ApprovalError(Exception):
    """An approval cannot be read or answered; the message names it and says why."""


def list_approvals(
    session: Any,
    status: ApprovalStatus | str | None = None,
    *,
    table_name: str = naming.APPROVALS_TABLE,
) -> list[ApprovalRecord]:
    """The approvals, oldest request first; only those with this status when one is given."""
    arguments: dict[str, Any] = {"TableName": table_name}
    if status is not None:
        arguments.update(
            FilterExpression="#status = :status",
            ExpressionAttributeNames=_STATUS,
            ExpressionAttributeValues={":status": {"S": ApprovalStatus(status).value}},
        )
    pages = session.client("dynamodb").get_paginator("scan").paginate(**arguments)
    records = [_record(item) for page in pages for item in page.get("Items", [])]
    return sorted(records, key=lambda record: record.requested_at)


def get_approval(
    session: Any, approval_id: str, *, table_name: str = naming.APPROVALS_TABLE
) -> ApprovalRecord:
    """One approval by id."""
    return _get(session.client("dynamodb"), table_name, approval_id)


def answer(
    session: Any,
    approval_id: str,
    approve: bool,
    reason: str,
    approver: str,
    *,
    table_name: str = naming.APPROVALS_TABLE,
    now: datetime | None = None,
) -> Approval:
    """Approve or deny a pending approval and resume the execution that waits for it.

    A denial resumes the execution too: it reports the denial instead of acting.
    """
    reason, approver = reason.strip(), approver.strip()
    if not reason:
        raise ApprovalError(f"approval {approval_id}: a reason is required")
    if not approver:
        raise ApprovalError(f"approval {approval_id}: the approver is unknown")
    dynamodb = session.client("dynamodb")
    sfn = session.client("stepfunctions")
    now = now or datetime.now(UTC)

    record = _get(dynamodb, table_name, approval_id)
    if record.status != ApprovalStatus.PENDING:
        raise ApprovalError(_not_pending(record))
    if now >= record.expires_at:
        _set_timed_out(dynamodb, table_name, record, ApprovalStatus.PENDING)
        raise ApprovalError(f"approval {approval_id} expired at {_when(record.expires_at)}")

    answered = record.model_copy(
        update={
            "status": ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED,
            "approver": approver,
            "reason": reason,
            "answered_at": now,
        }
    )
    _record_answer(dynamodb, table_name, answered)

    approval = answered.approval()
    try:
        sfn.send_task_success(taskToken=record.token, output=approval.model_dump_json())
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in GONE_ERRORS:
            _set_timed_out(dynamodb, table_name, record, answered.status)
            raise ApprovalError(
                f"approval {approval_id} expired at {_when(record.expires_at)}: "
                "its execution no longer waits for an answer"
            ) from exc
        _undo_answer(dynamodb, table_name, answered)
        message = exc.response.get("Error", {}).get("Message", "")
        raise ApprovalError(
            f"approval {approval_id}: Step Functions refused the answer ({code}: {message}); "
            "it is still pending"
        ) from exc
    return approval


def _get(dynamodb: Any, table_name: str, approval_id: str) -> ApprovalRecord:
    response = dynamodb.get_item(
        TableName=table_name, Key={"approval_id": {"S": approval_id}}, ConsistentRead=True
    )
    if "Item" not in response:
        raise ApprovalError(f"approval {approval_id} does not exist")
    return _record(response["Item"])


def _record(item: dict[str, Any]) -> ApprovalRecord:
    deserializer = TypeDeserializer()
    document = _plain({key: deserializer.deserialize(value) for key, value in item.items()})
    try:
        return ApprovalRecord.model_validate(document)
    except ValidationError as exc:
        name = document.get("approval_id", "?")
        raise ApprovalError(f"approval {name} cannot be read: {exc}") from exc


def _plain(value: Any) -> Any:
    """DynamoDB's numbers and sets as JSON's."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | set):
        return [_plain(item) for item in value]
    return value


def _not_pending(record: ApprovalRecord) -> str:
    if record.status == ApprovalStatus.TIMED_OUT:
        return f"approval {record.approval_id} expired at {_when(record.expires_at)}"
    by = f" by {record.approver}" if record.approver else ""
    at = f" at {_when(record.answered_at)}" if record.answered_at else ""
    return f"approval {record.approval_id} was already answered: {record.status}{by}{at}"


def _record_answer(dynamodb: Any, table_name: str, answered: ApprovalRecord) -> None:
    """Store the answer, only if the approval is still pending: the first answer wins.

    A retried request replaces the task token of a pending approval; an answer read with the
    old token would go to a task that no longer waits, so it is refused too.
    """
    try:
        dynamodb.update_item(
            TableName=table_name,
            Key={"approval_id": {"S": answered.approval_id}},
            UpdateExpression=(
                "SET #status = :status, approver = :approver, reason = :reason, "
                "answered_at = :answered_at"
            ),
            ConditionExpression="#status = :pending AND #token = :token",
            ExpressionAttributeNames={**_STATUS, "#token": "token"},
            ExpressionAttributeValues={
                ":status": {"S": answered.status.value},
                ":approver": {"S": answered.approver or ""},
                ":reason": {"S": answered.reason or ""},
                ":answered_at": {"S": answered.model_dump(mode="json")["answered_at"]},
                ":pending": {"S": ApprovalStatus.PENDING.value},
                ":token": {"S": answered.token},
            },
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        current = _get(dynamodb, table_name, answered.approval_id)
        if current.status == ApprovalStatus.PENDING:
            raise ApprovalError(
                f"approval {answered.approval_id} was requested again meanwhile; "
                "nothing was recorded, answer it again"
            ) from exc
        raise ApprovalError(_not_pending(current)) from exc


def _undo_answer(dynamodb: Any, table_name: str, answered: ApprovalRecord) -> None:
    """Make the approval pending again after Step Functions refused the answer."""
    _set_status(
        dynamodb,
        table_name,
        answered.approval_id,
        ApprovalStatus.PENDING,
        expected=answered.status,
    )


def _set_timed_out(
    dynamodb: Any, table_name: str, record: ApprovalRecord, expected: ApprovalStatus
) -> None:
    _set_status(
        dynamodb, table_name, record.approval_id, ApprovalStatus.TIMED_OUT, expected=expected
    )


def _set_status(
    dynamodb: Any,
    table_name: str,
    approval_id: str,
    status: ApprovalStatus,
    expected: ApprovalStatus,
) -> None:
    """Move an approval from one status to another, forgetting any answer it held."""
    try:
        dynamodb.update_item(
            TableName=table_name,
            Key={"approval_id": {"S": approval_id}},
            UpdateExpression="SET #status = :status REMOVE approver, reason, answered_at",
            ConditionExpression="#status = :expected",
            ExpressionAttributeNames=_STATUS,
            ExpressionAttributeValues={
                ":status": {"S": status.value},
                ":expected": {"S": expected.value},
            },
        )
    except ClientError as exc:
        # Someone else moved it first (the report marking a timeout, another answer): theirs
        # stands.
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "an unknown time"
