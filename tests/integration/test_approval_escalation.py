"""An unanswered approval through the synthesized state machine: denied, or escalated once."""

from __future__ import annotations

import copy
import io
import json
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.approvals import ApprovalRecord
from cloud_sniper.domain.models import ApprovalStatus, Outcome
from cloud_sniper.local.lambdas import InProcessLambda
from services.decide import adapters, handler
from services.report.adapters import ApprovalsTable
from services.report.incident import PipelineState, outcome_of
from stacks.config import PIPELINE_STACK
from tests.integration import approval_steps
from tests.project_tables import create_table

ACCOUNT = "123456789012"
REGION = "us-east-1"
# Short waits: moto honours the decision's timeout (TimeoutSecondsPath) on the waiting task.
TIMEOUT_SECONDS = 1
STEPS = "tests.integration.approval_steps"
HANDLERS = {
    "ingest": f"{STEPS}.ingest",
    "enrich": f"{STEPS}.enrich",
    "decide": f"{STEPS}.decide",
    "request_approval": "services.decide.handler.request_approval",
    "mitigate": f"{STEPS}.mitigate",
    "report": f"{STEPS}.report",
}


def resolved(node: Any) -> Any:
    """A template value with its pseudo parameters and joins worked out, as CloudFormation does."""
    pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
    if isinstance(node, dict) and "Fn::Join" in node:
        separator, parts = node["Fn::Join"]
        return separator.join(resolved(part) for part in parts)
    if isinstance(node, dict) and "Ref" in node:
        return pseudo[node["Ref"]]
    if isinstance(node, str):
        return node
    raise AssertionError(f"unexpected in the definition: {node!r}")


@pytest.fixture(scope="module")
def definition(assembly_dir: Path) -> str:
    """The pipeline's state machine as synthesized for deployment."""
    template = json.loads((assembly_dir / f"{PIPELINE_STACK}.template.json").read_text())
    (machine,) = (
        resource
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::StepFunctions::StateMachine"
    )
    return resolved(machine["Properties"]["DefinitionString"])


@dataclass
class Pipeline:
    """The emulated account: the state machine, its functions, the approvals table, the topics."""

    session: boto3.Session
    state_machine: str
    table: Any
    queues: dict[str, str]

    def start(self, request: dict[str, Any]) -> tuple[str, str]:
        """Start an execution whose Decide asks for the request's approval."""
        approval_steps.DECISION.clear()
        approval_steps.DECISION.update(request["decision"])
        name = f"escalation-{time.monotonic_ns()}"
        execution = self.sfn.start_execution(
            stateMachineArn=self.state_machine,
            name=name,
            input=json.dumps(
                {"event": request["finding"], "incident_id": "inc-1", "dry_run": False}
            ),
        )
        return execution["executionArn"], naming.approval_id(name)

    @property
    def sfn(self) -> Any:
        return self.session.client("stepfunctions")

    def finished(self, execution_arn: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        raise AssertionError(f"{execution_arn} still runs after {timeout} s")

    def item(self, approval_id: str) -> dict[str, Any]:
        return self.table.get_item(Key={"approval_id": approval_id}, ConsistentRead=True)["Item"]

    def waiting_item(self, approval_id: str, escalated: bool, timeout: float = 10.0) -> dict:
        """The approval as it stands while the first wait, or the escalation, is on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.table.get_item(Key={"approval_id": approval_id}).get("Item")
            if found and ("escalated_at" in found) == escalated:
                return found
            if found and escalated is False and "escalated_at" in found:
                break
            time.sleep(0.01)
        raise AssertionError(f"approval {approval_id} never waited {escalated=}")

    def notices(self, topic: str) -> list[dict[str, Any]]:
        received = self.session.client("sqs").receive_message(
            QueueUrl=self.queues[topic], MaxNumberOfMessages=10
        )
        return [json.loads(message["Body"]) for message in received.get("Messages", [])]

    def states(self, execution_arn: str) -> list[str]:
        """The states the execution entered, in order."""
        events = self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)
        return [
            event["stateEnteredEventDetails"]["name"]
            for event in events["events"]
            if "stateEnteredEventDetails" in event
        ]


def _function(session: boto3.Session, role_arn: str, role: str, environment: dict) -> None:
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "")  # never run: the handlers run in-process
    session.client("lambda").create_function(
        FunctionName=naming.FUNCTIONS[role],
        Runtime="python3.12",
        Role=role_arn,
        Handler=HANDLERS[role],
        Code={"ZipFile": code.getvalue()},
        Timeout=15,
        Environment={"Variables": environment},
    )


@pytest.fixture
def pipeline(definition: str, monkeypatch) -> Iterator[Pipeline]:
    adapters.clear_caches()
    handler._approval_settings.cache_clear()
    approval_steps.MITIGATED.clear()
    approval_steps.REPORTED.clear()
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config), InProcessLambda(REGION).installed():
        session = boto3.Session(region_name=REGION)
        table = create_table(session.resource("dynamodb"), naming.APPROVALS_TABLE)
        sns, sqs = session.client("sns"), session.client("sqs")
        topics, queues = {}, {}
        for topic in (naming.APPROVAL_TOPIC, naming.APPROVAL_ESCALATION_TOPIC):
            topics[topic] = sns.create_topic(Name=topic)["TopicArn"]
            queues[topic] = sqs.create_queue(QueueName=f"{topic}-reader")["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(
                QueueUrl=queues[topic], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            sns.subscribe(TopicArn=topics[topic], Protocol="sqs", Endpoint=queue_arn)
        role_arn = session.client("iam").create_role(
            RoleName="cloud-sniper-test",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        approvals = {
            "POWERTOOLS_SERVICE_NAME": "request-approval",
            "APPROVALS_TABLE": naming.APPROVALS_TABLE,
            "APPROVAL_TOPIC_ARN": topics[naming.APPROVAL_TOPIC],
            "ESCALATION_TOPIC_ARN": topics[naming.APPROVAL_ESCALATION_TOPIC],
        }
        for role in HANDLERS:
            _function(session, role_arn, role, approvals if role == "request_approval" else {})
        machine = session.client("stepfunctions").create_state_machine(
            name=naming.STATE_MACHINE,
            definition=definition,
            roleArn=role_arn,
        )["stateMachineArn"]
        created = Pipeline(session, machine, table, queues)
        yield created
        sfn = session.client("stepfunctions")
        for execution in sfn.list_executions(stateMachineArn=machine)["executions"]:
            if execution["status"] == "RUNNING":
                sfn.stop_execution(executionArn=execution["executionArn"])
    adapters.clear_caches()
    handler._approval_settings.cache_clear()


@pytest.fixture
def escalating(event) -> dict[str, Any]:
    """A request whose decision escalates an unanswered approval, waiting a second each time."""
    request = copy.deepcopy(event("request-approval-escalate.json"))
    request["decision"]["approval_timeout_seconds"] = TIMEOUT_SECONDS
    return request


def reported_state(execution: dict[str, Any]) -> PipelineState:
    (reported,) = approval_steps.REPORTED
    assert reported["execution_name"] == execution["name"]
    return PipelineState.model_validate(reported["state"])


def test_an_escalated_approval_nobody_answers_times_out_after_escalation(pipeline, escalating):
    # Given a decision that escalates an approval nobody answers in time
    execution_arn, approval_id = pipeline.start(escalating)
    first = pipeline.waiting_item(approval_id, escalated=False)

    # When nobody answers the request, nor its escalation
    escalated = pipeline.waiting_item(approval_id, escalated=True)
    execution = pipeline.finished(execution_arn)

    # Then the execution waited twice, the second time as EscalateApproval, then reported
    assert execution["status"] == "SUCCEEDED"
    assert pipeline.states(execution_arn) == [
        "Ingest",
        "Enrich",
        "Decide",
        "Mode?",
        "RequestApproval",
        "Escalate?",
        "EscalateApproval",
        "Report",
    ]
    assert approval_steps.MITIGATED == []

    # And the same approval took the escalation's new token, marked escalated with its time,
    # its request kept
    assert escalated["status"] == "pending"
    assert escalated["token"] != first["token"]
    assert escalated["requested_at"] == first["requested_at"]
    requested = datetime.fromisoformat(escalated["requested_at"])
    at = datetime.fromisoformat(escalated["escalated_at"])
    assert at - requested >= _seconds(TIMEOUT_SECONDS)
    assert datetime.fromisoformat(escalated["expires_at"]) - at == _seconds(TIMEOUT_SECONDS)

    # And approvers heard of it once, the escalation topic once, saying it is escalated
    (asked,) = pipeline.notices(naming.APPROVAL_TOPIC)
    (escalation,) = pipeline.notices(naming.APPROVAL_ESCALATION_TOPIC)
    assert asked["Subject"] == f"Cloud Sniper approval {approval_id}: Backdoor:EC2/C&CActivity.B"
    assert escalation["Subject"] == (
        f"Cloud Sniper approval {approval_id} escalated: Backdoor:EC2/C&CActivity.B"
    )
    assert escalated["token"] not in json.dumps([asked, escalation])

    # And the report is told it timed out, the decision saying it had been escalated
    state = reported_state(execution)
    assert state.approval is None
    assert state.approval_error is not None and state.approval_error.error == "States.Timeout"
    assert outcome_of(state) == (Outcome.TIMED_OUT, None)
    assert state.decision.on_approval_timeout == "escalate"


def test_a_late_answer_after_the_final_timeout_is_refused(pipeline, escalating):
    # Given an escalated approval whose escalation timed out too, and the report marking it
    execution_arn, approval_id = pipeline.start(escalating)
    execution = pipeline.finished(execution_arn)
    marked = ApprovalsTable(pipeline.table).time_out(execution["name"], datetime.now(UTC))
    assert marked == approval_id

    # When someone answers it now
    record = ApprovalRecord.model_validate(pipeline.item(approval_id))

    # Then the record says it timed out after its escalation, past its expiry, and Step
    # Functions no longer takes its token: no answer can resume the execution
    assert record.status is ApprovalStatus.TIMED_OUT
    assert record.escalated_at is not None
    assert record.expires_at < datetime.now(UTC)
    with pytest.raises(ClientError) as refused:
        pipeline.sfn.send_task_success(
            taskToken=record.token, output=record.approval().model_dump_json()
        )
    # moto answers InvalidToken for the token of a task that timed out; AWS, TaskTimedOut.
    assert refused.value.response["Error"]["Code"] in ("TaskTimedOut", "InvalidToken")


def test_an_answer_to_the_escalation_resumes_the_execution(pipeline, escalating):
    # Given an escalated approval, waiting long enough to be answered this time
    escalating["decision"]["approval_timeout_seconds"] = 3
    execution_arn, approval_id = pipeline.start(escalating)
    escalated = ApprovalRecord.model_validate(pipeline.waiting_item(approval_id, escalated=True))

    # When a person approves it with the token the record now holds
    approved = escalated.model_copy(
        update={
            "status": ApprovalStatus.APPROVED,
            "approver": "arn:aws:iam::123456789012:user/duty-manager",
            "reason": "confirmed C2, isolate",
            "answered_at": datetime.now(UTC),
        }
    )
    pipeline.sfn.send_task_success(
        taskToken=escalated.token, output=approved.approval().model_dump_json()
    )

    # Then the answer joins the approved path: mitigated, and reported as the answer decided
    execution = pipeline.finished(execution_arn)
    assert execution["status"] == "SUCCEEDED"
    states = pipeline.states(execution_arn)
    assert states[4:] == [
        "RequestApproval",
        "Escalate?",
        "EscalateApproval",
        "Approved?",
        "Mitigate",
        "Report",
    ]
    assert len(approval_steps.MITIGATED) == 1
    state = reported_state(execution)
    assert state.approval is not None
    assert state.approval.status is ApprovalStatus.APPROVED
    assert state.approval.escalated_at == escalated.escalated_at
    assert outcome_of(state) == (Outcome.MITIGATED, None)


def test_a_denying_policy_reports_the_first_timeout_without_escalating(pipeline, escalating):
    # Given a decision that denies an approval nobody answers in time
    escalating["decision"]["on_approval_timeout"] = "deny"
    execution_arn, approval_id = pipeline.start(escalating)

    # When nobody answers
    execution = pipeline.finished(execution_arn)

    # Then it is reported as timed out at once, and nobody else is asked
    assert pipeline.states(execution_arn)[4:] == ["RequestApproval", "Escalate?", "Report"]
    assert "escalated_at" not in pipeline.item(approval_id)
    assert pipeline.notices(naming.APPROVAL_ESCALATION_TOPIC) == []
    assert outcome_of(reported_state(execution)) == (Outcome.TIMED_OUT, None)


def _seconds(count: int) -> timedelta:
    return timedelta(seconds=count)
