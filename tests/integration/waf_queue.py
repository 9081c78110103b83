"""The WAF writer's queue in an emulated account, drained as Lambda's event source mapping does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloud_sniper.domain import naming

# moto's account and region, as the tests' environment sets them.
QUEUE_URL = f"https://sqs.us-east-1.amazonaws.com/123456789012/{naming.WAF_CHANGES_QUEUE}"


def create_queue(sqs: Any) -> str:
    """The WAF changes queue; a message handed back is visible again at once, for the next run."""
    url = sqs.create_queue(
        QueueName=naming.WAF_CHANGES_QUEUE, Attributes={"VisibilityTimeout": "0"}
    )["QueueUrl"]
    assert url == QUEUE_URL
    return url


def receive_batch(sqs: Any, limit: int = 10_000) -> list[dict[str, Any]]:
    """Up to `limit` messages of the queue, as SQS records of one Lambda event."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(records) < limit:
        messages = sqs.receive_message(
            QueueUrl=QUEUE_URL,
            MaxNumberOfMessages=min(10, limit - len(records)),
            AttributeNames=["All"],
            # Held for the run, as the event source mapping holds a batch.
            VisibilityTimeout=300,
        ).get("Messages", [])
        fresh = [message for message in messages if message["MessageId"] not in seen]
        if not fresh:
            return records
        seen.update(message["MessageId"] for message in fresh)
        records += [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message["Attributes"],
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            }
            for message in fresh
        ]
    return records


def settle(sqs: Any, records: list[dict[str, Any]], response: dict[str, Any] | None) -> list[str]:
    """Delete the messages the run is done with; hand the others back. The failed ids, sorted.

    A run that raised (`response` None) hands back the whole batch, as Lambda does.
    """
    failed = (
        {record["messageId"] for record in records}
        if response is None
        else {item["itemIdentifier"] for item in response["batchItemFailures"]}
    )
    for record in records:
        if record["messageId"] in failed:
            sqs.change_message_visibility(
                QueueUrl=QUEUE_URL, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )
        else:
            sqs.delete_message(QueueUrl=QUEUE_URL, ReceiptHandle=record["receiptHandle"])
    return sorted(failed)


def drain(
    sqs: Any, writer: Callable[[dict[str, Any]], dict[str, Any]], limit: int = 10_000
) -> tuple[list[dict[str, Any]], list[str]] | None:
    """One interval of the writer: a batch received, written and settled; None when empty."""
    records = receive_batch(sqs, limit)
    if not records:
        return None
    try:
        response = writer({"Records": records})
    except Exception:
        settle(sqs, records, None)
        raise
    return records, settle(sqs, records, response)


def queued(sqs: Any) -> list[str]:
    """The bodies of the messages waiting in the queue, without taking them."""
    bodies: list[str] = []
    handles: list[str] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=QUEUE_URL, MaxNumberOfMessages=10, VisibilityTimeout=300
        ).get("Messages", [])
        if not messages:
            break
        bodies += [message["Body"] for message in messages]
        handles += [message["ReceiptHandle"] for message in messages]
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=QUEUE_URL, ReceiptHandle=handle, VisibilityTimeout=0)
    return bodies
