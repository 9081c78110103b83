"""The approvals API's function against moto: the caller, the record and the waiting execution."""

from __future__ import annotations

import copy
import functools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from cloud_sniper.approvals import ApprovalError, api_url_from_stack
from cloud_sniper.domain import naming
from cloud_sniper.local.moto_fixes import task_failure_cause
from services.approvals import handler as approvals
from services.approvals.adapters import (
    CLIENT_CONFIG,
    DynamoApprovals,
    IamDirectory,
    StepFunctionsTasks,
    build_ports,
)
from services.approvals.service import Ports
from services.approvals.settings import Settings
from services.decide import adapters as decide_adapters
from services.decide import handler as decide
from tests.conftest import load_event
from tests.project_tables import create_table

ACCOUNT = "123456789012"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"  # in the approvers group
MALLORY = f"arn:aws:iam::{ACCOUNT}:user/mallory"  # not
RESPONDER_ROLE = "SecurityResponder"
RESPONDER_PATTERN = f"arn:aws:iam::{ACCOUNT}:role/people/Security*"
RESPONDER = f"arn:aws:sts::{ACCOUNT}:assumed-role/{RESPONDER_ROLE}/bob@example.com"


@dataclass
class Context:
    function_name: str = naming.FUNCTIONS["approvals"]
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = (
        f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{naming.FUNCTIONS['approvals']}"
    )
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


@dataclass
class Waiting:
    """An execution waiting for an approval, and the approval it waits for."""

    execution_arn: str
    approval_id: str


def api_event(
    method: str,
    path: str,
    caller: str,
    body: str | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway proxy event (IAM authorization) for one request, from the samples."""
    sample = "approvals-api-list.json" if method == "GET" else "approvals-api-approve.json"
    event = copy.deepcopy(load_event(sample))
    parts = path.strip("/").split("/")
    resource = "/" + "/".join("{id}" if index == 1 else p for index, p in enumerate(parts))
    event.update(
        httpMethod=method,
        path=path,
        resource=resource,
        body=body,
        pathParameters={"id": parts[1]} if len(parts) > 1 else None,
        queryStringParameters=query,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
    )
    context = event["requestContext"]
    context.update(accountId=ACCOUNT, httpMethod=method, resourcePath=resource, path=f"/v1{path}")
    context["identity"].update(userArn=caller, accountId=caller.split(":")[4])
    return event


def call(
    method: str,
    path: str,
    caller: str = ALICE,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Send one request to the function as API Gateway would; its status and JSON body."""
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    response = approvals.handler(api_event(method, path, caller, text, query), Context())
    assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]
    return response["statusCode"], json.loads(response["body"])


def answer(approval_id: str, verdict: str, reason: str, caller: str = ALICE) -> tuple[int, dict]:
    return call("POST", f"/approvals/{approval_id}/{verdict}", caller, {"reason": reason})


class Account:
    """An emulated account with a state machine that waits for a task token, as the pipeline's
    RequestApproval state does; the token travels through a queue instead of a Lambda payload.
    A denial is caught as the pipeline catches it, its cause kept at $.denial."""

    def __init__(self, request: dict, timeout_seconds: int = 60) -> None:
        self.request = request
        self.session = boto3.Session(region_name="us-east-1")
        self.sfn = self.session.client("stepfunctions")
        self.sqs = self.session.client("sqs")
        self.table = create_table(self.session.resource("dynamodb"), naming.APPROVALS_TABLE)
        self.topic = self.session.client("sns").create_topic(Name=naming.APPROVAL_TOPIC)
        self.queue_url = self.sqs.create_queue(QueueName="tokens")["QueueUrl"]
        self.iam = self.session.client("iam")
        self.iam.create_group(GroupName=naming.APPROVERS_GROUP)
        for user in ("alice", "mallory"):
            self.iam.create_user(UserName=user)
        self.iam.add_user_to_group(GroupName=naming.APPROVERS_GROUP, UserName="alice")
        self.iam.create_role(
            RoleName=RESPONDER_ROLE, Path="/people/", AssumeRolePolicyDocument="{}"
        )
        definition = {
            "StartAt": "RequestApproval",
            "States": {
                "RequestApproval": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                    "Parameters": {
                        "QueueUrl": self.queue_url,
                        "MessageBody": {"token.$": "$$.Task.Token"},
                    },
                    "ResultPath": "$.approval",
                    "TimeoutSeconds": timeout_seconds,
                    "Catch": [
                        {
                            "ErrorEquals": [naming.APPROVAL_DENIED_ERROR],
                            "ResultPath": "$.denial",
                            "Next": "Denied",
                        },
                        {
                            "ErrorEquals": ["States.Timeout"],
                            "ResultPath": "$.approval_error",
                            "Next": "TimedOut",
                        },
                    ],
                    "End": True,
                },
                "Denied": {"Type": "Pass", "End": True},
                "TimedOut": {"Type": "Pass", "End": True},
            },
        }
        self.state_machine = self.sfn.create_state_machine(
            name=naming.STATE_MACHINE,
            definition=json.dumps(definition),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/states",
        )["stateMachineArn"]

    def wait_for_approval(self) -> Waiting:
        """Start an execution and request the approval it waits for, as the pipeline would."""
        name = f"execution-{uuid.uuid4().hex}"
        execution = self.sfn.start_execution(
            stateMachineArn=self.state_machine, name=name, input="{}"
        )
        return Waiting(execution["executionArn"], self.request_approval(self.task_token(), name))

    def request_approval(self, token: str, execution_name: str | None = None) -> str:
        """Request an approval for a task token, with the request-approval function."""
        request = {**self.request, "token": token}
        if execution_name is not None:
            request["execution_name"] = execution_name
        return decide.request_approval(request, Context())["approval_id"]

    def task_token(self) -> str:
        """The token of the next task that waits, as the queue hands it over."""
        for _ in range(100):
            messages = self.sqs.receive_message(QueueUrl=self.queue_url).get("Messages", [])
            if messages:
                return json.loads(messages[0]["Body"])["token"]
            time.sleep(0.05)
        raise AssertionError("the execution never asked for a token")

    def finished(self, execution_arn: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        raise AssertionError("the execution is still waiting")

    def status(self, execution_arn: str) -> str:
        return self.sfn.describe_execution(executionArn=execution_arn)["status"]

    def item(self, approval_id: str) -> dict:
        return self.table.get_item(Key={"approval_id": approval_id}, ConsistentRead=True)["Item"]

    def stop_all(self) -> None:
        executions = self.sfn.list_executions(stateMachineArn=self.state_machine)["executions"]
        for execution in executions:
            if execution["status"] == "RUNNING":
                self.sfn.stop_execution(executionArn=execution["executionArn"])


@pytest.fixture
def emulated(monkeypatch):
    """The environment of both functions, in an emulated account that keeps denial causes."""
    monkeypatch.setenv("APPROVALS_TABLE", naming.APPROVALS_TABLE)
    monkeypatch.setenv("APPROVERS_GROUP", naming.APPROVERS_GROUP)
    monkeypatch.setenv("APPROVER_ROLE_PATTERNS", RESPONDER_PATTERN)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "approvals")
    caches = (decide_adapters.clear_caches, decide._approval_settings.cache_clear)
    for clear in (*caches, approvals.clear_caches):
        clear()
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}), task_failure_cause():
        yield monkeypatch
    for clear in (*caches, approvals.clear_caches):
        clear()


def make_account(monkeypatch, request: dict, timeout_seconds: int = 60) -> Account:
    created = Account(request, timeout_seconds)
    monkeypatch.setenv("APPROVAL_TOPIC_ARN", created.topic["TopicArn"])
    return created


@pytest.fixture
def account(emulated, event):
    created = make_account(emulated, event("request-approval.json"))
    yield created
    created.stop_all()


# --- answering -------------------------------------------------------------------------------


def test_an_approval_resumes_the_execution_as_the_principal_that_signed(account):
    # Given an execution waiting for an approval
    waiting = account.wait_for_approval()

    # When alice, an approver, approves it through the API
    status, approval = answer(waiting.approval_id, "approve", "  known scanner ")

    # Then the answer names her, from the request's IAM identity, and the reason she gave
    assert status == 200
    assert (approval["status"], approval["approver"]) == ("approved", ALICE)
    assert approval["reason"] == "known scanner"
    assert approval["answered_at"]

    # And the execution resumes with that approval as the task's output, without the token
    described = account.finished(waiting.execution_arn)
    assert described["status"] == "SUCCEEDED"
    resumed_with = json.loads(described["output"])["approval"]
    assert resumed_with == approval
    assert "token" not in resumed_with

    # And the table records the answer
    item = account.item(waiting.approval_id)
    assert (item["status"], item["approver"], item["reason"]) == (
        "approved",
        ALICE,
        "known scanner",
    )


def test_a_denial_fails_the_waiting_task_with_the_approver_and_the_reason(account):
    # Given an execution waiting for an approval
    waiting = account.wait_for_approval()

    # When alice denies it
    status, approval = answer(waiting.approval_id, "deny", "our CDN")

    # Then the waiting task fails with the denial, its cause the answered approval: the state
    # machine catches it and reports who denied and why
    assert status == 200
    described = account.finished(waiting.execution_arn)
    assert described["status"] == "SUCCEEDED"
    denial = json.loads(described["output"])["denial"]
    assert denial["Error"] == naming.APPROVAL_DENIED_ERROR
    cause = json.loads(denial["Cause"])
    assert cause == approval
    assert (cause["status"], cause["approver"], cause["reason"]) == ("denied", ALICE, "our CDN")
    assert account.item(waiting.approval_id)["status"] == "denied"


def test_an_approver_named_in_the_body_is_refused(account):
    # Given an execution waiting for an approval
    waiting = account.wait_for_approval()

    # When a request names its own approver in the body
    body = {"reason": "fine", "approver": "arn:aws:iam::123456789012:user/ceo"}
    status, refused = call("POST", f"/approvals/{waiting.approval_id}/approve", ALICE, body)

    # Then it is refused: the approver is who signed, never what the body says
    assert status == 400
    assert "approver is not a field of an answer" in refused["message"]
    assert account.item(waiting.approval_id)["status"] == "pending"
    assert account.status(waiting.execution_arn) == "RUNNING"


def test_answering_twice_is_refused_and_changes_nothing(account):
    # Given an approval alice approved
    waiting = account.wait_for_approval()
    assert answer(waiting.approval_id, "approve", "first")[0] == 200
    before = account.item(waiting.approval_id)

    # When she denies it afterwards
    status, refused = answer(waiting.approval_id, "deny", "late")

    # Then it is a conflict naming the first answer, and the record is unchanged
    assert status == 409
    assert refused["message"].startswith(
        f"approval {waiting.approval_id} was already answered: approved by {ALICE} at "
    )
    assert account.item(waiting.approval_id) == before


def test_an_unknown_approval_is_not_found(account):
    for method, path in (
        ("GET", "/approvals/apr-0000000000"),
        ("POST", "/approvals/apr-0000000000/approve"),
    ):
        status, refused = call(method, path, ALICE, {"reason": "x"} if method == "POST" else None)

        assert status == 404
        assert refused == {"message": "approval apr-0000000000 does not exist"}


@pytest.mark.parametrize(("method", "verdict"), [("GET", None), ("POST", "deny")])
def test_a_principal_outside_the_approvers_group_is_refused(account, method, verdict):
    # Given an execution waiting for an approval
    waiting = account.wait_for_approval()

    # When mallory, who may call the API but is not in the approvers group, reads or answers
    path = f"/approvals/{waiting.approval_id}" + (f"/{verdict}" if verdict else "")
    status, refused = call(method, path, MALLORY, {"reason": "mine"} if verdict else None)

    # Then she is refused, told which group makes an approver, and nothing changed
    assert status == 403
    assert refused["message"] == (
        f"{MALLORY} is not an approver: an administrator adds the user to the IAM group "
        f"{naming.APPROVERS_GROUP}"
    )
    assert account.item(waiting.approval_id)["status"] == "pending"
    assert account.status(waiting.execution_arn) == "RUNNING"


def test_a_role_session_answers_when_its_role_matches_an_approver_pattern(account):
    # Given an execution waiting, and bob signed in through the SecurityResponder role, whose
    # ARN (path included) matches the deployment's approver role pattern
    waiting = account.wait_for_approval()

    # When bob approves
    status, approval = answer(waiting.approval_id, "approve", "on call", caller=RESPONDER)

    # Then his session is the approver
    assert status == 200
    assert approval["approver"] == RESPONDER
    assert account.finished(waiting.execution_arn)["status"] == "SUCCEEDED"


def test_a_role_session_matching_no_pattern_is_refused(account):
    # Given a role that exists but matches no approver pattern
    account.iam.create_role(RoleName="Developer", AssumeRolePolicyDocument="{}")
    waiting = account.wait_for_approval()
    developer = f"arn:aws:sts::{ACCOUNT}:assumed-role/Developer/carol"

    # When a session of it answers, then it is refused, naming its role
    status, refused = answer(waiting.approval_id, "approve", "looks fine", caller=developer)

    assert status == 403
    assert f"its role arn:aws:iam::{ACCOUNT}:role/Developer matches none" in refused["message"]
    assert account.item(waiting.approval_id)["status"] == "pending"


def test_an_answer_without_a_reason_is_refused_and_changes_nothing(account):
    # Given an execution waiting for an approval
    waiting = account.wait_for_approval()

    # When the answer gives no reason
    status, refused = call("POST", f"/approvals/{waiting.approval_id}/approve", ALICE, {})

    # Then it is refused with what the body should be, and nothing changed
    assert status == 400
    assert refused["message"] == (
        'the body must be a JSON object {"reason": "why, for the incident record"}: '
        "reason: Field required"
    )
    assert account.item(waiting.approval_id)["status"] == "pending"
    assert account.status(waiting.execution_arn) == "RUNNING"


# --- timeouts --------------------------------------------------------------------------------


def test_a_late_answer_after_the_timeout_is_refused_and_marks_it_timed_out(emulated, event):
    # Given an execution whose approval timed out: the task gave up and the execution moved on
    late = make_account(emulated, event("request-approval.json"), timeout_seconds=1)
    waiting = late.wait_for_approval()
    ended = late.finished(waiting.execution_arn)
    assert "approval_error" in json.loads(ended["output"])

    # When alice answers it now
    status, refused = answer(waiting.approval_id, "approve", "too late")

    # Then the answer is refused, the approval is timed out without it, the execution unchanged
    assert status == 409
    assert refused["message"].startswith(
        f"approval {waiting.approval_id} can no longer be answered: its execution no longer waits"
    )
    item = late.item(waiting.approval_id)
    assert item["status"] == "timed_out"
    assert "approver" not in item and "reason" not in item
    after = late.sfn.describe_execution(executionArn=waiting.execution_arn)
    assert (after["status"], after["output"]) == (ended["status"], ended["output"])

    # And answering again says it expired
    status, again = answer(waiting.approval_id, "approve", "again")
    assert (status, again["message"]) == (
        409,
        f"approval {waiting.approval_id} expired at "
        f"{item['expires_at'].removesuffix('Z').split('.')[0]}+00:00",
    )


def test_a_late_answer_to_an_approval_the_policy_escalates_leaves_it_pending(emulated, event):
    # Given an approval whose first wait timed out, and whose policy asks once more on timeout
    late = make_account(emulated, event("request-approval-escalate.json"), timeout_seconds=1)
    waiting = late.wait_for_approval()
    late.finished(waiting.execution_arn)

    # When alice answers it before the escalated request
    status, refused = answer(waiting.approval_id, "approve", "too early for the escalation")

    # Then the answer is refused and the approval stays pending, for the escalation to ask again
    assert status == 409
    assert "it is escalated: answer it once it is asked again" in refused["message"]
    item = late.item(waiting.approval_id)
    assert item["status"] == "pending"
    assert "approver" not in item


def use_ports(monkeypatch, ports: Ports) -> None:
    """Make the function run on these adapters, as if it had built them at its cold start."""
    monkeypatch.setattr(approvals, "_ports", functools.cache(lambda: ports))


def stubbed_tasks(monkeypatch, operation: str, code: str) -> None:
    """Make the function's Step Functions client answer a task answer with this error."""
    sfn = boto3.client("stepfunctions", config=CLIENT_CONFIG)
    stubber = Stubber(sfn)
    stubber.add_client_error(operation, code, http_status_code=400)
    stubber.activate()
    real = build_ports(Settings.from_env())
    use_ports(monkeypatch, Ports(real.approvals, StepFunctionsTasks(sfn), real.directory))


@pytest.mark.parametrize("code", ["TaskTimedOut", "TaskDoesNotExist"])
def test_a_task_step_functions_no_longer_waits_for_is_marked_timed_out(account, emulated, code):
    # Given an approval whose task Step Functions has already given up on
    approval_id = account.request_approval("token-of-a-task-gone")
    stubbed_tasks(emulated, "send_task_success", code)

    # When alice answers it
    status, refused = answer(approval_id, "approve", "late")

    # Then it is a conflict, and the record is timed out, without the refused answer
    assert status == 409
    assert f"no longer waits for it (Step Functions: {code};" in refused["message"]
    item = account.item(approval_id)
    assert item["status"] == "timed_out"
    assert "approver" not in item and "reason" not in item


def test_an_answer_step_functions_refuses_otherwise_leaves_it_pending(account, emulated):
    # Given Step Functions throttles every answer
    approval_id = account.request_approval("token-of-a-waiting-task")
    stubbed_tasks(emulated, "send_task_failure", "ThrottlingException")

    # When alice answers
    status, refused = answer(approval_id, "deny", "ok")

    # Then the API says Step Functions refused, and the approval is pending again
    assert status == 502
    assert "ThrottlingException" in refused["message"]
    assert refused["message"].endswith("it is still pending, answer it again")
    item = account.item(approval_id)
    assert item["status"] == "pending"
    assert "approver" not in item


# --- retried requests ------------------------------------------------------------------------


def test_an_answer_resumes_the_task_of_the_retried_request(account):
    # Given an execution whose approval was first requested by an attempt that failed, then
    # requested again by the retried task it now waits on
    name = f"execution-{uuid.uuid4().hex}"
    execution = account.sfn.start_execution(
        stateMachineArn=account.state_machine, name=name, input="{}"
    )
    first = account.request_approval("token-of-the-failed-attempt", name)
    again = account.request_approval(account.task_token(), name)

    # When alice approves it
    status, _ = answer(again, "approve", "known scanner")

    # Then there was one approval, and the answer reached the task that waits
    assert (status, again) == (200, first)
    described = account.finished(execution["executionArn"])
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"])["approval"]["approval_id"] == first


def test_an_answer_read_before_a_retried_request_is_refused(account, emulated):
    # Given an execution whose approval is requested again, with a new token, while alice's
    # answer is between reading the approval and recording her answer
    name = f"execution-{uuid.uuid4().hex}"
    execution = account.sfn.start_execution(
        stateMachineArn=account.state_machine, name=name, input="{}"
    )
    approval_id = account.request_approval("token-of-the-failed-attempt", name)
    token = account.task_token()
    retried: list[str] = []

    def retry_first(**_):
        if not retried:
            retried.append(account.request_approval(token, name))

    session = boto3.Session(region_name="us-east-1")
    session.events.register("before-call.dynamodb.UpdateItem", retry_first)
    use_ports(emulated, build_ports(Settings.from_env(), session))

    # When her answer is recorded, then it is refused: it would go to the task no longer waiting
    status, refused = answer(approval_id, "approve", "first try")
    assert status == 409
    assert "requested again meanwhile" in refused["message"]
    assert account.item(approval_id)["status"] == "pending"

    # And answering again reaches the task that waits
    assert answer(approval_id, "approve", "second try")[0] == 200
    described = account.finished(execution["executionArn"])
    assert json.loads(described["output"])["approval"]["reason"] == "second try"


# --- reading ---------------------------------------------------------------------------------


def test_approvals_are_listed_by_status_and_read_without_their_tokens(account, capsys):
    # Given one approval answered and one still pending
    answered = account.wait_for_approval()
    pending = account.wait_for_approval()
    assert answer(answered.approval_id, "approve", "ok")[0] == 200
    tokens = [account.item(w.approval_id)["token"] for w in (answered, pending)]

    # When the approvals are listed, by the default status and all of them, and one is read
    _, waiting = call("GET", "/approvals", ALICE)
    _, everything = call("GET", "/approvals", ALICE, query={"status": "all"})
    _, approved = call("GET", "/approvals", ALICE, query={"status": "approved"})
    status, one = call("GET", f"/approvals/{pending.approval_id}", ALICE)

    # Then each listing keeps its status, oldest first, and one approval holds its request
    assert [a["approval_id"] for a in waiting["approvals"]] == [pending.approval_id]
    assert [a["approval_id"] for a in everything["approvals"]] == [
        answered.approval_id,
        pending.approval_id,
    ]
    assert [a["approval_id"] for a in approved["approvals"]] == [answered.approval_id]
    assert status == 200
    assert one["finding"]["severity"] == 5.0
    assert one["actions"][0]["ttl_seconds"] == 86400

    # And no answer, and no log line of the function, holds a task token
    shown = json.dumps([waiting, everything, approved, one]) + capsys.readouterr().out
    assert all(token not in shown for token in tokens)


def test_an_unknown_status_is_refused(account):
    status, refused = call("GET", "/approvals", ALICE, query={"status": "maybe"})

    assert status == 400
    assert refused["message"] == (
        "status 'maybe' is not one of pending, approved, denied, timed_out, all"
    )


def test_group_membership_is_read_again_once_it_is_old(account):
    # Given the directory has read the approvers group, then mallory is added to it
    clock = [0.0]
    directory = IamDirectory(
        boto3.client("iam"), naming.APPROVERS_GROUP, 60, clock=lambda: clock[0]
    )
    assert MALLORY not in directory.group_members()
    account.iam.add_user_to_group(GroupName=naming.APPROVERS_GROUP, UserName="mallory")

    # When asked again within the minute, then the membership read is kept
    clock[0] = 59.0
    assert MALLORY not in directory.group_members()

    # And once a minute old, it is read again
    clock[0] = 60.0
    assert MALLORY in directory.group_members()


def test_a_missing_approvers_group_makes_no_one_an_approver(account):
    # Given a deployment whose approvers group is gone
    account.iam.remove_user_from_group(GroupName=naming.APPROVERS_GROUP, UserName="alice")
    account.iam.delete_group(GroupName=naming.APPROVERS_GROUP)

    # When alice lists the approvals, then she is refused, told the group's name
    status, refused = call("GET", "/approvals", ALICE)

    assert status == 403
    assert naming.APPROVERS_GROUP in refused["message"]


def test_a_record_the_service_cannot_read_is_a_clear_failure(account):
    # Given an approval item missing its finding
    account.table.put_item(Item={"approval_id": "apr-broken", "token": "t", "status": "pending"})

    # When it is read, then the failure names it and its fields, never its token
    status, failed = call("GET", "/approvals/apr-broken", ALICE)

    assert status == 500
    assert failed["message"].startswith("approval apr-broken cannot be read: ")
    assert "finding" in failed["message"]


# --- the command's side ----------------------------------------------------------------------


def test_the_api_url_is_read_from_the_approvals_stack_output(emulated):
    # Given a stack with the API's URL as an output, as the approvals stack has
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            naming.APPROVALS_API_URL_OUTPUT: {
                "Value": "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/"
            }
        },
    }
    cloudformation.create_stack(
        StackName=naming.APPROVALS_API_STACK, TemplateBody=json.dumps(template)
    )

    # When the command looks for the API, then it finds the URL there
    assert api_url_from_stack(cloudformation) == (
        "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/"
    )

    # And a stack that is not there is named, with how to deploy it
    with pytest.raises(ApprovalError, match="stack CloudSniper-Nowhere cannot be read"):
        api_url_from_stack(cloudformation, "CloudSniper-Nowhere")


def test_the_table_adapter_reads_what_request_approval_wrote(account):
    # Given a stored approval request
    approval_id = account.request_approval("token-one")

    # When the service's table adapter reads it
    record = DynamoApprovals(boto3.client("dynamodb"), naming.APPROVALS_TABLE).get(approval_id)

    # Then it holds the request with its numbers as numbers, and its token
    assert record is not None
    assert record.token == "token-one"
    assert record.finding.severity == 5.0
    assert "token-one" not in repr(record)
