"""AWS calls of decide and request-approval: the policy parameter, EC2, the approvals table, SNS.

Also what the safeguards read: what depends on an action's target, and the hourly budget; and
the Slack webhook: its URL from Secrets Manager, the message posted to it.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, NoReturn
from urllib.parse import urlsplit

import boto3
from aws_lambda_powertools.utilities.parameters import (
    GetParameterError,
    SecretsProvider,
    SSMProvider,
)
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from cloud_sniper.domain.errors import TransientAwsError, is_transient
from cloud_sniper.domain.models import ActionKind, ApprovalStatus, Finding, PlannedAction
from cloud_sniper.domain.safeguards import Safeguards


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


@cache
def _secrets() -> SecretsProvider:
    # Powertools keeps each secret it read, with its age, in the provider.
    return SecretsProvider(boto3_client=boto3.client("secretsmanager"))


def clear_caches() -> None:
    """Forget clients, parameter values and the estate's addresses, as a cold start would."""
    for cached in (_ec2, _sns, _table, _parameters, _secrets, _client, estate_addresses):
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
            return Stored(written=False, previous=_kept_item(exc))
        _reraise(exc, "storing the approval")
    return Stored(written=True, previous=response.get("Attributes"))


@dataclass(frozen=True)
class Escalated:
    """What handing an approval to its escalation did."""

    written: bool
    # The approval as it now stands or, when not written, as the table kept it ({} for none).
    item: dict[str, Any]


def escalate_approval(table_name: str, record: dict[str, Any]) -> Escalated:
    """Give the execution's approval the escalation's task token and expiry, marked escalated.

    Taken over: the approval still pending (its first wait timed out, or the escalation is
    retried), or one a late answer marked timed out before the escalation came, once. Any other
    is kept as it is, and so is its request: who asked first, and when.
    """
    try:
        response = _table(table_name).update_item(
            Key={"approval_id": record["approval_id"]},
            UpdateExpression=(
                "SET #token = :token, expires_at = :expires_at, escalated_at = :escalated_at,"
                " #status = :pending REMOVE approver, reason, answered_at, timed_out_at"
            ),
            ConditionExpression=(
                "execution_name = :execution_name AND (#status = :pending"
                " OR (#status = :timed_out AND attribute_not_exists(escalated_at)))"
            ),
            ExpressionAttributeNames={"#status": "status", "#token": "token"},
            ExpressionAttributeValues={
                ":token": record["token"],
                ":expires_at": record["expires_at"],
                ":escalated_at": record["escalated_at"],
                ":pending": ApprovalStatus.PENDING.value,
                ":timed_out": ApprovalStatus.TIMED_OUT.value,
                ":execution_name": record["execution_name"],
            },
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return Escalated(written=False, item=_kept_item(exc))
        _reraise(exc, "escalating the approval")
    return Escalated(written=True, item=response["Attributes"])


def _kept_item(exc: ClientError) -> dict[str, Any]:
    """The item a failed condition kept, which the error carries in DynamoDB's typed form."""
    deserializer = TypeDeserializer()
    kept = exc.response.get("Item", {})
    return {key: deserializer.deserialize(value) for key, value in kept.items()}


def publish(topic_arn: str, subject: str, message: str) -> str:
    """Publish a notification to an approvals topic; returns the message id."""
    try:
        response = _sns().publish(TopicArn=topic_arn, Subject=subject, Message=message)
    except ClientError as exc:
        _reraise(exc, "publishing the approval request")
    return response["MessageId"]


# A rotated webhook is posted to within this many seconds.
SLACK_SECRET_MAX_AGE_SECONDS = 300
# Slack answers a webhook in well under a second; a slow one must not hold the request.
SLACK_TIMEOUT_SECONDS = 3
_LOOPBACK_NAMES = frozenset({"localhost"})


class WebhookError(Exception):
    """The Slack webhook could not be read or did not take the message; never names its URL."""


def slack_webhook_url(secret_id: str) -> str:
    """The webhook URL the secret holds: the URL itself, or JSON with a "url" key."""
    try:
        value = _secrets().get(secret_id, max_age=SLACK_SECRET_MAX_AGE_SECONDS)
    except GetParameterError as exc:
        raise WebhookError(f"reading the secret {secret_id}: {exc}") from exc
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WebhookError(f"the secret {secret_id} holds JSON that cannot be read") from exc
        text = str(document.get("url") or "").strip() if isinstance(document, dict) else ""
    parts = urlsplit(text)
    if not parts.hostname or not (
        parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname))
    ):
        # The value is a secret: the error says what is wrong with it, never what it is.
        raise WebhookError(f"the secret {secret_id} holds no https URL (http only to this machine)")
    return text


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def post_webhook(url: str, message: dict[str, Any]) -> None:
    """Post a message to a Slack incoming webhook."""
    request = urllib.request.Request(
        url,
        data=json.dumps(message).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=SLACK_TIMEOUT_SECONDS) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        answer = exc.read(200).decode("utf-8", "replace")
        raise WebhookError(f"the Slack webhook answered {exc.code}: {answer}") from exc
    except (urllib.error.URLError, OSError) as exc:
        # OSError: a timeout, a refused or reset connection.
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"posting to the Slack webhook: {reason}") from exc


def _reraise(exc: ClientError, doing: str) -> NoReturn:
    """Raise a transient failure as TransientAwsError, for the state machine's Retry."""
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if is_transient(code, status):
        raise TransientAwsError(f"{doing}: {code}: {error.get('Message', '')}") from exc
    raise exc


# The tag EC2 Auto Scaling puts on every instance of a group: read from the finding, no call.
ASG_TAG = "aws:autoscaling:groupName"
# A budget window's item outlives its hour by a day, then DynamoDB's TTL deletes it.
WINDOW_RETENTION = timedelta(days=1)
_CONDITION_FAILED = "ConditionalCheckFailedException"


@cache
def _client(service: str) -> Any:
    return boto3.client(service)


def dependents(action: PlannedAction, finding: Finding, safeguards: Safeguards) -> list[str]:
    """What depends on the action's target, in words: empty when nothing does."""
    # TODO(member-accounts): Auto Scaling, target groups and websites are looked up in this
    # account only; a member account's instance or bucket shows no dependents but its tags'.
    resource = finding.resource
    found: list[str] = []
    if resource.tags.get(safeguards.critical_tag, "").strip().lower() == "true":
        found.append(f"tagged {safeguards.critical_tag}=true")
    if action.kind == ActionKind.ISOLATE_INSTANCE:
        found += _instance_dependents(action.target, resource.tags)
    elif action.kind == ActionKind.BLOCK_PUBLIC_ACCESS and _serves_website(action.target):
        found.append(f"bucket {action.target} serves a website")
    return found


def _instance_dependents(instance_id: str, tags: dict[str, str]) -> list[str]:
    found = []
    group = tags.get(ASG_TAG) or _auto_scaling_group(instance_id)
    if group:
        found.append(f"Auto Scaling group {group}")
    found += [f"target group {name}" for name in _target_groups(instance_id)]
    return found


def _auto_scaling_group(instance_id: str) -> str | None:
    try:
        response = _client("autoscaling").describe_auto_scaling_instances(InstanceIds=[instance_id])
    except ClientError as exc:
        _reraise(exc, f"looking up the Auto Scaling group of {instance_id}")
    instances = response.get("AutoScalingInstances", [])
    return instances[0]["AutoScalingGroupName"] if instances else None


def _target_groups(instance_id: str) -> list[str]:
    """The target groups the instance is registered in."""
    elb = _client("elbv2")
    names = []
    try:
        for page in elb.get_paginator("describe_target_groups").paginate():
            for group in page["TargetGroups"]:
                if group.get("TargetType", "instance") != "instance":
                    continue
                health = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
                targets = {d["Target"]["Id"] for d in health["TargetHealthDescriptions"]}
                if instance_id in targets:
                    names.append(group["TargetGroupName"])
    except ClientError as exc:
        _reraise(exc, f"looking up the target groups of {instance_id}")
    return names


def _serves_website(bucket: str) -> bool:
    try:
        _client("s3").get_bucket_website(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in (
            "NoSuchWebsiteConfiguration",
            "NoSuchBucket",
        ):
            return False
        _reraise(exc, f"reading the website configuration of {bucket}")
    return True


def reserve(
    table_name: str, counts: dict[str, int], limits: dict[str, int], execution: str, now: datetime
) -> list[str]:
    """Count an execution's automatic actions in this hour's budgets; the budgets it would exceed.

    The reservation is idempotent per execution (a retried Decide counts once) and atomic across
    concurrent executions: each budget's item holds the executions it admitted, up to its limit.
    An execution is admitted to a budget whole or not at all.
    """
    window = now.strftime("%Y-%m-%dT%H")
    expires = int(
        (
            now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) + WINDOW_RETENTION
        ).timestamp()
    )
    table = _table(table_name)
    exceeded = []
    for budget, count in sorted(counts.items()):
        if count > limits[budget]:
            exceeded.append(budget)
            continue
        slots = {f"{execution}#{n}" for n in range(count)}
        try:
            table.update_item(
                Key={"window": f"{budget}#{window}"},
                UpdateExpression="ADD admitted :slots SET expires_at_epoch = :expires",
                ConditionExpression=(
                    "attribute_not_exists(admitted) OR size(admitted) <= :room"
                    " OR contains(admitted, :first)"
                ),
                ExpressionAttributeValues={
                    ":slots": slots,
                    ":room": limits[budget] - count,
                    ":first": f"{execution}#0",
                    ":expires": expires,
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == _CONDITION_FAILED:
                exceeded.append(budget)
                continue
            _reraise(exc, f"counting the {budget} budget")
    return exceeded
