"""AWS calls of the ingest service: start pipeline executions, quarantine unreadable deliveries."""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from cloud_sniper.domain.errors import TransientAwsError, is_transient

# Connection failures and timeouts never reached a decision on AWS's side: worth a retry.
_NETWORK_ERRORS = (BotoConnectionError, HTTPClientError)
# An error message needs far less than the 256 KB SQS allows a message and its attributes.
_MAX_ATTRIBUTE_CHARS = 1024


@functools.cache
def _stepfunctions() -> Any:
    return boto3.client("stepfunctions")


@functools.cache
def _sqs() -> Any:
    return boto3.client("sqs")


class AwsPipeline:
    """The state machine that handles findings and the queue that keeps unreadable deliveries."""

    def __init__(self, state_machine_arn: str, quarantine_queue_url: str) -> None:
        self.state_machine_arn = state_machine_arn
        self.quarantine_queue_url = quarantine_queue_url

    def start_execution(self, name: str, state: str) -> bool:
        """Start the named execution; False when it already exists (a duplicate delivery)."""
        try:
            _stepfunctions().start_execution(
                stateMachineArn=self.state_machine_arn, name=name, input=state
            )
        except ClientError as exc:
            if _code(exc) == "ExecutionAlreadyExists":
                return False
            _raise_if_transient(exc, "StartExecution")
            raise
        except _NETWORK_ERRORS as exc:
            raise TransientAwsError(f"StartExecution: {exc}") from exc
        return True

    def quarantine(self, body: str, error: str, source: str) -> None:
        """Keep a delivery that cannot be read, with the reason and where it came from."""
        attributes = {
            "error": {"DataType": "String", "StringValue": error[:_MAX_ATTRIBUTE_CHARS]},
            "source": {"DataType": "String", "StringValue": source[:_MAX_ATTRIBUTE_CHARS]},
        }
        try:
            _sqs().send_message(
                QueueUrl=self.quarantine_queue_url, MessageBody=body, MessageAttributes=attributes
            )
        except ClientError as exc:
            _raise_if_transient(exc, "SendMessage")
            raise
        except _NETWORK_ERRORS as exc:
            raise TransientAwsError(f"SendMessage: {exc}") from exc


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _raise_if_transient(error: ClientError, operation: str) -> None:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if is_transient(_code(error), status):
        raise TransientAwsError(f"{operation}: {_code(error)}") from error
