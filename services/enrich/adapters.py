"""The indicators table in DynamoDB, as the knowledge base's store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from cloud_sniper.domain.errors import TransientAwsError, is_transient
from cloud_sniper.domain.models import Indicator
from services.enrich.knowledge_base import Sighting

# The mitigate service owns block_state, blocked_until and blocked_before; they are never set here.
_RECORD_NEW_FINDING = (
    "SET first_seen = if_not_exists(first_seen, :at), last_seen = :at "
    "ADD sightings :one, finding_types :types, accounts :accounts, finding_ids :finding_ids"
)
# Counting only findings not yet in finding_ids keeps a redelivery from counting twice, and
# DynamoDB evaluates the condition and the update as one step, so concurrent deliveries cannot
# both count.
_FINDING_IS_NEW = "attribute_not_exists(finding_ids) OR NOT contains(finding_ids, :finding_id)"
_RECORD_REDELIVERY = "SET first_seen = if_not_exists(first_seen, :at), last_seen = :at"


def indicators_table(name: str) -> Any:
    """The indicators table, through a DynamoDB resource created on first use."""
    return boto3.resource("dynamodb").Table(name)


class DynamoIndicatorStore:
    """Records sightings in the indicators table (key kind/value), one atomic update each."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def record(self, indicator: Indicator, sighting: Sighting) -> Mapping[str, Any] | None:
        """Record the sighting and return the item as it was just before, if there was one."""
        key = {"kind": indicator.kind.value, "value": indicator.value}
        try:
            try:
                response = self._table.update_item(
                    Key=key,
                    UpdateExpression=_RECORD_NEW_FINDING,
                    ConditionExpression=_FINDING_IS_NEW,
                    ExpressionAttributeValues={
                        ":at": sighting.at.isoformat(),
                        ":one": 1,
                        ":types": {sighting.finding_type},
                        ":accounts": {sighting.account_id},
                        # TODO(knowledge-base): finding_ids grows by one id per finding naming the
                        # indicator; a very noisy address reaches DynamoDB's 400 KB item limit
                        # after roughly ten thousand findings. Move ids to their own items then.
                        ":finding_ids": {sighting.finding_id},
                        ":finding_id": sighting.finding_id,
                    },
                    ReturnValues="ALL_OLD",
                )
            except ClientError as exc:
                if _error_code(exc) != "ConditionalCheckFailedException":
                    raise
                # Already counted: a redelivery, or a later update of the same finding, which
                # still says the indicator is active now.
                response = self._table.update_item(
                    Key=key,
                    UpdateExpression=_RECORD_REDELIVERY,
                    ExpressionAttributeValues={":at": sighting.at.isoformat()},
                    ReturnValues="ALL_OLD",
                )
        except ClientError as exc:
            _raise_if_transient(exc)
            raise
        except (BotoConnectionError, HTTPClientError) as exc:
            raise TransientAwsError(f"dynamodb UpdateItem: {exc}") from exc
        return response.get("Attributes")


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _raise_if_transient(exc: ClientError) -> None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if is_transient(_error_code(exc), status):
        raise TransientAwsError(f"dynamodb UpdateItem: {_error_code(exc)}") from exc
