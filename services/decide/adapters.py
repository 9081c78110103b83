"""AWS calls of decide and request-approval: the policy parameter, EC2, the approvals table, SNS."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any, NoReturn

import boto3
from aws_lambda_powertools.utilities.parameters import GetParameterError, SSMProvider
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from cloud_sniper.domain.errors import TransientAwsError, is_transient
from cloud_sniper.domain.models import ApprovalStatus


@cache
def _ec2() -> Any:
    return boto3.client("ec2")


@cache
def _sns() -> Any:
    return boto3.client("sns")


@cache
def _table(name: str) -> Any:
    return boto3.resource("dynamodb").Table(name)


@cache
def _parameters() -> SSMProvider:
    # Powertools keeps each value it read, with its age, in the provider.
    return SSMProvider(boto3_client=boto3.client("ssm"))


def clear_caches() -> None:
    """Forget clients, parameter values and the estate's addresses, as a cold start would."""
    for cached in (_ec2, _sns, _table, _parameters, estate_addresses):
        cached.cache_clear()


def policy_parameter(name: str, max_age_seconds: int) -> str:
    """The policy parameter's value, read again once the one kept is max_age_seconds old."""
    try:
        value = _parameters().get(name, max_age=max_age_seconds)
    except GetParameterError as exc:
        # Powertools wraps the SDK's error; the code inside tells a throttle from a refusal.
        cause = exc.__context__
        if isinstance(cause, ClientError):
            _reraise(cause, f"reading the policy parameter {name}")
        raise
    if not isinstance(value, str):  # pragma: no cover - GetParameter returns a string value
        raise TypeError(f"the policy parameter {name} is not a string parameter")
    return value


@cache
def estate_addresses() -> frozenset[str]:
    """The estate's own public addresses: Elastic IPs and NAT gateway addresses, once per start."""
    addresses: set[str] = set()
    try:
        for address in _ec2().describe_addresses()["Addresses"]:
            addresses.update(
                value for value in (address.get("PublicIp"), address.get("CarrierIp")) if value
            )
        for page in _ec2().get_paginator("describe_nat_gateways").paginate():
            for gateway in page["NatGateways"]:
                addresses.update(
                    item["PublicIp"]
                    for item in gateway.get("NatGatewayAddresses", [])
                    if item.get("PublicIp")
                )
    except ClientError as exc:
        _reraise(exc, "reading the estate's public addresses")
    return frozenset(addresses)


@dataclass(frozen=True)
class Stored:
    """What storing an approval request did."""

    written: bool
    # The item this one replaced or, when not written, the one kept; None for a first request.
    previous: dict[str, Any] | None


def store_approval(table_name: str, item: dict[str, Any]) -> Stored:
    """Store an approval request; a retried one replaces its execution's approval still pending.

    An approval answered already, or another execution's under the same id, is kept as it is.
    """
    # DynamoDB takes no floats: numbers go in as Decimal.
    document = json.loads(json.dumps(item), parse_float=Decimal)
    try:
        response = _table(table_name).put_item(
            Item=document,
            ConditionExpression=(
                "attribute_not_exists(approval_id)"
                " OR (#status = :pending AND execution_name = :execution_name)"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":pending": ApprovalStatus.PENDING.value,
                ":execution_name": item["execution_name"],
            },
            ReturnValues="ALL_OLD",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            # The error carries the kept item in DynamoDB's own typed form.
            kept = exc.response.get("Item", {})
            deserializer = TypeDeserializer()
            return Stored(
                written=False,
                previous={key: deserializer.deserialize(value) for key, value in kept.items()},
            )
        _reraise(exc, "storing the approval")
    return Stored(written=True, previous=response.get("Attributes"))


def publish(topic_arn: str, subject: str, message: str) -> str:
    """Publish a notification to the approval topic; returns the message id."""
    try:
        response = _sns().publish(TopicArn=topic_arn, Subject=subject, Message=message)
    except ClientError as exc:
        _reraise(exc, "publishing the approval request")
    return response["MessageId"]


def _reraise(exc: ClientError, doing: str) -> NoReturn:
    """Raise a transient failure as TransientAwsError, for the state machine's Retry."""
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if is_transient(code, status):
        raise TransientAwsError(f"{doing}: {code}: {error.get('Message', '')}") from exc
    raise exc
