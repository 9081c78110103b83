"""The report handler against emulated tables, bucket and event bus."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import ActionKind, ActionStatus
from services.mitigate.actions import Block
from services.mitigate.adapters import DynamoBlockStore
from services.report import handler as report_handler
from services.report.adapters import (
    EventBus,
    EventNotPublishedError,
    ExecutionHistory,
    IncidentsTable,
)
from services.report.nist import HistoryUnavailableError, read_json

BUCKET = "cloud-sniper-reports-111122223333-us-east-1"
INCIDENT_ID = "inc-0f1e2d3c4b5a6978"


@dataclass
class Context:
    function_name: str = "cloud-sniper-report"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:111122223333:function:cloud-sniper-report"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


@dataclass
class Account:
    incidents: object
    approvals: object
    blocks: object
    s3: object
    sqs: object
    queue_url: str


def create_table(name: str, key: str):
    return boto3.resource("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def create_blocks_table():
    """The blocks table with its index by incident, as the data stack declares them."""
    return boto3.resource("dynamodb").create_table(
        TableName=naming.BLOCKS_TABLE,
        KeySchema=[{"AttributeName": "block_id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "block_id", "AttributeType": "S"},
            {"AttributeName": "incident_id", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": naming.BLOCKS_BY_INCIDENT_INDEX,
                "KeySchema": [{"AttributeName": "incident_id", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def account(monkeypatch):
    monkeypatch.setenv("INCIDENTS_TABLE", naming.INCIDENTS_TABLE)
    monkeypatch.setenv("APPROVALS_TABLE", naming.APPROVALS_TABLE)
    monkeypatch.setenv("BLOCKS_TABLE", naming.BLOCKS_TABLE)
    monkeypatch.setenv("REPORTS_BUCKET", BUCKET)
    monkeypatch.setenv("EVENT_BUS_NAME", naming.EVENT_BUS)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "report")
    report_handler._dependencies.cache_clear()
    # Step Functions runs the state machines made here, for their execution histories.
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)

        # A rule on the project bus sends incident events to a queue the test reads.
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(QueueName="incident-events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events = boto3.client("events")
        events.create_event_bus(Name=naming.EVENT_BUS)
        events.put_rule(
            Name="incident-reported",
            EventBusName=naming.EVENT_BUS,
            EventPattern=json.dumps(
                {
                    "source": [naming.EVENT_SOURCE],
                    "detail-type": [naming.INCIDENT_REPORTED_DETAIL_TYPE],
                }
            ),
        )
        events.put_targets(
            Rule="incident-reported",
            EventBusName=naming.EVENT_BUS,
            Targets=[{"Id": "queue", "Arn": queue_arn}],
        )

        yield Account(
            incidents=create_table(naming.INCIDENTS_TABLE, "incident_id"),
            approvals=create_table(naming.APPROVALS_TABLE, "approval_id"),
            blocks=create_blocks_table(),
            s3=s3,
            sqs=sqs,
            queue_url=queue_url,
        )
    report_handler._dependencies.cache_clear()


@pytest.fixture
def mitigated(event):
    return lambda: copy.deepcopy(event("report-request-mitigated.json"))


def received_events(account: Account) -> list[dict]:
    messages = account.sqs.receive_message(
        QueueUrl=account.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def read_object(account: Account, key: str) -> tuple[str, str]:
    stored = account.s3.get_object(Bucket=BUCKET, Key=key)
    return stored["Body"].read().decode(), stored["ContentType"]


def test_report_records_writes_and_announces_the_incident(account, mitigated):
    # Given a mitigated execution
    request = mitigated()

    # When it is reported
    result = report_handler.report(request, Context())

    # Then the handler answers with the incident, its outcome and its reports
    base = f"reports/{INCIDENT_ID}/{request['execution_name']}"
    assert result == {
        "incident_id": INCIDENT_ID,
        "outcome": "mitigated",
        "report_keys": {"json": f"{base}.json", "markdown": f"{base}.md", "html": f"{base}.html"},
    }

    # And the three reports are in the bucket
    document, content_type = read_object(account, f"{base}.json")
    assert content_type == "application/json"
    assert read_json(document).outcome.value == "mitigated"
    markdown, content_type = read_object(account, f"{base}.md")
    assert content_type.startswith("text/markdown")
    assert markdown.startswith(f"# Incident {INCIDENT_ID}: mitigated")
    html, content_type = read_object(account, f"{base}.html")
    assert content_type == "text/html; charset=utf-8"
    assert f"<title>Incident {INCIDENT_ID}: mitigated</title>" in html

    # And the incident is recorded
    item = account.incidents.get_item(Key={"incident_id": INCIDENT_ID})["Item"]
    assert item["outcome"] == "mitigated"
    assert item["deliveries"] == 1
    assert item["report_markdown_key"] == f"{base}.md"
    assert read_json(item["report"]).incident_id == INCIDENT_ID

    # And the event is on the project bus
    [bus_event] = received_events(account)
    assert bus_event["source"] == "cloud-sniper"
    assert bus_event["detail-type"] == "Cloud Sniper Incident Reported"
    detail = bus_event["detail"]
    assert detail["incident_id"] == INCIDENT_ID
    assert detail["finding"]["type"] == "UnauthorizedAccess:EC2/SSHBruteForce"
    assert (detail["decision_mode"], detail["outcome"]) == ("auto", "mitigated")
    assert [action["status"] for action in detail["actions"]] == ["applied", "already_applied"]
    assert detail["report_keys"] == result["report_keys"]
    assert detail["report_bucket"] == BUCKET


def test_a_retried_report_is_idempotent_and_a_new_execution_counts(account, mitigated):
    # Given an execution already reported
    request = mitigated()
    report_handler.report(request, Context())

    # When its report is retried, then a later execution of the same finding reports
    report_handler.report(request, Context())
    later = mitigated()
    later["execution_name"] = "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1-20240501T163000-9f8e7d6c"
    later["execution_started_at"] = "2024-05-01T16:30:08Z"
    report_handler.report(later, Context())

    # Then the record counts two deliveries and shows the later one
    item = account.incidents.get_item(Key={"incident_id": INCIDENT_ID})["Item"]
    assert item["deliveries"] == 2
    assert item["execution_name"] == later["execution_name"]
    keys = account.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"reports/{INCIDENT_ID}/")
    assert len(keys["Contents"]) == 6


def timed_out_approval(request: dict) -> dict:
    """The request turned into an approval nobody answered in time."""
    state = request["state"]
    state["decision"]["mode"] = "approval"
    del state["mitigation"]
    state["approval_error"] = {"Error": "States.Timeout", "Cause": ""}
    return request


def put_approval(account: Account, execution_name: str, status: str) -> str:
    approval_id = naming.approval_id(execution_name)
    account.approvals.put_item(
        Item={
            "approval_id": approval_id,
            "incident_id": INCIDENT_ID,
            "execution_name": execution_name,
            "status": status,
        }
    )
    return approval_id


def test_an_approval_timeout_marks_the_pending_approval(account, mitigated):
    # Given this execution's approval nobody answered, and another execution's
    request = timed_out_approval(mitigated())
    this = put_approval(account, request["execution_name"], "pending")
    other = put_approval(account, "another-execution", "pending")

    # When it is reported
    result = report_handler.report(request, Context())

    # Then the incident timed out and only this execution's approval is marked so
    assert result["outcome"] == "timed_out"
    statuses = {item["approval_id"]: item["status"] for item in account.approvals.scan()["Items"]}
    assert statuses == {this: "timed_out", other: "pending"}
    assert account.approvals.get_item(Key={"approval_id": this})["Item"]["timed_out_at"]


@pytest.mark.parametrize("status", ["approved", "denied"])
def test_an_approval_answered_meanwhile_keeps_its_answer(account, mitigated, status):
    # Given this execution's approval answered after its task timed out
    request = timed_out_approval(mitigated())
    approval_id = put_approval(account, request["execution_name"], status)

    # When it is reported
    report_handler.report(request, Context())

    # Then the answer stands
    item = account.approvals.get_item(Key={"approval_id": approval_id})["Item"]
    assert item["status"] == status
    assert "timed_out_at" not in item


def test_an_escalated_approval_answered_in_time_is_not_marked_timed_out(account, mitigated, caplog):
    # Given an approval whose first wait timed out, escalated, then approved: the state keeps the
    # first timeout beside the answer
    request = mitigated()
    request["state"]["decision"]["mode"] = "approval"
    approval_id = put_approval(account, request["execution_name"], "approved")
    request["state"]["approval_error"] = {"Error": "States.Timeout", "Cause": ""}
    request["state"]["approval"] = {
        "approval_id": approval_id,
        "status": "approved",
        "requested_at": "2024-05-01T10:30:10Z",
        "expires_at": "2024-05-01T12:30:10Z",
        "escalated_at": "2024-05-01T11:30:10Z",
        "approver": "arn:aws:iam::111122223333:user/alice",
        "reason": "confirmed",
    }

    # When it is reported
    result = report_handler.report(request, Context())

    # Then the answer decides the outcome, and no timeout is marked or logged
    assert result["outcome"] == "mitigated"
    assert account.approvals.get_item(Key={"approval_id": approval_id})["Item"]["status"] == (
        "approved"
    )
    assert "approval timed out" not in [record.getMessage() for record in caplog.records]


def test_an_approval_timeout_without_a_stored_approval_stores_none(account, mitigated):
    # Given an execution whose approval task timed out before it stored the approval
    request = timed_out_approval(mitigated())

    # When it is reported, then no approval item appears
    assert report_handler.report(request, Context())["outcome"] == "timed_out"
    assert account.approvals.scan()["Count"] == 0


def record_block(
    account: Account,
    incident_id: str,
    kind: ActionKind,
    created_at: datetime,
    written: bool = True,
) -> Block:
    """Record a block as the mitigate service does; a WAF one as the WAF writer marks it."""
    nacl = kind == ActionKind.NACL_BLOCK
    block = Block(
        block_id=f"{kind}#{incident_id}#{created_at:%H%M%S}",
        kind=kind,
        target="198.51.100.7",
        cidr="198.51.100.7/32",
        ip_version=4,
        ip_set=None if nacl else naming.WAF_IPV4_SET,
        nacl_id="acl-0123456789abcdef0" if nacl else None,
        subnet_ids=["subnet-0a1b2c3d"] if nacl else [],
        rule_number=51 if nacl else None,
        incident_id=incident_id,
        finding_id="7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1",
        action_id=f"act-{kind}",
        created_at=created_at,
        expires_at=created_at + timedelta(days=1),
    )
    store = DynamoBlockStore(account.blocks)
    assert store.put_new(block)
    if not nacl and written:
        assert store.mark_written(block.block_id, created_at + timedelta(seconds=30))
    return block


def test_a_failed_mitigation_reports_the_blocks_it_left_in_force(account, mitigated):
    # Given Mitigate failed after its retries, its first attempt having applied the NACL block
    request = mitigated()
    state = request["state"]
    del state["mitigation"]
    state["failure"] = {
        "Error": "TransientAwsError",
        "Cause": "WAF IP set cloud-sniper-blocked-ipv4: WAFUnavailableEntityException",
    }
    started = datetime(2024, 5, 1, 10, 30, 8, tzinfo=UTC)
    earlier_attempt = record_block(
        account, INCIDENT_ID, ActionKind.NACL_BLOCK, started + timedelta(seconds=3)
    )
    # And a WAF block an earlier execution made for the same incident
    earlier_execution = record_block(
        account, INCIDENT_ID, ActionKind.WAF_BLOCK, started - timedelta(hours=2)
    )
    # And blocks that are not this incident's, or no longer in force
    record_block(account, "inc-another-incident", ActionKind.NACL_BLOCK, started)
    lifted = record_block(account, INCIDENT_ID, ActionKind.NACL_BLOCK, started - timedelta(days=2))
    DynamoBlockStore(account.blocks).mark_removed(lifted.block_id, "expired", started)

    # When it is reported
    result = report_handler.report(request, Context())

    # Then the incident failed, and lists the incident's blocks in force, oldest first
    assert result["outcome"] == "failed"
    document, _ = read_object(account, result["report_keys"]["json"])
    incident = read_json(document)
    assert incident.actions == []
    assert [(block.block_id, block.expires_at) for block in incident.blocks_in_force] == [
        (earlier_execution.block_id, earlier_execution.expires_at),
        (earlier_attempt.block_id, earlier_attempt.expires_at),
    ]

    # And the Markdown report says so under Actions, rather than that nothing was done
    markdown, _ = read_object(account, result["report_keys"]["markdown"])
    assert "No action was run." not in markdown
    assert "#### Blocks in force" in markdown
    assert (
        "| nacl_block | `198.51.100.7` | in force | 2024-05-01 10:30:11 UTC | 198.51.100.7/32 "
        "denied by rule 51 of acl-0123456789abcdef0, in force from an earlier attempt |"
    ) in markdown
    assert "in force from an earlier execution |" in markdown
    assert "| 2024-05-02 08:30:08 UTC |" in markdown


def test_a_failed_mitigation_reports_a_waf_block_still_queued_as_such(account, mitigated):
    # Given Mitigate failed after its first attempt recorded a WAF block the writer has not
    # written yet
    request = mitigated()
    state = request["state"]
    del state["mitigation"]
    state["failure"] = {"Error": "TransientAwsError", "Cause": "EC2: RequestLimitExceeded"}
    started = datetime(2024, 5, 1, 10, 30, 8, tzinfo=UTC)
    queued = record_block(
        account, INCIDENT_ID, ActionKind.WAF_BLOCK, started + timedelta(seconds=2), written=False
    )

    # When it is reported
    result = report_handler.report(request, Context())

    # Then the block is listed as queued for the WAF writer, not as in force
    document, _ = read_object(account, result["report_keys"]["json"])
    [block] = read_json(document).blocks_in_force
    assert (block.block_id, block.status) == (queued.block_id, ActionStatus.QUEUED)
    assert block.detail == (
        f"198.51.100.7/32 queued for {naming.WAF_IPV4_SET}, asked of the WAF writer from an "
        "earlier attempt"
    )


def test_an_unread_delivery_is_still_reported(account, event):
    # Given an execution whose ingest step failed
    request = event("report-request-ingest-failed.json")

    # When it is reported
    result = report_handler.report(request, Context())

    # Then the incident is recorded as failed, from the raw event
    assert result["outcome"] == "failed"
    item = account.incidents.get_item(Key={"incident_id": INCIDENT_ID})["Item"]
    assert item["finding_type"] == "UnauthorizedAccess:EC2/SSHBruteForce"
    [bus_event] = received_events(account)
    assert bus_event["detail"]["decision_mode"] is None
    assert bus_event["detail"]["finding"]["id"] == "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1"


class FailingEvents:
    """An EventBridge client that refuses every entry with the given code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def put_events(self, Entries):  # noqa: N803 - boto3's parameter name
        return {
            "FailedEntryCount": 1,
            "Entries": [{"ErrorCode": self.code, "ErrorMessage": "refused"}],
        }


def test_a_throttled_event_is_transient():
    # Given a bus that throttles
    bus = EventBus(FailingEvents("ThrottlingException"), naming.EVENT_BUS)

    # When / Then the state machine's Retry can match the error
    with pytest.raises(TransientAwsError):
        bus.publish(naming.INCIDENT_REPORTED_DETAIL_TYPE, {"incident_id": INCIDENT_ID})


def test_a_refused_event_is_an_error():
    # Given a bus that refuses the entry for good
    bus = EventBus(FailingEvents("AccessDeniedException"), naming.EVENT_BUS)

    # When / Then
    with pytest.raises(EventNotPublishedError, match="AccessDeniedException"):
        bus.publish(naming.INCIDENT_REPORTED_DETAIL_TYPE, {"incident_id": INCIDENT_ID})


def test_a_report_written_concurrently_is_not_lost(account):
    # Given a recorded incident
    table = IncidentsTable(account.incidents)
    account.incidents.put_item(
        Item={"incident_id": "inc-1", "deliveries": 1, "execution_names": {"run-1"}}
    )
    reads = []

    def merge(previous):
        reads.append(previous)
        if len(reads) == 1:
            # Another execution's report lands between this read and this write.
            account.incidents.put_item(
                Item={
                    "incident_id": "inc-1",
                    "deliveries": 2,
                    "execution_names": {"run-1", "run-2"},
                }
            )
        names = set(previous["execution_names"]) | {"run-3"}
        return {"incident_id": "inc-1", "deliveries": len(names), "execution_names": names}

    # When this report is written
    item = table.upsert("inc-1", merge)

    # Then it read again, and the other report's delivery still counts
    assert len(reads) == 2
    assert item["deliveries"] == 3
    stored = account.incidents.get_item(Key={"incident_id": "inc-1"})["Item"]
    assert stored["execution_names"] == {"run-1", "run-2", "run-3"}


def delivery(
    request: dict, name: str, updated_at: str, count: int, first_seen: str, last_seen: str
) -> dict:
    """The report request of an execution run for one update of the finding."""
    finding = request["state"]["finding"]
    finding.update(updated_at=updated_at, count=count, first_seen=first_seen, last_seen=last_seen)
    request["execution_name"] = name
    # Each update is delivered a few seconds after GuardDuty made it.
    request["execution_started_at"] = updated_at.replace(":00Z", ":08Z")
    return request


def test_a_later_delivery_updates_the_incident_and_a_late_older_one_does_not(account, mitigated):
    # Given the first delivery of a finding, counted once, reported
    first = delivery(
        mitigated(),
        "run-1",
        "2024-05-01T10:30:00Z",
        1,
        "2024-05-01T09:58:00Z",
        "2024-05-01T10:29:00Z",
    )
    report_handler.report(first, Context())

    # When GuardDuty delivers a later update, the activity having gone on
    second = delivery(
        mitigated(),
        "run-2",
        "2024-05-01T16:30:00Z",
        5,
        "2024-05-01T10:05:00Z",
        "2024-05-01T16:29:00Z",
    )
    result = report_handler.report(second, Context())

    # Then one incident holds the later count and last seen, the first seen of the first
    [item] = account.incidents.scan()["Items"]
    assert item["incident_id"] == INCIDENT_ID
    assert (item["count"], item["deliveries"]) == (5, 2)
    assert item["first_seen"] == "2024-05-01T09:58:00+00:00"
    assert item["last_seen"] == "2024-05-01T16:29:00+00:00"
    assert [(d["execution_name"], d["count"]) for d in item["delivery_history"]] == [
        ("run-1", 1),
        ("run-2", 5),
    ]

    # And the later execution's reports say so, in JSON and in Markdown
    document, _ = read_object(account, result["report_keys"]["json"])
    deliveries = read_json(document).deliveries
    assert (deliveries.total, deliveries.count) == (2, 5)
    assert deliveries.first_seen == datetime(2024, 5, 1, 9, 58, tzinfo=UTC)
    assert deliveries.last_seen == datetime(2024, 5, 1, 16, 29, tzinfo=UTC)
    markdown, _ = read_object(account, result["report_keys"]["markdown"])
    for row in (
        "| Count | 5 |",
        "| First seen | 2024-05-01 09:58:00 UTC |",
        "| Last seen | 2024-05-01 16:29:00 UTC |",
        "| Deliveries | 2 |",
        "| 2024-05-01 10:30:00 UTC | 1 | 2024-05-01 10:29:00 UTC | `run-1` |",
        "| 2024-05-01 16:30:00 UTC | 5 | 2024-05-01 16:29:00 UTC | `run-2` (this report) |",
    ):
        assert row in markdown

    # And when an older update reaches the pipeline late, it counts, but overwrites nothing
    late = delivery(
        mitigated(),
        "run-late",
        "2024-05-01T13:30:00Z",
        3,
        "2024-05-01T09:58:00Z",
        "2024-05-01T13:29:00Z",
    )
    late["execution_started_at"] = "2024-05-01T17:00:00Z"
    result = report_handler.report(late, Context())
    [item] = account.incidents.scan()["Items"]
    assert (item["count"], item["deliveries"]) == (5, 3)
    assert item["last_seen"] == "2024-05-01T16:29:00+00:00"
    assert [d["execution_name"] for d in item["delivery_history"]] == ["run-1", "run-late", "run-2"]
    document, _ = read_object(account, result["report_keys"]["json"])
    assert read_json(document).deliveries.count == 5

    # And a retried report of it counts no more
    report_handler.report(late, Context())
    assert account.incidents.get_item(Key={"incident_id": INCIDENT_ID})["Item"]["deliveries"] == 3


# A task token as the approval's task input carries it: whoever holds it resumes the execution.
TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAexample-token-of-the-approval"


def run_execution(name: str) -> str:
    """Run a state machine shaped like the pipeline's path in the emulated account; its ARN."""
    sfn = boto3.client("stepfunctions")
    states = ["Ingest", "Enrich", "Decide", "RequestApproval", "Mitigate"]
    definition = {
        "StartAt": states[0],
        "States": {
            **{
                state: {"Type": "Pass", "Next": following}
                for state, following in zip(states, [*states[1:], "Report"], strict=True)
            },
            "Report": {"Type": "Pass", "End": True},
        },
    }
    machine = sfn.create_state_machine(
        name=naming.STATE_MACHINE,
        definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/cloud-sniper-pipeline",
    )["stateMachineArn"]
    arn = sfn.start_execution(
        stateMachineArn=machine, name=name, input=json.dumps({"token": TOKEN})
    )["executionArn"]
    for _ in range(100):
        if sfn.describe_execution(executionArn=arn)["status"] != "RUNNING":
            return arn
        time.sleep(0.05)
    raise AssertionError(f"execution {name} did not end")


def test_the_report_has_its_execution_timeline_and_never_its_data(account, mitigated):
    # Given an execution whose states' inputs hold a task token, and its report request
    request = mitigated()
    request["execution_arn"] = run_execution(request["execution_name"])

    # When it is reported
    result = report_handler.report(request, Context())

    # Then each state is in the timeline with its times, read from the execution's history
    document, _ = read_object(account, result["report_keys"]["json"])
    timeline = read_json(document).timeline
    assert timeline.missing is None
    assert timeline.execution_arn == request["execution_arn"]
    assert [visit.name for visit in timeline.states] == [
        "Ingest",
        "Enrich",
        "Decide",
        "RequestApproval",
        "Mitigate",
        "Report",
    ]
    assert all(visit.exited_at >= visit.entered_at for visit in timeline.states)
    assert json.loads(document)["response_times"]["to_decision_from_start"] is not None

    # And neither the token nor any state's data reached a report
    for key in result["report_keys"].values():
        body, _ = read_object(account, key)
        assert TOKEN not in body
    item = account.incidents.get_item(Key={"incident_id": INCIDENT_ID})["Item"]
    assert TOKEN not in item["report"]


def test_a_history_that_cannot_be_read_still_gives_the_report(account, mitigated):
    # Given a request naming an execution the account does not have
    request = mitigated()
    request["execution_arn"] = (
        "arn:aws:states:us-east-1:123456789012:execution:cloud-sniper-pipeline:gone"
    )

    # When it is reported
    result = report_handler.report(request, Context())

    # Then the reports are written, and say why the timeline is missing
    assert result["outcome"] == "mitigated"
    document, _ = read_object(account, result["report_keys"]["json"])
    missing = read_json(document).timeline.missing
    assert missing.startswith("states GetExecutionHistory: ExecutionDoesNotExist")
    markdown, _ = read_object(account, result["report_keys"]["markdown"])
    assert "The execution's history could not be read: states GetExecutionHistory: " in markdown


def test_the_history_is_read_page_after_page():
    # Given a history in two pages
    client = boto3.client("stepfunctions", region_name="us-east-1")
    arn = "arn:aws:states:us-east-1:123456789012:execution:cloud-sniper-pipeline:run-1"
    at = datetime(2024, 5, 1, 10, 30, 8, tzinfo=UTC)
    entered = {"name": "Ingest", "input": json.dumps({"token": TOKEN})}
    first = [
        {"timestamp": at, "type": "ExecutionStarted", "id": 1, "previousEventId": 0},
        {
            "timestamp": at + timedelta(seconds=1),
            "type": "TaskStateEntered",
            "id": 2,
            "previousEventId": 1,
            "stateEnteredEventDetails": entered,
        },
    ]
    second = [
        {
            "timestamp": at + timedelta(seconds=2),
            "type": "TaskStateExited",
            "id": 3,
            "previousEventId": 2,
            "stateExitedEventDetails": {"name": "Ingest", "output": json.dumps({"t": TOKEN})},
        }
    ]
    expected = {"executionArn": arn, "includeExecutionData": False}
    with Stubber(client) as stub:
        stub.add_response(
            "get_execution_history", {"events": first, "nextToken": "page-2"}, expected
        )
        stub.add_response(
            "get_execution_history", {"events": second}, {**expected, "nextToken": "page-2"}
        )

        # When it is read
        events = ExecutionHistory(client).events(arn)

    # Then every page is read, and only types, times and state names are kept
    assert [(event.type, event.state) for event in events] == [
        ("ExecutionStarted", None),
        ("TaskStateEntered", "Ingest"),
        ("TaskStateExited", "Ingest"),
    ]
    assert TOKEN not in json.dumps([event.model_dump(mode="json") for event in events])


def test_a_refused_history_read_says_why():
    # Given a client refused the history
    client = boto3.client("stepfunctions", region_name="us-east-1")
    arn = "arn:aws:states:us-east-1:123456789012:execution:cloud-sniper-pipeline:run-1"
    with Stubber(client) as stub:
        stub.add_client_error(
            "get_execution_history", "AccessDeniedException", "not authorized", 400
        )

        # When / Then the error says what was refused and why
        with pytest.raises(HistoryUnavailableError) as raised:
            ExecutionHistory(client).events(arn)
    assert str(raised.value) == (
        "states GetExecutionHistory: AccessDeniedException: not authorized"
    )
