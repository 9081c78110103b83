"""The actions table: one item per catalogue action applied, with what its undo needs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from cloud_sniper.domain import naming
from services.mitigate.adapters._aws import all_items, aws_error, get_item, put_unless_active
from services.mitigate.catalogue import ActionRecord, RecordStatus


class DynamoRecordStore:
    """Reads and writes ActionRecord items in the actions table (a boto3 Table resource)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, record_id: str) -> ActionRecord | None:
        item = get_item(self._table, "record_id", record_id)
        return _record(item) if item else None

    def put_new(self, record: ActionRecord) -> bool:
        """Record an action; False when one in force is already recorded for that target."""
        return put_unless_active(self._table, "record_id", _item(record), RecordStatus.ACTIVE.value)

    def save(self, record: ActionRecord) -> None:
        """Write the record as it is now (undone, verified again)."""
        try:
            self._table.put_item(Item=_item(record))
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"PutItem {record.record_id}") from exc

    def by_incident(self, incident_id: str) -> list[ActionRecord]:
        """The actions one incident applied."""
        params = {
            "IndexName": naming.ACTIONS_BY_INCIDENT_INDEX,
            "KeyConditionExpression": Key("incident_id").eq(incident_id),
        }
        return self._pages("query", params)

    def all(self) -> list[ActionRecord]:
        return self._pages("scan", {})

    def _pages(self, operation: str, params: dict[str, Any]) -> list[ActionRecord]:
        items = all_items(self._table, operation, params, f"{operation} {naming.ACTIONS_TABLE}")
        records = [_record(item) for item in items]
        return sorted(records, key=lambda record: (record.applied_at, record.record_id))


def _item(record: ActionRecord) -> dict[str, Any]:
    return _decimals(record.model_dump(mode="json", exclude_none=True))


def _decimals(value: Any) -> Any:
    # DynamoDB takes numbers as Decimal, never float.
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {key: _decimals(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decimals(item) for item in value]
    return value


def _record(item: dict[str, Any]) -> ActionRecord:
    return ActionRecord.model_validate(_numbers(item))


def _numbers(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _numbers(item) for key, item in value.items()}
    if isinstance(value, list | set):
        return [_numbers(item) for item in value]
    return value
