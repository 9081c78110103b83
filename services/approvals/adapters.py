"""The approvals service's AWS side: the approvals table, the waiting tasks, IAM's approvers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from cloud_sniper.domain.approvals import ApprovalRecord
from cloud_sniper.domain.errors import TransientAwsError, is_transient
from cloud_sniper.domain.models import ApprovalStatus
from services.approvals.service import (
    Ports,
    TaskGoneError,
    TaskRefusedError,
    UnreadableRecordError,
)
from services.approvals.settings import Settings

# A person waits for the answer: a couple of quick retries, then a clear "try again".
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})

# What Step Functions answers for a task that no longer waits: its timeout passed, its
# execution ended, or (the local emulation, for an ended execution) the token is unknown.
GONE_ERRORS = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})

_STATUS = {"#status": "status"}


def build_ports(settings: Settings, session: Any = None) -> Ports:
    """Create the clients and the adapters over them; call once per cold start."""
    session = session or boto3.session.Session()
    return Ports(
        approvals=DynamoApprovals(
            session.client("dynamodb", config=CLIENT_CONFIG), settings.approvals_table
        ),
        tasks=StepFunctionsTasks(session.client("stepfunctions", config=CLIENT_CONFIG)),
        directory=IamDirectory(
            session.client("iam", config=CLIENT_CONFIG),
            settings.approvers_group,
            settings.membership_max_age_seconds,
        ),
    )


class DynamoApprovals:
    """The approvals table: key approval_id, the task token kept beside each request."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def get(self, approval_id: str) -> ApprovalRecord | None:
        with _translated(f"reading approval {approval_id}"):
            response = self._client.get_item(
                TableName=self._table,
                Key={"approval_id": {"S": approval_id}},
                ConsistentRead=True,
            )
        return _record(response["Item"]) if "Item" in response else None

    def scan(self, status: ApprovalStatus | None) -> list[ApprovalRecord]:
        arguments: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        if status is not None:
            arguments.update(
                FilterExpression="#status = :status",
                ExpressionAttributeNames=_STATUS,
                ExpressionAttributeValues={":status": {"S": status.value}},
            )
        with _translated("listing the approvals"):
            pages = list(self._client.get_paginator("scan").paginate(**arguments))
        return [_record(item) for page in pages for item in page.get("Items", [])]

    def record_answer(self, answered: ApprovalRecord) -> bool:
        document = answered.model_dump(mode="json")
        try:
            with _translated(f"recording the answer to approval {answered.approval_id}"):
                self._client.update_item(
                    TableName=self._table,
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
                        ":answered_at": {"S": document["answered_at"]},
                        ":pending": {"S": ApprovalStatus.PENDING.value},
                        ":token": {"S": answered.token},
                    },
                )
        except _ConditionFailed:
            return False
        return True

    def move(self, approval_id: str, status: ApprovalStatus, expected: ApprovalStatus) -> bool:
        try:
            with _translated(f"marking approval {approval_id} {status.value}"):
                self._client.update_item(
                    TableName=self._table,
                    Key={"approval_id": {"S": approval_id}},
                    UpdateExpression="SET #status = :status REMOVE approver, reason, answered_at",
                    ConditionExpression="#status = :expected",
                    ExpressionAttributeNames=_STATUS,
                    ExpressionAttributeValues={
                        ":status": {"S": status.value},
                        ":expected": {"S": expected.value},
                    },
                )
        except _ConditionFailed:
            # Someone moved it first (the report marking a timeout, another answer): theirs
            # stands.
            return False
        return True


class StepFunctionsTasks:
    """The tasks waiting for an answer, reached by their task tokens."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def succeed(self, token: str, output: str) -> None:
        with _task_answer():
            self._client.send_task_success(taskToken=token, output=output)

    def fail(self, token: str, error: str, cause: str) -> None:
        with _task_answer():
            self._client.send_task_failure(taskToken=token, error=error, cause=cause)


class IamDirectory:
    """The approvers group's members and the roles' ARNs, each kept for a short while."""

    def __init__(
        self,
        client: Any,
        group: str,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._group = group
        self._max_age = max_age_seconds
        self._clock = clock
        self._members: tuple[float, frozenset[str]] | None = None
        self._roles: dict[str, tuple[float, str | None]] = {}

    @property
    def group(self) -> str:
        return self._group

    def group_members(self) -> frozenset[str]:
        if self._members is not None and self._fresh(self._members[0]):
            return self._members[1]
        members: set[str] = set()
        try:
            with _translated(f"reading the IAM group {self._group}"):
                pages = self._client.get_paginator("get_group").paginate(GroupName=self._group)
                for page in pages:
                    members.update(user["Arn"] for user in page.get("Users", []))
        except _NoSuchEntity:
            # No group, no approver: every caller is refused, and told which group is missing.
            pass
        self._members = (self._clock(), frozenset(members))
        return self._members[1]

    def role_arn(self, role_name: str) -> str | None:
        kept = self._roles.get(role_name)
        if kept is not None and self._fresh(kept[0]):
            return kept[1]
        try:
            with _translated(f"reading the IAM role {role_name}"):
                arn = self._client.get_role(RoleName=role_name)["Role"]["Arn"]
        except _NoSuchEntity:
            arn = None
        self._roles[role_name] = (self._clock(), arn)
        return arn

    def _fresh(self, read_at: float) -> bool:
        return self._clock() - read_at < self._max_age


class _ConditionFailed(Exception):
    pass


class _NoSuchEntity(Exception):
    pass


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    """Translate the SDK's errors: throttling is transient, the expected ones are named."""
    try:
        yield
    except BotoCoreError as exc:
        raise TransientAwsError(f"{doing}: {exc}") from exc
    except ClientError as exc:
        code = _code(exc)
        if code == "ConditionalCheckFailedException":
            raise _ConditionFailed() from exc
        if code == "NoSuchEntity":
            raise _NoSuchEntity() from exc
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if is_transient(code, status):
            message = exc.response.get("Error", {}).get("Message", "")
            raise TransientAwsError(f"{doing}: {code}: {message}") from exc
        raise


@contextmanager
def _task_answer() -> Iterator[None]:
    """Tell a task that no longer waits from an answer Step Functions refused otherwise."""
    try:
        yield
    except BotoCoreError as exc:
        raise TaskRefusedError(str(exc)) from exc
    except ClientError as exc:
        code = _code(exc)
        if code in GONE_ERRORS:
            raise TaskGoneError(code) from exc
        message = exc.response.get("Error", {}).get("Message", "")
        raise TaskRefusedError(f"{code}: {message}") from exc


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _record(item: dict[str, Any]) -> ApprovalRecord:
    deserializer = TypeDeserializer()
    document = _plain({key: deserializer.deserialize(value) for key, value in item.items()})
    try:
        return ApprovalRecord.model_validate(document)
    except ValidationError as exc:
        name = document.get("approval_id", "?")
        # The errors name the fields at fault; their input may hold the token, so it stays out.
        fields = ", ".join(".".join(str(part) for part in error["loc"]) for error in exc.errors())
        raise UnreadableRecordError(f"approval {name} cannot be read: {fields}") from exc


def _plain(value: Any) -> Any:
    """DynamoDB's numbers and sets as JSON's."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | set):
        return [_plain(item) for item in value]
    return value
