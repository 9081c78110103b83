"""The report service's AWS side: tables, bucket, event bus, the executions' histories."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError, is_transient
from cloud_sniper.domain.models import ApprovalStatus
from services.report.nist import HistoryEvent, HistoryUnavailableError, history_event

# The status of a block the mitigate service applied and the expiry run has not lifted.
BLOCK_ACTIVE = "active"

# Reports written for the same incident at once by several executions retry their write.
WRITE_ATTEMPTS = 3


class EventNotPublishedError(RuntimeError):
    """EventBridge refused the incident-reported event for a reason a retry will not change."""


def dynamodb_table(name: str) -> Any:
    """A DynamoDB table, through a resource created on first use."""
    return boto3.resource("dynamodb").Table(name)


def s3_client() -> Any:
    """An S3 client, created on first use."""
    return boto3.client("s3")


def events_client() -> Any:
    """An EventBridge client, created on first use."""
    return boto3.client("events")


def stepfunctions_client() -> Any:
    """A Step Functions client, created on first use."""
    return boto3.client("stepfunctions")


class IncidentsTable:
    """The incidents table: one item per finding, key incident_id."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, incident_id: str) -> dict[str, Any] | None:
        """The stored item of the incident, if any."""
        with _translated("dynamodb GetItem"):
            response = self._table.get_item(Key={"incident_id": incident_id}, ConsistentRead=True)
        return response.get("Item")

    def upsert(
        self,
        incident_id: str,
        merge: Callable[[Mapping[str, Any] | None], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Replace the stored item by merge(stored item); read again if another report wrote.

        merge returns None to leave the stored item as it is.
        """
        key = {"incident_id": incident_id}
        for _ in range(WRITE_ATTEMPTS):
            with _translated("dynamodb GetItem"):
                previous = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
            item = merge(previous)
            if item is None:
                return None

            condition, values = _unchanged_since(previous)
            try:
                with _translated("dynamodb PutItem"):
                    self._table.put_item(Item=item, ConditionExpression=condition, **values)
            except ClientError as exc:
                if _error_code(exc) != "ConditionalCheckFailedException":
                    raise
                continue
            return item
        raise TransientAwsError(f"incident {incident_id} changed during every write attempt")

    def reported_between(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The items reported from since to until, both UTC (a scan: the table has no time key)."""
        # The times are stored as UTC ISO strings, which sort as the times do.
        window = Attr("reported_at").between(since.isoformat(), until.isoformat())
        return _scan(self._table, {"FilterExpression": window})


class ApprovalsTable:
    """The approvals table: key approval_id, one approval per execution (naming.approval_id)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def time_out(self, execution_name: str, at: datetime) -> str | None:
        """Mark the execution's approval timed out if still pending; return its id if marked.

        An approval answered in the meantime keeps its answer.
        """
        approval_id = naming.approval_id(execution_name)
        try:
            with _translated("dynamodb UpdateItem"):
                self._table.update_item(
                    Key={"approval_id": approval_id},
                    UpdateExpression="SET #status = :timed_out, timed_out_at = :at",
                    # The execution's name guards against another execution's id colliding.
                    ConditionExpression="#status = :pending AND execution_name = :execution_name",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={
                        ":timed_out": ApprovalStatus.TIMED_OUT.value,
                        ":pending": ApprovalStatus.PENDING.value,
                        ":execution_name": execution_name,
                        ":at": at.isoformat(),
                    },
                )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            return None
        return approval_id


class BlocksTable:
    """The blocks table the mitigate service writes, read through its index by incident_id."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def in_force(self, incident_id: str) -> list[dict[str, Any]]:
        """The incident's blocks not lifted yet, as stored."""
        arguments: dict[str, Any] = {
            "IndexName": naming.BLOCKS_BY_INCIDENT_INDEX,
            "KeyConditionExpression": Key("incident_id").eq(incident_id),
            "FilterExpression": Attr("status").eq(BLOCK_ACTIVE),
        }
        items: list[dict[str, Any]] = []
        while True:
            with _translated("dynamodb Query"):
                page = self._table.query(**arguments)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def removed_between(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The blocks lifted from since to until, both UTC: expired, evicted or rolled back."""
        window = Attr("removed_at").between(since.isoformat(), until.isoformat())
        return _scan(
            self._table,
            {
                "FilterExpression": window,
                "ProjectionExpression": "block_id, kind, #status, removed_at, removed_reason",
                "ExpressionAttributeNames": {"#status": "status"},
            },
        )


class ActionsTable:
    """The actions table the response catalogue writes: one record per target and kind."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def undone_between(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The records undone (by a person) or expired from since to until, both UTC."""
        window = Attr("undone_at").between(since.isoformat(), until.isoformat())
        return _scan(
            self._table,
            {
                "FilterExpression": window,
                "ProjectionExpression": "record_id, kind, #status, undone_at",
                "ExpressionAttributeNames": {"#status": "status"},
            },
        )


class ExecutionHistory:
    """The pipeline executions' histories, read for their timeline alone."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def events(self, execution_arn: str) -> list[HistoryEvent]:
        """Every event of the execution, oldest first: its type, time and state name, no more.

        The inputs and outputs hold the approval's task token: they are not asked for
        (includeExecutionData), and what comes anyway is not copied.
        """
        events: list[HistoryEvent] = []
        try:
            pages = self._client.get_paginator("get_execution_history").paginate(
                executionArn=execution_arn, includeExecutionData=False
            )
            for page in pages:
                events += [history_event(event) for event in page.get("events", [])]
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "")
            raise HistoryUnavailableError(
                f"states GetExecutionHistory: {_error_code(exc)}: {message}".rstrip(": ")
            ) from exc
        except BotoCoreError as exc:
            raise HistoryUnavailableError(f"states GetExecutionHistory: {exc}") from exc
        return events


class ReportsBucket:
    """The reports bucket."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.name = bucket

    def put(self, key: str, body: str, content_type: str) -> None:
        """Write one report; writing it again replaces it with the same content."""
        with _translated("s3 PutObject"):
            self._client.put_object(
                Bucket=self.name, Key=key, Body=body.encode(), ContentType=content_type
            )


class EventBus:
    """The project's event bus."""

    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        """Put one event from the project's source on the bus."""
        entry = {
            "Source": naming.EVENT_SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail),
            "EventBusName": self._bus_name,
        }
        with _translated("events PutEvents"):
            response = self._client.put_events(Entries=[entry])
        if not response.get("FailedEntryCount"):
            return

        [failed] = response["Entries"]
        code = failed.get("ErrorCode", "")
        if is_transient(code):
            raise TransientAwsError(f"events PutEvents: {code}")
        raise EventNotPublishedError(f"{code}: {failed.get('ErrorMessage', '')}")


def _scan(table: Any, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a scan, page after page."""
    items: list[dict[str, Any]] = []
    while True:
        with _translated("dynamodb Scan"):
            page = table.scan(**arguments)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        arguments = {**arguments, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def _unchanged_since(previous: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    # Every new execution raises deliveries, so an unchanged count means no report came between.
    if previous is None:
        return "attribute_not_exists(incident_id)", {}
    if "deliveries" not in previous:
        return "attribute_not_exists(deliveries)", {}
    return "deliveries = :deliveries", {
        "ExpressionAttributeValues": {":deliveries": previous["deliveries"]}
    }


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Raise throttling, service and connection errors as TransientAwsError; others as they are."""
    try:
        yield
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if is_transient(_error_code(exc), status):
            raise TransientAwsError(f"{operation}: {_error_code(exc)}") from exc
        raise
    except (BotoConnectionError, HTTPClientError) as exc:
        raise TransientAwsError(f"{operation}: {exc}") from exc
