"""The decide and request-approval handlers against an emulated account."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

import cloud_sniper
from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import Decision, Mode
from cloud_sniper.domain.policy import policy_as_json
from services.decide import adapters, handler
from services.decide.approval_request import ApprovalConflictError

DEFAULT_POLICY = Path(cloud_sniper.__file__).parent / "data" / "default-policy.yaml"
ATTACKER = "89.160.20.112"
TABLE = "cloud-sniper-approvals"


@dataclass
class Context:
    function_name: str = "cloud-sniper-decide"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:111122223333:function:cloud-sniper-decide"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


def cold_start() -> None:
    """Forget everything a warm execution environment would remember."""
    adapters.clear_caches()
    for cached in (handler._decide_settings, handler._approval_settings, handler._policy):
        cached.cache_clear()


@pytest.fixture
def account(monkeypatch, tmp_path):
    """An emulated account, and the default policy built as the JSON the bundle ships."""
    built = tmp_path / "policy.json"
    built.write_text(policy_as_json(DEFAULT_POLICY))
    monkeypatch.setenv("POLICY_FILE", str(built))
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "decide")
    cold_start()
    with mock_aws():
        yield boto3.client("ec2")
    cold_start()


def decide(event) -> Decision:
    return Decision.model_validate(handler.decide(event("decide-request.json"), Context()))


# --- decide ------------------------------------------------------------------------------------


def test_an_inbound_brute_force_is_blocked_automatically(account, event):
    # Given an account whose Elastic IP is some other address
    account.allocate_address(Domain="vpc", Address="81.2.69.142")

    # When decide reads an inbound SSH brute force from a public address
    decision = decide(event)

    # Then the default policy blocks it at once, in the network ACLs and in WAF
    assert decision.mode == Mode.AUTO
    assert decision.rule == "brute-force-inbound"
    assert [action.id for action in decision.actions] == [
        f"nacl_block:{ATTACKER}/32",
        f"waf_block:{ATTACKER}/32",
    ]
    assert "1 of 1 indicators seen before" in decision.reason


def test_an_elastic_ip_of_the_estate_is_never_blocked(account, event):
    # Given the "attacker" address is one of the account's Elastic IPs
    account.allocate_address(Domain="vpc", Address=ATTACKER)

    # When decide reads the finding
    decision = decide(event)

    # Then nothing is planned, and each refusal names the estate
    assert decision.mode == Mode.NOTIFY
    assert decision.actions == []
    assert {refusal.reason for refusal in decision.refusals} == {
        "one of the estate's own public addresses (Elastic IP or NAT gateway)"
    }


def test_a_nat_gateway_address_of_the_estate_is_never_blocked(account, event):
    # Given a NAT gateway holding the "attacker" address, whose Elastic IP is no longer listed
    vpc = account.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = account.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    allocation = account.allocate_address(Domain="vpc", Address=ATTACKER)["AllocationId"]
    account.create_nat_gateway(SubnetId=subnet, AllocationId=allocation)
    account.release_address(AllocationId=allocation)
    assert account.describe_addresses()["Addresses"] == []

    # When decide reads the finding
    decision = decide(event)

    # Then the NAT gateway's address is refused as the estate's own
    assert decision.mode == Mode.NOTIFY
    assert "one of the estate's own public addresses" in decision.refusals[0].reason


def test_the_estate_is_read_once_per_cold_start(account, event):
    # Given a first decision, made before the address became an Elastic IP
    assert decide(event).mode == Mode.AUTO
    account.allocate_address(Domain="vpc", Address=ATTACKER)

    # When decide runs again warm, then after a cold start
    warm = decide(event)
    cold_start()
    cold = decide(event)

    # Then the warm run still knew the old estate, the cold one reads the new one
    assert warm.mode == Mode.AUTO
    assert cold.mode == Mode.NOTIFY


def test_a_relative_policy_file_is_read_from_the_bundle_root(account, event, monkeypatch, tmp_path):
    # Given POLICY_FILE relative to the bundle, and a working directory elsewhere
    monkeypatch.setenv("POLICY_FILE", "cloud_sniper/data/default-policy.yaml")
    monkeypatch.chdir(tmp_path)
    cold_start()

    # When decide runs, then it found the policy
    assert decide(event).rule == "brute-force-inbound"


@pytest.mark.parametrize(
    ("code", "status", "raised"),
    [
        ("RequestLimitExceeded", 503, TransientAwsError),
        ("InternalError", 500, TransientAwsError),
        ("UnauthorizedOperation", 403, ClientError),
    ],
)
def test_a_failed_estate_read_is_raised_for_the_state_machine(account, event, code, status, raised):
    # Given EC2 answers DescribeAddresses with an error
    stubber = Stubber(adapters._ec2())
    stubber.add_client_error("describe_addresses", code, http_status_code=status)

    # When decide runs, then throttling and service errors are transient, the rest is not
    with stubber, pytest.raises(raised, match=code):
        decide(event)


# --- request approval --------------------------------------------------------------------------


@dataclass
class Approvals:
    table: object
    queue_url: str
    sqs: object

    def messages(self) -> list[dict]:
        received = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(message["Body"]) for message in received.get("Messages", [])]


@pytest.fixture
def approvals(account, monkeypatch):
    """The approvals table, the approval topic and a queue subscribed to read what it sends."""
    dynamodb = boto3.resource("dynamodb")
    table = dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "approval_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "approval_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="cloud-sniper-approvals")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="approvers")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn["Attributes"]["QueueArn"])
    monkeypatch.setenv("APPROVALS_TABLE", TABLE)
    monkeypatch.setenv("APPROVAL_TOPIC_ARN", topic)
    return Approvals(table=table, queue_url=queue_url, sqs=sqs)


def test_an_approval_request_is_stored_pending(approvals, event):
    # Given a decision asking for approval
    request = event("request-approval.json")

    # When request_approval runs
    result = handler.request_approval(request, Context())

    # Then a pending approval is stored under a short id named after the execution, expiring
    # with the decision's timeout
    expected_id = naming.approval_id(request["execution_name"])
    assert result == {"approval_id": expected_id}
    assert expected_id.startswith("apr-") and len(expected_id) == 14
    item = approvals.table.get_item(Key={"approval_id": expected_id})["Item"]
    assert item["status"] == "pending"
    assert item["token"] == request["token"]
    assert item["incident_id"] == request["incident_id"]
    assert item["execution_name"] == request["execution_name"]
    assert item["finding"]["type"] == "UnauthorizedAccess:EC2/MaliciousIPCaller.Custom"
    assert item["finding"]["indicators"][0]["value"] == "216.160.83.56"
    assert [action["id"] for action in item["actions"]] == [
        "nacl_block:216.160.83.56/32",
        "waf_block:216.160.83.56/32",
    ]
    requested = datetime.fromisoformat(item["requested_at"])
    expires = datetime.fromisoformat(item["expires_at"])
    assert expires - requested == timedelta(hours=1)


def test_approvers_are_told_what_to_approve_and_how_but_not_the_token(approvals, event):
    # Given a decision asking for approval
    request = event("request-approval.json")

    # When request_approval runs
    handler.request_approval(request, Context())

    # Then one notification says what happened, to what, what would be done, until when, and how
    # to answer; the task token is nowhere in it
    (envelope,) = approvals.messages()
    subject, message = envelope["Subject"], envelope["Message"]
    expected_id = naming.approval_id(request["execution_name"])
    assert subject == f"Cloud Sniper approval {expected_id}: {request['finding']['type']}"
    for expected in (
        "UnauthorizedAccess:EC2/MaliciousIPCaller.Custom, severity 5 (Medium)",
        "Instance i-0abc1234def567890 in vpc-0a1b2c3d",
        "ipv4 216.160.83.56 (attacker, inbound, port 443/tcp), on partner-feed",
        "nacl_block 216.160.83.56/32 in the network ACLs of subnet-0a1b2c3d for 24h",
        "waf_block 216.160.83.56/32 for 24h",
        "Expires:",
        f"cloud-sniper approvals approve {expected_id} --reason TEXT",
        f"cloud-sniper approvals deny {expected_id} --reason TEXT",
    ):
        assert expected in message
    assert request["token"] not in json.dumps(envelope)


def set_status(approvals: Approvals, approval_id: str, status: str) -> None:
    approvals.table.update_item(
        Key={"approval_id": approval_id},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": status},
    )


def test_a_retried_request_takes_over_the_pending_approval(approvals, event):
    # Given an approval requested, still pending
    request = event("request-approval.json")
    first = handler.request_approval(request, Context())["approval_id"]

    # When the state machine retries the task: same execution, a new task token
    retried = {**request, "token": "token-of-the-second-attempt"}
    again = handler.request_approval(retried, Context())["approval_id"]

    # Then the one approval of the execution now answers the new task, and approvers hear of it
    assert again == first
    assert approvals.table.scan()["Count"] == 1
    item = approvals.table.get_item(Key={"approval_id": first})["Item"]
    assert (item["status"], item["token"]) == ("pending", "token-of-the-second-attempt")
    assert [envelope["Subject"] for envelope in approvals.messages()] == [
        f"Cloud Sniper approval {first}: {request['finding']['type']}"
    ] * 2


def test_a_repeated_request_of_an_answered_task_keeps_the_answer(approvals, event):
    # Given an approval already requested, and answered since
    request = event("request-approval.json")
    first = handler.request_approval(request, Context())["approval_id"]
    approvals.messages()
    set_status(approvals, first, "approved")

    # When the same task (same token) asks again
    again = handler.request_approval(request, Context())["approval_id"]

    # Then the same approval is named, its answer kept, and nobody is asked again
    assert again == first
    assert approvals.table.scan()["Count"] == 1
    item = approvals.table.get_item(Key={"approval_id": first})["Item"]
    assert (item["status"], item["token"]) == ("approved", request["token"])
    assert approvals.messages() == []


@pytest.mark.parametrize("status", ["approved", "denied", "timed_out"])
def test_a_retried_request_after_the_answer_fails(approvals, event, status):
    # Given an approval answered (or timed out) while its task failed
    request = event("request-approval.json")
    first = handler.request_approval(request, Context())["approval_id"]
    set_status(approvals, first, status)

    # When the retried task asks with a new token, then it fails rather than wait in vain
    retried = {**request, "token": "token-of-the-second-attempt"}
    with pytest.raises(ApprovalConflictError, match=f"approval {first} is already {status}"):
        handler.request_approval(retried, Context())

    # And the answer stands
    item = approvals.table.get_item(Key={"approval_id": first})["Item"]
    assert (item["status"], item["token"]) == (status, request["token"])


def test_an_approval_of_another_execution_is_never_taken_over(approvals, event):
    # Given a pending approval of another execution under the id this execution would use
    request = event("request-approval.json")
    taken = naming.approval_id(request["execution_name"])
    approvals.table.put_item(
        Item={
            "approval_id": taken,
            "status": "pending",
            "execution_name": "another-execution",
            "token": "token-of-another-execution",
        }
    )

    # When this execution requests its approval, then it fails and the other one is untouched
    with pytest.raises(ApprovalConflictError, match="belongs to execution another-execution"):
        handler.request_approval(request, Context())
    item = approvals.table.get_item(Key={"approval_id": taken})["Item"]
    assert item["token"] == "token-of-another-execution"


def test_a_decision_that_needs_no_approval_is_refused(approvals, event):
    # Given a request whose decision is auto
    request = event("request-approval.json")
    request["decision"]["mode"] = "auto"
    request["decision"]["approval_timeout_seconds"] = None

    # When request_approval runs, then it fails and stores nothing
    with pytest.raises(ValueError, match="nothing to approve"):
        handler.request_approval(request, Context())
    assert approvals.table.scan()["Count"] == 0


def test_a_missing_setting_is_named(approvals, event, monkeypatch):
    # Given the function lacks its topic
    monkeypatch.delenv("APPROVAL_TOPIC_ARN")

    # When request_approval runs, then the error names the variable
    with pytest.raises(ValueError, match="APPROVAL_TOPIC_ARN"):
        handler.request_approval(event("request-approval.json"), Context())
