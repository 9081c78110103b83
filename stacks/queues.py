"""A queue with its dead-letter queue, as the intake and the WAF changes use them."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks import config


def queue_with_dead_letters(
    scope: Construct,
    construct_id: str,
    *,
    queue_name: str,
    dead_letter_queue_name: str,
    visibility_timeout: Duration,
    retention_period: Duration,
    max_receive_count: int,
) -> tuple[sqs.Queue, sqs.Queue]:
    """The dead-letter queue and the queue sending it what fails max_receive_count times.

    Both are made in `scope` itself, as `<construct_id>DeadLetterQueue` and `<construct_id>Queue`,
    so their logical ids stay those of the deployed stacks. SQS-managed keys: EventBridge and
    Lambda use the queues without a key policy.
    """
    dead_letters = sqs.Queue(
        scope,
        f"{construct_id}DeadLetterQueue",
        queue_name=dead_letter_queue_name,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=config.DLQ_RETENTION,
    )
    queue = sqs.Queue(
        scope,
        f"{construct_id}Queue",
        queue_name=queue_name,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        visibility_timeout=visibility_timeout,
        retention_period=retention_period,
        dead_letter_queue=sqs.DeadLetterQueue(
            queue=dead_letters, max_receive_count=max_receive_count
        ),
    )
    return dead_letters, queue
