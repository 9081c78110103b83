"""The block state of indicators in the knowledge base (the indicators table)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from cloud_sniper.domain.models import IndicatorKind
from services.mitigate.adapters._aws import aws_error, error_code

logger = Logger(child=True)

ACTIVE = "active"
EXPIRED = "expired"


class DynamoKnowledgeBase:
    """Updates block_state, blocked_until and blocked_before of indicators enrich recorded."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def mark_blocked(self, kind: IndicatorKind, value: str, until: datetime) -> bool:
        """Note the indicator blocked until then; an earlier blocked_until never wins."""
        # blocked_until is the latest expiry of the indicator's blocks, so the expiry run can
        # tell when the last of them is lifted. Same-format UTC ISO strings compare as times.
        # An indicator enrich has not recorded gets an item with the block attributes alone.
        return self._update(
            kind,
            value,
            "SET block_state = :active, blocked_until = :until, blocked_before = :true",
            "attribute_not_exists(blocked_until) OR blocked_until < :until"
            " OR block_state <> :active",
            {":active": ACTIVE, ":until": _iso(until), ":true": True},
        )

    def mark_expired(self, kind: IndicatorKind, value: str, at: datetime) -> bool:
        """Note the indicator's blocks lifted, unless one of them lasts beyond `at`."""
        return self._update(
            kind,
            value,
            "SET block_state = :expired",
            "block_state = :active AND blocked_until <= :at",
            {":expired": EXPIRED, ":active": ACTIVE, ":at": _iso(at)},
        )

    def _update(
        self,
        kind: IndicatorKind,
        value: str,
        update: str,
        condition: str,
        values: dict[str, Any],
    ) -> bool:
        key = {"kind": kind.value, "value": value}
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                # Its state already says as much, or a later block of it is still in force.
                logger.debug("knowledge base left as is", extra=key)
                return False
            raise aws_error(exc, f"UpdateItem {kind.value}#{value}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"UpdateItem {kind.value}#{value}") from exc
        return True


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
