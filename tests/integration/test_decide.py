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
from cloud_sniper.domain.policy import PolicyError, parse_policy, policy_as_json
from cloud_sniper.domain.policy_parameter import parameter_value
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
    cached_by_handler = (
        handler._decide_settings,
        handler._approval_settings,
        handler._policy,
        handler._parameter_policy,
    )
    for cached in cached_by_handler:
        cached.cache_clear()


@pytest.fixture
def account(monkeypatch, tmp_path):
    """An emulated account, and the default policy built as the JSON the bundle ships."""
    built = tmp_path / "policy.json"
    built.write_text(policy_as_json(DEFAULT_POLICY))
    monkeypatch.setenv("POLICY_FILE", str(built))
    monkeypatch.delenv("POLICY_PARAMETER", raising=False)
    monkeypatch.delenv("POLICY_MAX_AGE_SECONDS", raising=False)
    # The local runtime leaves the template's variables in the environment of later tests.
    monkeypatch.delenv("BUDGET_TABLE", raising=False)
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


# --- the policy parameter ---------------------------------------------------------------------

NOTIFY_ONLY = {
    "version": 1,
    "rules": [{"name": "watch-everything", "match": {"types": ["*"]}, "mode": "notify"}],
}
BLOCK_ALL = {
    "version": 1,
    "rules": [{"name": "block-everything", "mode": "auto", "actions": ["waf_block"]}],
}


class PolicyParameter:
    """The deployed policy's parameter in the emulated account, named in decide's environment."""

    def __init__(self, monkeypatch) -> None:
        self.ssm = boto3.client("ssm")
        monkeypatch.setenv("POLICY_PARAMETER", naming.POLICY_PARAMETER)

    def put(self, document: dict | str) -> None:
        value = document if isinstance(document, str) else parameter_value(parse_policy(document))
        self.ssm.put_parameter(
            Name=naming.POLICY_PARAMETER, Value=value, Type="String", Overwrite=True
        )


@pytest.fixture
def parameter(account, monkeypatch) -> PolicyParameter:
    return PolicyParameter(monkeypatch)


def test_the_policy_is_read_from_its_parameter(parameter, event):
    # Given the parameter holds a policy that only notifies, unlike the bundled default
    parameter.put(NOTIFY_ONLY)

    # When decide reads a brute force the default policy would block
    decision = decide(event)

    # Then the parameter's policy decided
    assert (decision.mode, decision.rule) == (Mode.NOTIFY, "watch-everything")


def test_a_warm_function_keeps_the_policy_for_its_cache_age(parameter, event):
    # Given a warm function that decided under the first policy
    parameter.put(NOTIFY_ONLY)
    assert decide(event).rule == "watch-everything"

    # When the parameter changes within the default 300 s, then the kept policy still decides
    parameter.put(BLOCK_ALL)
    assert decide(event).rule == "watch-everything"

    # And once the cache is gone, the new policy does
    adapters.clear_caches()
    assert decide(event).rule == "block-everything"


def test_a_changed_parameter_is_picked_up_after_the_cache_age(parameter, event, monkeypatch):
    # Given a function that keeps the parameter's value for no time at all
    monkeypatch.setenv("POLICY_MAX_AGE_SECONDS", "0")
    parameter.put(NOTIFY_ONLY)
    assert decide(event).rule == "watch-everything"

    # When a SOC pushes another policy, then the next decision uses it, without a cold start
    parameter.put(BLOCK_ALL)
    decision = decide(event)
    assert (decision.mode, decision.rule) == (Mode.AUTO, "block-everything")


def test_each_value_of_the_parameter_is_validated_once(parameter, event, monkeypatch):
    # Given a function that reads the parameter on every decision
    monkeypatch.setenv("POLICY_MAX_AGE_SECONDS", "0")
    parameter.put(NOTIFY_ONLY)

    # When it decides three times under one value, then once under another
    for _ in range(3):
        decide(event)
    parameter.put(BLOCK_ALL)
    decide(event)

    # Then each value was parsed and validated once, however often it was read
    assert handler._parameter_policy.cache_info().misses == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            json.dumps({"version": 1, "rules": [{"name": "x", "mode": "sometimes"}]}),
            r"invalid policy: rules\[0\] \(x\)\.mode",
        ),
        ('{"version": 1,,}', "not valid JSON"),
        ("[1, 2]", "a policy is a mapping"),
    ],
)
def test_an_invalid_policy_in_the_parameter_names_the_parameter(parameter, event, value, message):
    # Given the parameter holds something that is not a valid policy
    parameter.put(value)

    # When decide runs, then it fails, naming the parameter and what is wrong, never falling
    # back to the bundled policy
    with pytest.raises(PolicyError, match=f"SSM parameter {naming.POLICY_PARAMETER}: {message}"):
        decide(event)


@pytest.mark.parametrize(
    ("code", "status", "raised"),
    [
        ("ThrottlingException", 400, TransientAwsError),
        ("InternalServerError", 500, TransientAwsError),
        ("AccessDeniedException", 400, ClientError),
    ],
)
def test_a_failed_parameter_read_is_raised_for_the_state_machine(
    parameter, event, code, status, raised
):
    # Given SSM answers GetParameter with an error
    parameter.put(NOTIFY_ONLY)
    stubber = Stubber(adapters._parameters().client)
    stubber.add_client_error("get_parameter", code, http_status_code=status)

    # When decide runs, then throttling and service errors are transient, the rest is not
    with stubber, pytest.raises(raised, match=code):
        decide(event)


def test_a_transient_failure_names_the_parameter(parameter, event):
    # Given SSM throttles the read of the policy parameter
    parameter.put(NOTIFY_ONLY)
    stubber = Stubber(adapters._parameters().client)
    stubber.add_client_error("get_parameter", "ThrottlingException", http_status_code=400)

    # When decide runs, then the failure says what was being read
    with stubber, pytest.raises(TransientAwsError, match=naming.POLICY_PARAMETER):
        decide(event)


def test_a_missing_parameter_is_an_error_not_the_bundled_policy(parameter, event):
    # Given decide names a parameter the account does not hold, then it fails, naming it
    with pytest.raises(ClientError, match=f"ParameterNotFound.*{naming.POLICY_PARAMETER}"):
        decide(event)


def test_without_a_parameter_named_the_bundled_file_decides(account, event):
    # Given the account holds a policy parameter, but decide's environment names none
    boto3.client("ssm").put_parameter(
        Name=naming.POLICY_PARAMETER,
        Value=parameter_value(parse_policy(NOTIFY_ONLY)),
        Type="String",
    )

    # When decide runs, then the bundled default policy decided
    assert decide(event).rule == "brute-force-inbound"


@pytest.mark.parametrize("age", ["-1", "soon"])
def test_an_invalid_cache_age_is_named(parameter, event, monkeypatch, age):
    # Given a cache age that is no whole number of seconds, then decide names the variable
    monkeypatch.setenv("POLICY_MAX_AGE_SECONDS", age)
    with pytest.raises(ValueError, match="POLICY_MAX_AGE_SECONDS"):
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
