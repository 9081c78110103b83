"""Create the project's DynamoDB tables in moto, with the keys and indexes the data stack gives."""

from __future__ import annotations

from typing import Any

from stacks.data import TABLE_INDEXES, TABLE_KEYS


def create_table(dynamodb: Any, name: str) -> Any:
    """Create one of the project's tables (a boto3 DynamoDB resource) as the data stack does."""
    partition_key, sort_key = TABLE_KEYS[name]
    keys = [(partition_key, "HASH")] + ([(sort_key, "RANGE")] if sort_key else [])
    indexes = TABLE_INDEXES.get(name, {})
    attributes = dict.fromkeys([key for key, _ in keys] + list(indexes.values()))
    extra: dict[str, Any] = {}
    if indexes:
        extra["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index,
                "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, key in indexes.items()
        ]
    return dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": role} for key, role in keys],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"} for key in attributes],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )
