"""Send findings into a running pipeline and follow their executions to the incident reports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cloud_sniper.domain import asff, naming
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import Finding
from cloud_sniper.domain.normalize import normalize, peel_replay, unwrap

WAITING_FOR_APPROVAL = "WAITING_FOR_APPROVAL"
GUARDDUTY_SOURCE = "aws.guardduty"
FINISHED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
# How long, after the executions, to wait for the WAF writer to apply the changes they queued.
WAF_WRITER_WAIT = 30.0


@dataclass
class Submission:
    """One finding put on the project's event bus."""

    locator: str
    finding: Finding
    execution_name: str
    dry_run: bool


@dataclass
class Rejection:
    locator: str
    error: str


@dataclass
class Result:
    """What became of one submitted finding."""

    submission: Submission
    status: str
    incident: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    approval_id: str | None = None
    report_files: list[Path] = field(default_factory=list)


def execution_arn(clients: Any, name: str) -> str:
    account, region = _account_and_region(clients)
    return f"arn:aws:states:{region}:{account}:execution:{naming.STATE_MACHINE}:{name}"


def state_machine_arn(clients: Any) -> str:
    account, region = _account_and_region(clients)
    return f"arn:aws:states:{region}:{account}:stateMachine:{naming.STATE_MACHINE}"


_ACCOUNTS: dict[Any, tuple[str, str]] = {}


def _account_and_region(clients: Any) -> tuple[str, str]:
    """The account and region the clients work in, asked once per client factory or session."""
    key = getattr(clients, "__self__", clients)
    if key not in _ACCOUNTS:
        account = clients("sts").get_caller_identity()["Account"]
        _ACCOUNTS[key] = (account, clients("stepfunctions").meta.region_name)
    return _ACCOUNTS[key]


def submit(
    clients: Any, documents: list[tuple[str, dict[str, Any]]], dry_run: bool = False
) -> tuple[list[Submission], list[Rejection]]:
    """Validate each finding and put the valid ones on an event bus, as they would arrive.

    A GuardDuty finding goes on the default bus as GuardDuty sends it, through the pipeline's
    GuardDuty rule, and a Security Hub (ASFF) finding as Security Hub sends it; a dry run, or a
    project detector's finding, goes on the project's bus. A Security Hub finding the intake
    would skip (resolved, suppressed, archived) is rejected with the reason.
    """
    submissions: list[Submission] = []
    rejections: list[Rejection] = []
    events = clients("events")
    for locator, document in documents:
        try:
            delivery, _ = peel_replay(document)
            finding = normalize(delivery)
        except InvalidFindingError as exc:
            rejections.append(Rejection(locator, str(exc)))
            continue
        detail, _ = unwrap(delivery)
        closed = asff.closed(detail) if asff.is_finding(detail) else None
        if closed is not None:
            reason = "the intake skips resolved, suppressed and archived findings"
            rejections.append(Rejection(locator, f"{closed}: {reason}"))
            continue

        response = events.put_events(Entries=[_event(delivery, finding, dry_run)])
        if response.get("FailedEntryCount"):
            error = response["Entries"][0].get("ErrorMessage", "rejected by the event bus")
            rejections.append(Rejection(locator, error))
            continue
        name = naming.execution_name(finding.id, finding.updated_at, dry_run)
        submissions.append(Submission(locator, finding, name, dry_run))
    return submissions, rejections


def _event(delivery: dict[str, Any], finding: Finding, dry_run: bool) -> dict[str, Any]:
    detail, _ = unwrap(delivery)
    if asff.is_finding(detail) and not dry_run:
        return {
            "Source": asff.SECURITY_HUB_SOURCE,
            "DetailType": asff.IMPORTED_DETAIL_TYPE,
            "Detail": json.dumps({"findings": [detail]}),
            "EventBusName": "default",
        }
    if finding.source == GUARDDUTY_SOURCE and not dry_run:
        return {
            "Source": GUARDDUTY_SOURCE,
            "DetailType": naming.FINDING_DETAIL_TYPE,
            "Detail": json.dumps(detail),
            "EventBusName": "default",
        }
    return {
        "Source": naming.EVENT_SOURCE,
        "DetailType": naming.REPLAY_DETAIL_TYPE,
        "Detail": json.dumps({"finding": delivery, "dry_run": dry_run}),
        "EventBusName": naming.EVENT_BUS,
    }


def wait(clients: Any, submissions: list[Submission], timeout: float = 120.0) -> list[Result]:
    """Follow every execution until it ends or waits for a person's approval, then wait for the
    WAF writer to apply the IP set changes they queued."""
    sfn = clients("stepfunctions")
    pending = {submission.execution_name: submission for submission in submissions}
    results: dict[str, Result] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, submission in list(pending.items()):
            status = _status(clients, sfn, name)
            if status is None or status == "RUNNING":
                continue
            results[name] = Result(submission, status)
            del pending[name]
        if pending:
            time.sleep(0.2)
    for name, submission in pending.items():
        results[name] = Result(submission, _status(clients, sfn, name) or "NOT_STARTED")
    wait_for_waf_writer(clients, WAF_WRITER_WAIT)
    ordered = [results[submission.execution_name] for submission in submissions]
    for result in ordered:
        _describe(clients, result)
    return ordered


def wait_for_waf_writer(clients: Any, timeout: float) -> bool:
    """Wait until the WAF writer's queue is empty, its last batch applied; False at the timeout.

    A batch the writer failed stays in the queue until its visibility timeout: the wait ends
    at the timeout then, with those changes still queued.
    """
    sqs = clients("sqs")
    try:
        url = sqs.get_queue_url(QueueName=naming.WAF_CHANGES_QUEUE)["QueueUrl"]
    except ClientError:
        return True  # an app without the writer has nothing to wait for
    counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    deadline = time.monotonic() + timeout
    while True:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=counts)["Attributes"]
        if not any(int(attributes.get(count, 0)) for count in counts):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _status(clients: Any, sfn: Any, name: str) -> str | None:
    try:
        status = sfn.describe_execution(executionArn=execution_arn(clients, name))["status"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ExecutionDoesNotExist":
            return None
        raise
    if status == "RUNNING" and pending_approval(clients, name) is not None:
        return WAITING_FOR_APPROVAL
    return status


def pending_approval(clients: Any, execution_name: str) -> dict[str, Any] | None:
    """The pending approval item of an execution, if it waits for one."""
    item = (
        clients("dynamodb")
        .get_item(
            TableName=naming.APPROVALS_TABLE,
            Key={"approval_id": {"S": naming.approval_id(execution_name)}},
        )
        .get("Item")
    )
    if item is None or item.get("status", {}).get("S") != "pending":
        return None
    return item


def _describe(clients: Any, result: Result) -> None:
    """Fill in the decision and the incident of a result from the execution's record."""
    sfn = clients("stepfunctions")
    arn = execution_arn(clients, result.submission.execution_name)
    if result.status == "NOT_STARTED":
        return
    if result.status == "SUCCEEDED":
        output = json.loads(sfn.describe_execution(executionArn=arn).get("output") or "{}")
        result.incident = _incident_document(clients, output.get("report", {}))
        if result.incident is not None:
            result.decision = result.incident.get("decision")
            return
    result.decision = _state_output(sfn, arn, "Decide", "decision")
    if result.status == WAITING_FOR_APPROVAL:
        item = pending_approval(clients, result.submission.execution_name)
        result.approval_id = item["approval_id"]["S"] if item else None


def _incident_document(clients: Any, report_output: dict[str, Any]) -> dict[str, Any] | None:
    key = report_output.get("report_keys", {}).get("json")
    if key is None:
        return None
    bucket = reports_bucket(clients)
    body = clients("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return json.loads(body)


def reports_bucket(clients: Any) -> str:
    account, region = _account_and_region(clients)
    return naming.reports_bucket(account, region)


def _state_output(sfn: Any, arn: str, state: str, key: str) -> dict[str, Any] | None:
    """Read what one state of an execution produced, from its history."""
    events = sfn.get_execution_history(executionArn=arn, reverseOrder=True)["events"]
    for event in events:
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") == state:
            return json.loads(details.get("output") or "{}").get(key)
    return None


def download_reports(clients: Any, result: Result, out_dir: Path) -> list[Path]:
    """Copy an incident's reports from the reports bucket into a local folder."""
    if result.incident is None:
        return []
    s3 = clients("s3")
    bucket = reports_bucket(clients)
    incident_id = result.incident["incident_id"]
    prefix = f"reports/{incident_id}/{result.submission.execution_name}"
    files = []
    for suffix in (".json", ".md", ".html"):
        try:
            body = s3.get_object(Bucket=bucket, Key=prefix + suffix)["Body"].read()
        except ClientError:
            continue
        target = out_dir / incident_id / f"{result.submission.execution_name}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        files.append(target)
    result.report_files = files
    return files
