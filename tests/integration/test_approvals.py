"""Answering approvals: the record in the table and the execution that waits for it."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from cloud_sniper.approvals import ApprovalError, answer, get_approval, list_approvals
from cloud_sniper.domain.models import ApprovalStatus
from services.decide import adapters, handler

TABLE = "cloud-sniper-approvals"
REVIEWER = "arn:aws:iam::111122223333:user/alice"


@dataclass
class Context:
    function_name: str = "cloud-sniper-request-approval"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:111122223333:function:cloud-sniper-request-approval"
    )
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


@dataclass
class Waiting:
    """An execution waiting for an approval, and the approval it waits for."""

    execution_arn: str
    approval_id: str


class Account:
    """An emulated account with a state machine that waits for a task token, as the pipeline's
    RequestApproval state does; the token travels through a queue instead of a Lambda payload."""

    def __init__(self, request: dict) -> None:
        self.request = request
        self.session = boto3.Session(region_name="us-east-1")
        self.sfn = self.session.client("stepfunctions")
        self.sqs = self.session.client("sqs")
        self.table = self.session.resource("dynamodb").create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "approval_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "approval_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.topic = self.session.client("sns").create_topic(Name="cloud-sniper-approvals")
        self.queue_url = self.sqs.create_queue(QueueName="tokens")["QueueUrl"]
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
                    "TimeoutSeconds": 60,
                    "End": True,
                }
            },
        }
        self.state_machine = self.sfn.create_state_machine(
            name="approval-test",
            definition=json.dumps(definition),
            roleArn="arn:aws:iam::111122223333:role/states",
        )["stateMachineArn"]

    def wait_for_approval(self) -> Waiting:
        """Start an execution and request the approval it waits for, as the pipeline would."""
        name = f"execution-{uuid.uuid4().hex}"
        execution = self.sfn.start_execution(
            stateMachineArn=self.state_machine, name=name, input="{}"
        )
        return Waiting(execution["executionArn"], self.request_approval(self.task_token(), name))

    def request_approval(self, token: str, execution_name: str | None = None) -> str:
        """Request an approval for a task token; by default for the sample's execution."""
        request = {**self.request, "token": token}
        if execution_name is not None:
            request["execution_name"] = execution_name
        return handler.request_approval(request, Context())["approval_id"]

    def task_token(self) -> str:
        """The token of the next task that waits, as the queue hands it over."""
        for _ in range(100):
            messages = self.sqs.receive_message(QueueUrl=self.queue_url).get("Messages", [])
            if messages:
                return json.loads(messages[0]["Body"])["token"]
            time.sleep(0.05)
        raise AssertionError("the execution never asked for a token")

    def finished(self, execution_arn: str) -> dict:
        for _ in range(100):
            described = self.sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        raise AssertionError("the execution is still waiting")

    def status(self, execution_arn: str) -> str:
        return self.sfn.describe_execution(executionArn=execution_arn)["status"]

    def item(self, approval_id: str) -> dict:
        return self.table.get_item(Key={"approval_id": approval_id})["Item"]


@pytest.fixture
def account(monkeypatch, event):
    monkeypatch.setenv("APPROVALS_TABLE", TABLE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "decide")
    adapters.clear_caches()
    handler._approval_settings.cache_clear()
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        created = Account(event("request-approval.json"))
        monkeypatch.setenv("APPROVAL_TOPIC_ARN", created.topic["TopicArn"])
        yield created
        for execution in created.sfn.list_executions(stateMachineArn=created.state_machine)[
            "executions"
        ]:
            if execution["status"] == "RUNNING":
                created.sfn.stop_execution(executionArn=execution["executionArn"])
    adapters.clear_caches()
    handler._approval_settings.cache_clear()


class StepFunctionsAnswering:
    """A session whose Step Functions client answers as stubbed; the rest is the account's."""

    def __init__(self, account: Account, stubber_setup) -> None:
        self._session = account.session
        self.sfn = self._session.client("stepfunctions")
        self.stubber = Stubber(self.sfn)
        stubber_setup(self.stubber)
        self.stubber.activate()

    def client(self, service_name: str, **_):
        return self.sfn if service_name == "stepfunctions" else self._session.client(service_name)


class RetriedBeforeTheAnswer:
    """A session whose first DynamoDB update is preceded by a retried approval request."""

    def __init__(self, account: Account, execution_name: str, token: str) -> None:
        self._session = account.session
        self.dynamodb = self._session.client("dynamodb")
        retried: list[str] = []

        def retry_first(**_):
            if not retried:
                retried.append(account.request_approval(token, execution_name))

        self.dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", retry_first)

    def client(self, service_name: str, **_):
        return self.dynamodb if service_name == "dynamodb" else self._session.client(service_name)


# --- answering ---------------------------------------------------------------------------------


def test_an_approval_resumes_the_execution_with_the_answer(account):
    # Given an execution waiting for an approval
    waiting = account.wait_for_approval()

    # When a person approves it
    approval = answer(
        account.session,
        waiting.approval_id,
        approve=True,
        reason="known scanner",
        approver=REVIEWER,
    )

    # Then the execution resumes with the approval as the task's output
    described = account.finished(waiting.execution_arn)
    assert described["status"] == "SUCCEEDED"
    resumed_with = json.loads(described["output"])["approval"]
    assert resumed_with == json.loads(approval.model_dump_json())
    assert resumed_with["status"] == "approved"
    assert resumed_with["approver"] == REVIEWER
    assert resumed_with["reason"] == "known scanner"
    assert resumed_with["answered_at"]
    assert "token" not in resumed_with

    # And the table records the answer
    item = account.item(waiting.approval_id)
    assert (item["status"], item["approver"], item["reason"]) == (
        "approved",
        REVIEWER,
        "known scanner",
    )


def test_an_answer_resumes_the_task_of_the_retried_request(account):
    # Given an execution whose approval was first requested by an attempt that failed, then
    # requested again by the retried task it now waits on
    name = f"execution-{uuid.uuid4().hex}"
    execution = account.sfn.start_execution(
        stateMachineArn=account.state_machine, name=name, input="{}"
    )
    first = account.request_approval("token-of-the-failed-attempt", name)
    again = account.request_approval(account.task_token(), name)

    # When a person approves it
    answer(account.session, again, approve=True, reason="known scanner", approver=REVIEWER)

    # Then there was one approval, and the answer reached the task that waits
    assert again == first
    described = account.finished(execution["executionArn"])
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"])["approval"]["approval_id"] == first


def test_an_answer_read_before_a_retried_request_is_refused(account):
    # Given an execution whose approval is requested again, with a new token, while a person's
    # answer is on its way
    name = f"execution-{uuid.uuid4().hex}"
    execution = account.sfn.start_execution(
        stateMachineArn=account.state_machine, name=name, input="{}"
    )
    approval_id = account.request_approval("token-of-the-failed-attempt", name)
    session = RetriedBeforeTheAnswer(account, name, account.task_token())

    # When the answer arrives, then it is refused: it would go to the task no longer waiting
    with pytest.raises(ApprovalError, match="requested again meanwhile"):
        answer(session, approval_id, approve=True, reason="first try", approver=REVIEWER)
    assert account.item(approval_id)["status"] == "pending"

    # And answering again reaches the task that waits
    answer(account.session, approval_id, approve=True, reason="second try", approver=REVIEWER)
    described = account.finished(execution["executionArn"])
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"])["approval"]["reason"] == "second try"


def test_a_denial_resumes_the_execution_too(account):
    # Given an execution waiting for an approval
    waiting = account.wait_for_approval()

    # When a person denies it
    answer(account.session, waiting.approval_id, approve=False, reason="our CDN", approver=REVIEWER)

    # Then the execution resumes with the denial, for the report to record
    described = account.finished(waiting.execution_arn)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"])["approval"]["status"] == "denied"
    assert account.item(waiting.approval_id)["status"] == "denied"


def test_answering_twice_is_refused_and_changes_nothing(account):
    # Given an approval already approved by alice
    waiting = account.wait_for_approval()
    answer(account.session, waiting.approval_id, approve=True, reason="first", approver=REVIEWER)
    before = account.item(waiting.approval_id)

    # When bob denies it afterwards
    with pytest.raises(ApprovalError) as raised:
        answer(account.session, waiting.approval_id, approve=False, reason="late", approver="bob")

    # Then the error names the approval and the first answer, and the record is unchanged
    message = str(raised.value)
    assert message.startswith(f"approval {waiting.approval_id} was already answered: approved")
    assert f"by {REVIEWER}" in message
    assert account.item(waiting.approval_id) == before


def test_an_unknown_approval_is_refused(account):
    with pytest.raises(ApprovalError, match="^approval apr-0000000000 does not exist$"):
        answer(account.session, "apr-0000000000", approve=True, reason="x", approver=REVIEWER)


@pytest.mark.parametrize(("reason", "approver"), [("  ", REVIEWER), ("fine", "")])
def test_an_answer_needs_a_reason_and_an_approver(account, reason, approver):
    # Given an execution waiting for an approval
    waiting = account.wait_for_approval()

    # When it is answered without a reason or an approver, then it is refused
    with pytest.raises(ApprovalError, match=waiting.approval_id):
        answer(account.session, waiting.approval_id, True, reason=reason, approver=approver)

    # And nothing changed: still pending, the execution still waiting
    assert account.item(waiting.approval_id)["status"] == "pending"
    assert account.status(waiting.execution_arn) == "RUNNING"


def test_an_answer_after_the_expiry_is_refused_and_marks_it_timed_out(account):
    # Given an approval whose expiry has passed
    waiting = account.wait_for_approval()
    expires_at = get_approval(account.session, waiting.approval_id).expires_at

    # When someone answers it
    with pytest.raises(ApprovalError) as raised:
        answer(
            account.session,
            waiting.approval_id,
            approve=True,
            reason="too late",
            approver=REVIEWER,
            now=expires_at + timedelta(seconds=1),
        )

    # Then the error says when it expired, the record is timed out, the execution is not resumed
    assert str(raised.value) == (
        f"approval {waiting.approval_id} expired at {expires_at.isoformat(timespec='seconds')}"
    )
    assert account.item(waiting.approval_id)["status"] == "timed_out"
    assert account.status(waiting.execution_arn) == "RUNNING"

    # And answering again says the same
    with pytest.raises(ApprovalError, match="expired at"):
        answer(account.session, waiting.approval_id, True, reason="again", approver=REVIEWER)


@pytest.mark.parametrize("code", ["TaskTimedOut", "TaskDoesNotExist"])
def test_a_task_step_functions_no_longer_waits_for_is_marked_timed_out(account, code):
    # Given an approval whose task Step Functions has already given up on
    approval_id = account.request_approval("token-of-a-task-gone")
    session = StepFunctionsAnswering(
        account,
        lambda stubber: stubber.add_client_error("send_task_success", code, http_status_code=400),
    )

    # When someone answers it
    with pytest.raises(ApprovalError) as raised:
        answer(session, approval_id, approve=True, reason="late", approver=REVIEWER)

    # Then the error says it expired, and the record is timed out, without the refused answer
    assert str(raised.value).startswith(f"approval {approval_id} expired at ")
    item = account.item(approval_id)
    assert item["status"] == "timed_out"
    assert "approver" not in item and "reason" not in item


def test_an_answer_step_functions_refuses_otherwise_leaves_it_pending(account):
    # Given Step Functions throttles the answer
    approval_id = account.request_approval("token-of-a-waiting-task")
    session = StepFunctionsAnswering(
        account,
        lambda stubber: stubber.add_client_error(
            "send_task_success", "ThrottlingException", http_status_code=400
        ),
    )

    # When someone answers it
    with pytest.raises(ApprovalError, match="ThrottlingException.*still pending"):
        answer(session, approval_id, approve=True, reason="ok", approver=REVIEWER)

    # Then the approval is pending again, ready for another try
    item = account.item(approval_id)
    assert item["status"] == "pending"
    assert "approver" not in item


# --- reading -----------------------------------------------------------------------------------


def test_approvals_are_listed_by_status_without_their_tokens(account):
    # Given one approval answered and one still pending
    answered = account.wait_for_approval()
    pending = account.wait_for_approval()
    answer(account.session, answered.approval_id, True, reason="ok", approver=REVIEWER)
    tokens = [account.item(w.approval_id)["token"] for w in (answered, pending)]

    # When the approvals are listed
    waiting = list_approvals(account.session, status="pending")
    everything = list_approvals(account.session)

    # Then the pending filter keeps the pending one, and no listing shows a token
    assert [record.approval_id for record in waiting] == [pending.approval_id]
    assert [record.approval_id for record in everything] == [
        answered.approval_id,
        pending.approval_id,
    ]
    shown = json.dumps([record.model_dump(mode="json") for record in everything])
    shown += repr(everything)
    assert all(token not in shown for token in tokens)


def test_an_approval_is_read_with_its_request(account, event):
    # Given a stored approval request
    approval_id = account.request_approval("token-one")

    # When it is read
    record = get_approval(account.session, approval_id)

    # Then it holds the finding, the planned actions and the expiry, numbers as numbers
    request = event("request-approval.json")
    assert record.status == ApprovalStatus.PENDING
    assert record.finding.severity == 5.0
    assert [action.id for action in record.actions] == [
        action["id"] for action in request["decision"]["actions"]
    ]
    assert record.actions[0].ttl_seconds == 86400
    assert isinstance(record.expires_at, datetime)
    assert record.expires_at - record.requested_at == timedelta(hours=1)
