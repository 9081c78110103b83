"""The emulated AWS account with Cloud Sniper deployed in it, running inside this process.

It executes what would be deployed: the synthesized templates are deployed into moto, the state
machine runs moto's Amazon States Language interpreter, every Lambda invoke runs the service's
real handler in-process with that function's environment, a poller stands in for Lambda's
SQS event source mappings, their batch sizes and batching windows as the templates set them,
and the REST APIs are served on loopback, each request answered by its function (api.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.local.api import ApiServer, LocalApiGateway, routes_of
from cloud_sniper.local.deploy import DeployedApp, deploy_assembly
from cloud_sniper.local.faults import FaultInjector, stored_rules
from cloud_sniper.local.lambdas import InProcessLambda
from cloud_sniper.local.moto_fixes import task_failure_cause

logger = logging.getLogger(__name__)

ACCOUNT = "123456789012"
REGION = "us-east-1"
# The CDK context the local account is synthesized with: the WAF writer's interval is seconds
# long here, so that a demo need not wait half a minute to see its blocks in the IP sets.
# A short WAF writer interval, for a demo; no Security Hub updates, as moto implements no
# BatchUpdateFindings (the tests check those requests against the API model instead).
LOCAL_CONTEXT = {"waf_writer_interval_seconds": 2, "security_hub_updates": False}
MOTO_CONFIG = {
    "stepfunctions": {"execute_state_machine": True},
    # The Lambda invokes are answered in-process; moto's own stays quiet instead of seeking Docker.
    "lambda": {"use_docker": False},
}
# The local server accepts any credentials; the command signs with these. moto answers a key it
# does not know with its default user, "moto", whom the local account makes an approver.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
LOCAL_APPROVER = "moto"


def client_factory(region: str = REGION, endpoint_url: str | None = None) -> Callable[..., Any]:
    """Make boto3 clients bound to the emulated account, in-process or over loopback."""

    # A machine without an AWS profile has no credentials: over loopback, the local ones.
    credentials = LOCAL_CREDENTIALS if endpoint_url else {}

    def clients(service: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=endpoint_url, **credentials)

    return clients


@dataclass
class Schedule:
    """A scheduled rule invoking a function, run by the local runtime at its rate."""

    function_name: str
    every_seconds: float
    due: float


@dataclass
class EventSourceMapping:
    """An SQS → Lambda mapping, and the messages it holds while its batching window runs."""

    queue_url: str
    function_name: str
    batch_size: int
    batching_window: float = 0.0
    held: list[dict[str, Any]] = field(default_factory=list)
    held_since: float | None = None


class LocalCloud:
    """Start, deploy into and stop the in-process emulated account."""

    def __init__(self, assembly: Path, region: str = REGION, log_file: Path | None = None) -> None:
        self.assembly = assembly
        self.region = region
        self.clients = client_factory(region)
        self.lambdas = InProcessLambda(region, log_file=log_file)
        # The REST APIs of the app, on a loopback port of their own (their stacks' URL outputs
        # say which), answered by their functions in-process.
        self.api = LocalApiGateway(self.clients, ACCOUNT, region)
        self.api_server = ApiServer(self.api)
        self.app: DeployedApp | None = None
        # Chosen calls made in this process fail as the rules stored in the account say.
        self.faults = FaultInjector(lambda: stored_rules(ACCOUNT, region))
        self._mock = mock_aws(config=MOTO_CONFIG)
        self._stops: list[Callable[[], None]] = []
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self._idle = threading.Event()

    def start(self) -> LocalCloud:
        self._mock.start()
        self._stops.append(self._mock.stop)
        installers = (
            self.lambdas.installed(),
            self.faults.installed(),
            task_failure_cause(),
        )
        for installer in installers:
            installer.__enter__()
            self._stops.append(lambda installer=installer: installer.__exit__(None, None, None))
        self.api_server.start()
        self._stops.append(self.api_server.stop)

        self.app = deploy_assembly(
            self.assembly, self.clients, ACCOUNT, self.region, api_base_url=self.api_server.base_url
        )
        for stack in self.app.stacks:
            for resource in stack.created_by_hand:
                logger.info("created outside the emulated CloudFormation: %s", resource)
            for resource in stack.not_emulated:
                logger.info("not emulated locally: %s", resource)

        self.lambdas.task_roots = self._task_roots()
        self.api.routes = routes_of(self.app.stacks)
        _make_local_approver(self.clients)
        self._poller = threading.Thread(target=self._poll, name="event-source-mapping", daemon=True)
        self._poller.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        while self._stops:
            self._stops.pop()()

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def _task_roots(self) -> dict[str, Path]:
        """Each function's staged code in the assembly, as Lambda would unpack it in /var/task."""
        assert self.app is not None
        roots = {}
        for _, resource in self.app.resources("AWS::Lambda::Function"):
            properties = resource["Properties"]
            key = properties.get("Code", {}).get("S3Key", "")
            folder = self.assembly / f"asset.{key.removesuffix('.zip')}"
            if properties.get("FunctionName") and folder.is_dir():
                roots[properties["FunctionName"]] = folder
        return roots

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until the event source poller has found its queues empty."""
        self._idle.clear()
        self._idle.wait(timeout)

    def event_source_mappings(self) -> list[EventSourceMapping]:
        """The SQS → Lambda mappings of the deployed templates."""
        assert self.app is not None
        sqs = self.clients("sqs")
        mappings = []
        for _, resource in self.app.resources("AWS::Lambda::EventSourceMapping"):
            properties = resource["Properties"]
            queue_name = _queue_name(properties["EventSourceArn"], self.app)
            function = _function_name(properties["FunctionName"], self.app)
            if queue_name is None or function is None:
                continue
            queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
            mappings.append(
                EventSourceMapping(
                    queue_url,
                    function,
                    int(properties.get("BatchSize", 10)),
                    float(properties.get("MaximumBatchingWindowInSeconds", 0)),
                )
            )
        return mappings

    def schedules(self) -> list[Schedule]:
        """The scheduled rules with function targets, as the templates declare them."""
        assert self.app is not None
        schedules = []
        for logical_id, resource in self.app.resources("AWS::Events::Rule"):
            properties = resource["Properties"]
            every = _rate_seconds(properties.get("ScheduleExpression", ""))
            if every is None or properties.get("State", "ENABLED") != "ENABLED":
                if "ScheduleExpression" in properties:
                    logger.info("schedule not run locally: %s", logical_id)
                continue
            for target in properties.get("Targets", []):
                function = _function_name(target["Arn"], self.app)
                if function is not None:
                    schedules.append(Schedule(function, every, time.monotonic() + every))
        return schedules

    def _poll(self) -> None:
        """Deliver queued messages to their functions, as Lambda's event source mapping does,
        and invoke scheduled functions when they are due, as EventBridge Scheduler would."""
        mappings = self.event_source_mappings()
        schedules = self.schedules()
        sqs = self.clients("sqs")
        lambda_client = self.clients("lambda")
        while not self._stopping.is_set():
            for schedule in schedules:
                if time.monotonic() >= schedule.due:
                    schedule.due = time.monotonic() + schedule.every_seconds
                    _run_schedule(lambda_client, schedule)
            delivered = 0
            for mapping in mappings:
                try:
                    delivered += _deliver(sqs, lambda_client, mapping, self.region)
                except Exception:  # a poller never dies of one bad batch
                    logger.exception("event source mapping failed for %s", mapping.function_name)
            if not delivered:
                # Idle once no mapping holds messages for its batching window either.
                if not any(mapping.held for mapping in mappings):
                    self._idle.set()
                time.sleep(0.1)


def _make_local_approver(clients: Callable[[str], Any]) -> None:
    """Put the local caller in the approvers group, so that local approvals work as they come."""
    iam = clients("iam")
    try:
        iam.get_group(GroupName=naming.APPROVERS_GROUP)
    except iam.exceptions.NoSuchEntityException:
        return  # an app without the approvals API
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_user(UserName=LOCAL_APPROVER)
    iam.add_user_to_group(GroupName=naming.APPROVERS_GROUP, UserName=LOCAL_APPROVER)


def _deliver(sqs: Any, lambda_client: Any, mapping: EventSourceMapping, region: str) -> int:
    """Gather messages as Lambda does, then invoke: at the batch size or the window's end.

    Returns how many messages were delivered; held messages wait in `mapping.held`.
    """
    while len(mapping.held) < mapping.batch_size:
        received = sqs.receive_message(
            QueueUrl=mapping.queue_url,
            MaxNumberOfMessages=min(mapping.batch_size - len(mapping.held), 10),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            break
        if mapping.held_since is None:
            mapping.held_since = time.monotonic()
        mapping.held += received
    if not mapping.held or mapping.held_since is None:
        return 0
    waited = time.monotonic() - mapping.held_since
    if len(mapping.held) < mapping.batch_size and waited < mapping.batching_window:
        return 0
    messages, mapping.held, mapping.held_since = mapping.held, [], None

    queue_arn = sqs.get_queue_attributes(QueueUrl=mapping.queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    event = {"Records": [_sqs_record(message, queue_arn, region) for message in messages]}
    response = lambda_client.invoke(FunctionName=mapping.function_name, Payload=json.dumps(event))
    payload = json.loads(response["Payload"].read() or b"{}")
    if response.get("FunctionError"):
        # The whole batch returns to the queue; its redrive policy moves it to the DLQ in time.
        logger.warning("batch failed in %s: %s", mapping.function_name, payload)
        return len(messages)

    failed = {item["itemIdentifier"] for item in (payload or {}).get("batchItemFailures", [])}
    done = [message for message in messages if message["MessageId"] not in failed]
    for start in range(0, len(done), 10):
        entries = [
            {"Id": str(number), "ReceiptHandle": message["ReceiptHandle"]}
            for number, message in enumerate(done[start : start + 10])
        ]
        sqs.delete_message_batch(QueueUrl=mapping.queue_url, Entries=entries)
    return len(messages)


def _run_schedule(lambda_client: Any, schedule: Schedule) -> None:
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    response = lambda_client.invoke(FunctionName=schedule.function_name, Payload=json.dumps(event))
    if response.get("FunctionError"):
        logger.warning("scheduled run of %s failed", schedule.function_name)


_RATE_UNITS = {
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
}


def _rate_seconds(expression: str) -> float | None:
    """Seconds between runs of a `rate(N unit)` schedule; None for cron or anything else."""
    if not (expression.startswith("rate(") and expression.endswith(")")):
        return None
    amount, _, unit = expression[5:-1].partition(" ")
    if not amount.isdigit() or unit not in _RATE_UNITS:
        return None
    return int(amount) * _RATE_UNITS[unit]


def _sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def _queue_name(reference: Any, app: DeployedApp) -> str | None:
    """Resolve a template reference to a queue (its ARN) into the queue's name."""
    return _physical_name(reference, app, "AWS::SQS::Queue", "QueueName")


def _function_name(reference: Any, app: DeployedApp) -> str | None:
    return _physical_name(reference, app, "AWS::Lambda::Function", "FunctionName")


def _physical_name(reference: Any, app: DeployedApp, resource_type: str, key: str) -> str | None:
    if isinstance(reference, str):
        return reference.rsplit(":", 1)[-1]
    logical_id = None
    if "Fn::GetAtt" in reference:
        logical_id = reference["Fn::GetAtt"][0]
    elif "Ref" in reference:
        logical_id = reference["Ref"]
    for candidate_id, resource in app.resources(resource_type):
        if candidate_id == logical_id:
            return resource["Properties"].get(key)
    return None
