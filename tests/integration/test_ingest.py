"""The ingest service against an emulated state machine and quarantine queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.normalize import normalize
from services.ingest import adapters
from services.ingest import handler as ingest

ACCOUNT = "123456789012"
INTAKE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{naming.INTAKE_QUEUE}"
SENT_AT = datetime(2025, 3, 14, 10, 7, 52, 123000, tzinfo=UTC)
SSH_ID = "a4c6f2e1b3d5978a0c2e4f6a8b0d1c3e"
SSH_UPDATED = datetime(2025, 3, 14, 10, 2, 44, 918000, tzinfo=UTC)
CC_ID = "d7f9c5b4e6a8201d3f5b7c9e1a3b4f6c"
CC_UPDATED = SSH_UPDATED


@dataclass
class Context:
    function_name: str = "cloud-sniper-receive"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:cloud-sniper-receive"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


@dataclass
class Aws:
    state_machine_arn: str
    quarantine_url: str

    def executions(self) -> dict[str, dict]:
        """The started executions by name, with their input."""
        sfn = boto3.client("stepfunctions")
        listed = sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]
        return {
            item["name"]: json.loads(
                sfn.describe_execution(executionArn=item["executionArn"])["input"]
            )
            for item in listed
        }

    def quarantined(self) -> list[dict]:
        """The messages in the quarantine queue."""
        return (
            boto3.client("sqs")
            .receive_message(
                QueueUrl=self.quarantine_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
            )
            .get("Messages", [])
        )


def _clear_caches() -> None:
    ingest._pipeline.cache_clear()
    adapters._stepfunctions.cache_clear()
    adapters._sqs.cache_clear()


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "ingest")
    _clear_caches()
    with mock_aws():
        quarantine_url = boto3.client("sqs").create_queue(QueueName=naming.INTAKE_DLQ)["QueueUrl"]
        state_machine_arn = boto3.client("stepfunctions").create_state_machine(
            name=naming.STATE_MACHINE,
            definition=json.dumps(
                {"StartAt": "Ingest", "States": {"Ingest": {"Type": "Pass", "End": True}}}
            ),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/cloud-sniper-pipeline",
        )["stateMachineArn"]
        monkeypatch.setenv("STATE_MACHINE_ARN", state_machine_arn)
        monkeypatch.setenv("QUARANTINE_QUEUE_URL", quarantine_url)
        yield Aws(state_machine_arn, quarantine_url)
    _clear_caches()


def record(message_id: str, body: str, sent_at: datetime = SENT_AT) -> dict:
    """An SQS record as the event source mapping hands it to the function."""
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(int(sent_at.timestamp() * 1000)),
            "SenderId": "AIDAEXAMPLESENDER",
            "ApproximateFirstReceiveTimestamp": str(int(sent_at.timestamp() * 1000) + 40),
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": INTAKE_ARN,
        "awsRegion": "us-east-1",
    }


def receive(*records: dict) -> dict:
    return ingest.receive({"Records": list(records)}, Context())


def test_batch_starts_valid_skips_duplicates_and_quarantines_invalid(aws, event):
    # Given a batch: a finding, its duplicate delivery, an invalid finding, a body that is not
    # JSON, another finding and a dry-run replay of the first
    ssh = json.dumps(event("guardduty-ssh-brute-force.json"))
    batch = [
        record("m-1", ssh),
        record("m-2", ssh, sent_at=datetime(2025, 3, 14, 10, 9, tzinfo=UTC)),
        record("m-3", json.dumps(event("invalid-missing-severity.json"))),
        record("m-4", "{not json"),
        record("m-5", json.dumps(event("guardduty-cc-activity.json"))),
        record("m-6", json.dumps(event("replay-dry-run.json"))),
    ]

    # When the batch is received
    response = receive(*batch)

    # Then no record is left to retry
    assert response == {"batchItemFailures": []}
    # And one execution runs per finding update and dry-run flag, named after them
    assert set(aws.executions()) == {
        naming.execution_name(SSH_ID, SSH_UPDATED),
        naming.execution_name(CC_ID, CC_UPDATED),
        naming.execution_name(SSH_ID, SSH_UPDATED, dry_run=True),
    }
    # And the invalid deliveries are quarantined as received, with the field at fault
    quarantined = {
        message["MessageAttributes"]["source"]["StringValue"]: message
        for message in aws.quarantined()
    }
    assert set(quarantined) == {f"{naming.INTAKE_QUEUE}#m-3", f"{naming.INTAKE_QUEUE}#m-4"}
    missing = quarantined[f"{naming.INTAKE_QUEUE}#m-3"]
    assert missing["MessageAttributes"]["error"]["StringValue"] == "finding.severity: missing"
    assert missing["Body"] == batch[2]["body"]
    garbled = quarantined[f"{naming.INTAKE_QUEUE}#m-4"]
    assert garbled["MessageAttributes"]["error"]["StringValue"].startswith("event: not JSON")


def test_execution_input_is_the_contract_state(aws, event):
    # Given a GuardDuty event and a dry-run replay of it
    sent = event("guardduty-ssh-brute-force.json")

    # When both are received
    receive(
        record("m-1", json.dumps(sent)), record("m-2", json.dumps(event("replay-dry-run.json")))
    )

    # Then each execution starts with the delivery, the dry-run flag, when SQS took it and the
    # incident it belongs to; the replay's state holds the delivery it carried
    incident = naming.incident_id("aws.guardduty", SSH_ID)
    executions = aws.executions()
    assert executions[naming.execution_name(SSH_ID, SSH_UPDATED)] == {
        "event": sent,
        "dry_run": False,
        "received_at": "2025-03-14T10:07:52.123Z",
        "incident_id": incident,
    }
    replayed = executions[naming.execution_name(SSH_ID, SSH_UPDATED, dry_run=True)]
    assert (replayed["event"], replayed["dry_run"], replayed["incident_id"]) == (
        sent,
        True,
        incident,
    )


def test_redelivered_message_is_not_started_twice(aws, event):
    # Given a finding already received
    body = json.dumps(event("guardduty-cc-activity.json"))
    receive(record("m-1", body))

    # When SQS delivers the same message again, and EventBridge delivers it once more
    again = receive(
        record("m-1", body), record("m-9", body, sent_at=datetime(2025, 3, 15, tzinfo=UTC))
    )

    # Then both succeed and the one execution stays alone
    assert again == {"batchItemFailures": []}
    assert list(aws.executions()) == [naming.execution_name(CC_ID, CC_UPDATED)]


def test_throttled_start_is_retried_without_stopping_the_batch(aws, event):
    # Given Step Functions throttles the start of one execution
    throttled = naming.execution_name(CC_ID, CC_UPDATED)

    def throttle(params, **_):
        if params.get("name") == throttled:
            raise ClientError(
                {
                    "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "StartExecution",
            )

    adapters._stepfunctions().meta.events.register(
        "before-parameter-build.sfn.StartExecution", throttle
    )

    # When a batch holding that finding and another is received
    response = receive(
        record("m-1", json.dumps(event("guardduty-cc-activity.json"))),
        record("m-2", json.dumps(event("guardduty-ssh-brute-force.json"))),
    )

    # Then only the throttled record is reported for retry, and the other execution started
    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert list(aws.executions()) == [naming.execution_name(SSH_ID, SSH_UPDATED)]
    assert aws.quarantined() == []


def test_missing_setting_fails_the_whole_batch(aws, event, monkeypatch):
    # Given the function deployed without its state machine
    monkeypatch.delenv("STATE_MACHINE_ARN")
    _clear_caches()

    # When a batch arrives
    # Then the whole batch fails, to be retried once the function is fixed, and nothing starts
    with pytest.raises(Exception, match="All records failed"):
        receive(record("m-1", json.dumps(event("guardduty-ssh-brute-force.json"))))
    assert aws.executions() == {}


def test_ingest_state_normalizes_the_delivery(aws, event):
    # Given the state an execution was started with
    receive(record("m-1", json.dumps(event("replay-dry-run.json"))))
    (state,) = aws.executions().values()

    # When the Ingest state runs
    finding = ingest.normalize(state, Context(function_name="cloud-sniper-ingest"))

    # Then it returns the finding as JSON
    assert finding == normalize(event("guardduty-ssh-brute-force.json")).model_dump(mode="json")
    assert finding["id"] == SSH_ID


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"dry_run": False}, "state.event: missing"),
        ({"event": {"detail-type": "GuardDuty Finding"}}, "event.detail: missing"),
    ],
)
def test_ingest_state_rejects_an_unreadable_delivery(state, message):
    # Given a state without a readable delivery
    # When the Ingest state runs
    # Then it raises the error the state machine catches, naming the field
    with pytest.raises(InvalidFindingError, match=message):
        ingest.normalize(state, Context(function_name="cloud-sniper-ingest"))


def test_a_security_hub_event_starts_one_execution_per_finding(aws, event):
    # Given a Security Hub event of four findings: two to act on, one invalid, one suppressed
    sent = event("securityhub-imported-several.json")
    inspector_ec2, inspector_ecr, invalid, suppressed = sent["detail"]["findings"]

    # When the message holding it is received
    response = receive(record("m-1", json.dumps(sent)))

    # Then the message is done with, and one execution started per finding to act on
    assert response == {"batchItemFailures": []}
    executions = aws.executions()
    started = {
        naming.execution_name(
            finding["Id"], datetime.fromisoformat(finding["UpdatedAt"].replace("Z", "+00:00"))
        ): finding
        for finding in (inspector_ec2, inspector_ecr)
    }
    assert set(executions) == set(started)
    # And each execution's event is the event with its one finding, as Security Hub sends it
    for name, finding in started.items():
        state = executions[name]
        assert state["event"]["detail"]["findings"] == [finding]
        assert state["event"]["detail-type"] == "Security Hub Findings - Imported"
        assert state["incident_id"] == naming.incident_id("aws.securityhub", finding["Id"])
    # And the invalid finding alone is quarantined, named by its place in the message
    (kept,) = aws.quarantined()
    attributes = kept["MessageAttributes"]
    assert attributes["source"]["StringValue"] == f"{naming.INTAKE_QUEUE}#m-1#3"
    assert attributes["error"]["StringValue"] == "finding.Severity: missing"
    assert json.loads(kept["Body"])["detail"]["findings"] == [invalid]
    # And the suppressed finding started nothing
    assert suppressed["Id"] not in json.dumps(executions)


def test_a_throttled_finding_retries_its_message_and_quarantines_once(aws, event):
    # Given Step Functions throttles the start of the second finding of an event
    sent = event("securityhub-imported-several.json")
    ecr = sent["detail"]["findings"][1]
    throttled = naming.execution_name(
        ecr["Id"], datetime.fromisoformat(ecr["UpdatedAt"].replace("Z", "+00:00"))
    )
    calls = []

    def throttle(params, **_):
        if params.get("name") == throttled and not calls:
            calls.append(params["name"])
            raise ClientError(
                {
                    "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "StartExecution",
            )

    adapters._stepfunctions().meta.events.register(
        "before-parameter-build.sfn.StartExecution", throttle
    )

    # When the message is received, then received again as SQS retries it
    other = record("m-2", json.dumps(event("guardduty-ssh-brute-force.json")))
    first = receive(record("m-1", json.dumps(sent)), other)
    second = receive(record("m-1", json.dumps(sent)))

    # Then the first attempt is retried, the second starts the rest, and the invalid finding is
    # quarantined once
    assert first == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert second == {"batchItemFailures": []}
    assert throttled in aws.executions()
    assert len(aws.executions()) == 3
    assert len(aws.quarantined()) == 1


def test_a_guardduty_finding_via_security_hub_is_a_duplicate_of_its_direct_delivery(aws, event):
    # Given a GuardDuty finding update received from GuardDuty
    receive(record("m-1", json.dumps(event("guardduty-ssh-brute-force.json"))))

    # When the same update arrives through Security Hub
    response = receive(
        record("m-2", json.dumps(event("securityhub-guardduty-ssh-brute-force.json")))
    )

    # Then no second execution starts: it has the same name, for the same incident
    assert response == {"batchItemFailures": []}
    executions = aws.executions()
    assert list(executions) == [naming.execution_name(SSH_ID, SSH_UPDATED)]
    state = executions[naming.execution_name(SSH_ID, SSH_UPDATED)]
    assert state["incident_id"] == naming.incident_id("aws.guardduty", SSH_ID)
    assert state["event"]["source"] == "aws.guardduty"


def test_ingest_state_normalizes_a_security_hub_delivery(aws, event):
    # Given the state of an execution started for one finding of a Security Hub event
    receive(record("m-1", json.dumps(event("securityhub-imported-several.json"))))
    state = next(
        s for s in aws.executions().values() if "inspector" in json.dumps(s["event"]["detail"])
    )

    # When the Ingest state runs
    finding = ingest.normalize(state, Context(function_name="cloud-sniper-ingest"))

    # Then it returns that finding
    assert finding["product"] == "Inspector"
    assert finding["source"] == "aws.securityhub"
