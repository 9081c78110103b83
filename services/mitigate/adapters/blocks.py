"""The blocks table: one item per block we applied, active until lifted."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import TypeAdapter

from services.mitigate.actions import Block, BlockStatus, RemovedReason, archived_block_id
from services.mitigate.adapters._aws import (
    all_items,
    aws_error,
    conditional,
    get_item,
    put_unless_active,
)
from services.mitigate.waf_writer import BlockState

# A removed block stays readable this long for reports, then DynamoDB's TTL deletes it. Active
# blocks carry no TTL: deleting one before the expiry run lifted it would leave it in place.
REMOVED_RETENTION = timedelta(days=90)
TTL_ATTRIBUTE = "ttl"

_TIME = TypeAdapter(datetime)

# BatchGetItem reads at most this many keys per call.
BATCH_GET_LIMIT = 100


class DynamoBlockStore:
    """Reads and writes Block items in the blocks table (a boto3 Table resource)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, block_id: str) -> Block | None:
        """The block with that id, active or removed."""
        item = get_item(self._table, "block_id", block_id)
        return _block(item) if item else None

    def put_new(self, block: Block) -> bool:
        """Record a block; False when an active block with that id is already recorded."""
        item = block.model_dump(mode="json", exclude_none=True)
        item["expires_at_epoch"] = int(block.expires_at.timestamp())
        return put_unless_active(self._table, "block_id", item, BlockStatus.ACTIVE.value)

    def renew(self, block_id: str, expires_at: datetime, set_by: str, at: datetime) -> bool:
        """Move an active block's expiry later; False when it is not active or already as late."""
        epoch = int(expires_at.timestamp())
        return conditional(
            f"UpdateItem {block_id}",
            self._table.update_item,
            Key={"block_id": block_id},
            UpdateExpression=(
                "SET expires_at = :expires_at, expires_at_epoch = :epoch,"
                " expiry_set_by = :set_by, renewed_at = :at"
            ),
            ConditionExpression="#status = :active AND expires_at_epoch < :epoch",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":active": BlockStatus.ACTIVE.value,
                ":expires_at": _json_time(expires_at),
                ":epoch": epoch,
                ":set_by": set_by,
                ":at": _json_time(at),
            },
        )

    def archive(self, block: Block) -> None:
        """Keep a lifted block's record under its archived id, before the block is applied anew."""
        archived = block.model_copy(update={"block_id": archived_block_id(block)})
        item = archived.model_dump(mode="json", exclude_none=True)
        item["expires_at_epoch"] = int(block.expires_at.timestamp())
        removed_at = block.removed_at or block.expires_at
        item[TTL_ATTRIBUTE] = int((removed_at + REMOVED_RETENTION).timestamp())
        try:
            # Written again by a retry, it is the same item.
            self._table.put_item(Item=item)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"PutItem {archived.block_id}") from exc

    def discard(self, block: Block) -> bool:
        """Forget a block just recorded whose change never reached the WAF writer."""
        return conditional(
            f"DeleteItem {block.block_id}",
            self._table.delete_item,
            Key={"block_id": block.block_id},
            ConditionExpression="created_at = :created AND attribute_not_exists(written_at)",
            ExpressionAttributeValues={":created": _json_time(block.created_at)},
        )

    def states(self, block_ids: Iterable[str]) -> dict[str, BlockState]:
        """Whether each block is active, and since when, by id; unrecorded ones are left out."""
        # The table resource's client reads and writes plain values, as the table does.
        client = self._table.meta.client
        ids = sorted(set(block_ids))
        states: dict[str, BlockState] = {}
        for start in range(0, len(ids), BATCH_GET_LIMIT):
            request = {
                self._table.name: {
                    "Keys": [
                        {"block_id": block_id} for block_id in ids[start : start + BATCH_GET_LIMIT]
                    ],
                    "ConsistentRead": True,
                    "ProjectionExpression": "block_id, #status, created_at",
                    "ExpressionAttributeNames": {"#status": "status"},
                }
            }
            while request:
                try:
                    response = client.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise aws_error(exc, "BatchGetItem blocks") from exc
                for item in response.get("Responses", {}).get(self._table.name, []):
                    states[item["block_id"]] = BlockState(
                        active=item.get("status") == BlockStatus.ACTIVE.value,
                        created_at=_TIME.validate_python(item["created_at"]),
                    )
                # Keys DynamoDB could not read this time are asked again.
                request = response.get("UnprocessedKeys") or {}
        return states

    def mark_written(self, block_id: str, at: datetime) -> bool:
        """Note that an active block's address is in its IP set; False when it is not active."""
        return conditional(
            f"UpdateItem {block_id}",
            self._table.update_item,
            Key={"block_id": block_id},
            UpdateExpression="SET written_at = if_not_exists(written_at, :at)",
            ConditionExpression="#status = :active",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":active": BlockStatus.ACTIVE.value,
                ":at": _json_time(at),
            },
        )

    def active(self, nacl_id: str | None = None) -> list[Block]:
        """The active blocks, of one network ACL when named."""
        condition = Attr("status").eq(BlockStatus.ACTIVE.value)
        if nacl_id is not None:
            condition = condition & Attr("nacl_id").eq(nacl_id)
        return self._scan(condition)

    def all(self) -> list[Block]:
        """Every recorded block, active or removed."""
        return self._scan(None)

    def mark_removed(
        self,
        block_id: str,
        reason: RemovedReason,
        at: datetime,
        by: str | None = None,
        note: str | None = None,
    ) -> bool:
        """Mark an active block removed, by whom and why if a person; False when not active."""
        update = "SET #status = :removed, removed_at = :at, removed_reason = :reason, #ttl = :ttl"
        values: dict[str, Any] = {
            ":removed": BlockStatus.REMOVED.value,
            ":active": BlockStatus.ACTIVE.value,
            ":at": at.isoformat(),
            ":reason": reason,
            ":ttl": int((at + REMOVED_RETENTION).timestamp()),
        }
        for name, value in (("removed_by", by), ("removal_note", note)):
            if value is not None:
                update += f", {name} = :{name}"
                values[f":{name}"] = value
        return conditional(
            f"UpdateItem {block_id}",
            self._table.update_item,
            Key={"block_id": block_id},
            UpdateExpression=update,
            ConditionExpression="#status = :active",
            ExpressionAttributeNames={"#status": "status", "#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues=values,
        )

    def _scan(self, condition: Any) -> list[Block]:
        params: dict[str, Any] = {"ConsistentRead": True}
        if condition is not None:
            params["FilterExpression"] = condition
        return [_block(item) for item in all_items(self._table, "scan", params, "Scan blocks")]


def _json_time(moment: datetime) -> str:
    """A time written as the block's own fields are, so that the item reads back alike."""
    return _TIME.dump_python(moment, mode="json")


def _block(item: dict[str, Any]) -> Block:
    # The table also holds what only DynamoDB needs (epoch, TTL); numbers come back as Decimal.
    fields = {
        key: int(value) if isinstance(value, Decimal) else value
        for key, value in item.items()
        if key in Block.model_fields
    }
    return Block.model_validate(fields)
