"""The pipeline state machine: its states, their inputs, retries, catches and the approval wait."""

from __future__ import annotations

import pytest

from cloud_sniper.domain import naming
from stacks.config import PIPELINE_LOG_GROUP, PIPELINE_STACK

FUNCTION_ARN = "arn:<AWS::Partition>:lambda:<AWS::Region>:<AWS::AccountId>:function:{}"
RETRY = [
    {
        "ErrorEquals": [
            "TransientAwsError",
            "Lambda.ServiceException",
            "Lambda.TooManyRequestsException",
            "Lambda.SdkClientException",
        ],
        "IntervalSeconds": 1,
        "MaxAttempts": 4,
        "BackoffRate": 2,
        "JitterStrategy": "FULL",
    }
]
CATCH_TO_REPORT = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Report"}]

# state: (function role, Parameters, ResultPath, Next)
STEPS = {
    "Ingest": (
        "ingest",
        {"event.$": "$.event", "incident_id.$": "$.incident_id"},
        "$.finding",
        "Enrich",
    ),
    "Enrich": ("enrich", {"finding.$": "$.finding"}, "$.enrichment", "Decide"),
    "Decide": (
        "decide",
        {
            "finding.$": "$.finding",
            "enrichment.$": "$.enrichment",
            # A dry run spends no hourly budget; a retried Decide counts once in it.
            "dry_run.$": "$.dry_run",
            "execution.$": "$$.Execution.Name",
        },
        "$.decision",
        "Mode?",
    ),
    "Mitigate": (
        "mitigate",
        {
            "finding.$": "$.finding",
            "decision.$": "$.decision",
            "dry_run.$": "$.dry_run",
            "incident_id.$": "$.incident_id",
        },
        "$.mitigation",
        "Report",
    ),
}


def test_states_are_named_for_the_people_reading_the_console(definition):
    # Given the synthesized pipeline
    # Then its states are the steps of the contract, starting with Ingest
    assert definition["StartAt"] == "Ingest"
    assert set(definition["States"]) == {
        "Ingest",
        "Enrich",
        "Decide",
        "Mode?",
        "Mitigate",
        "RequestApproval",
        "Escalate?",
        "EscalateApproval",
        # A denial (a failed wait) read back into $.approval, for the report.
        "ReadDenial",
        "ApprovalDenied",
        "Approved?",
        "Report",
        "ReportFailed",
    }


@pytest.mark.parametrize("state", sorted(STEPS))
def test_each_step_calls_its_function_by_arn_with_the_input_it_needs(definition, state):
    role, parameters, result_path, following = STEPS[state]

    # Given a step of the pipeline
    step = definition["States"][state]

    # Then it invokes the function directly (the payload is the whole return value), passes the
    # contract's input, stores the result at its place in STATE and goes on
    assert step["Type"] == "Task"
    assert step["Resource"] == FUNCTION_ARN.format(naming.FUNCTIONS[role])
    assert step["Parameters"] == parameters
    assert step["ResultPath"] == result_path
    assert step["Next"] == following


@pytest.mark.parametrize("state", sorted(STEPS))
def test_each_step_retries_transient_errors_then_reports_the_failure(definition, state):
    step = definition["States"][state]

    assert step["Retry"] == RETRY
    assert step["Catch"] == CATCH_TO_REPORT


def test_mode_sends_auto_to_mitigate_approval_to_a_person_and_the_rest_to_report(definition):
    mode = definition["States"]["Mode?"]

    assert mode["Type"] == "Choice"
    assert mode["Choices"] == [
        {"Variable": "$.decision.mode", "StringEquals": "auto", "Next": "Mitigate"},
        {"Variable": "$.decision.mode", "StringEquals": "approval", "Next": "RequestApproval"},
    ]
    # notify and ignore
    assert mode["Default"] == "Report"


def test_request_approval_waits_for_the_task_token(definition):
    step = definition["States"]["RequestApproval"]

    # The task is the waitForTaskToken integration: it ends when someone calls SendTaskSuccess
    # with the token, whose output (an Approval) lands at $.approval
    assert step["Resource"] == "arn:<AWS::Partition>:states:::lambda:invoke.waitForTaskToken"
    assert step["Parameters"] == {
        "FunctionName": FUNCTION_ARN.format(naming.FUNCTIONS["request_approval"]),
        "Payload": {
            "token.$": "$$.Task.Token",
            "finding.$": "$.finding",
            "decision.$": "$.decision",
            "incident_id.$": "$.incident_id",
            "execution_name.$": "$$.Execution.Name",
        },
    }
    assert step["ResultPath"] == "$.approval"
    assert step["Next"] == "Approved?"
    assert step["Retry"] == RETRY


def test_an_unanswered_approval_times_out_into_the_policys_choice(definition):
    step = definition["States"]["RequestApproval"]

    # The decision carries the matched rule's approval timeout, or the policy's default; on
    # timeout the policy's choice (deny or escalate) is read next
    assert step["TimeoutSecondsPath"] == "$.decision.approval_timeout_seconds"
    assert "TimeoutSeconds" not in step
    timeout, *_, failure = step["Catch"]
    assert timeout == {
        "ErrorEquals": ["States.Timeout"],
        "ResultPath": "$.approval_error",
        "Next": "Escalate?",
    }
    assert [failure] == CATCH_TO_REPORT


def test_only_an_approved_request_is_mitigated(definition):
    approved = definition["States"]["Approved?"]

    assert approved["Choices"] == [
        {"Variable": "$.approval.status", "StringEquals": "approved", "Next": "Mitigate"}
    ]
    assert approved["Default"] == "Report"


def test_report_receives_the_whole_state_and_the_execution(definition):
    report = definition["States"]["Report"]

    # Optional fields (approval, mitigation, failure, approval_error) may be absent: the report
    # gets the whole document rather than paths that could be missing
    assert report["Resource"] == FUNCTION_ARN.format(naming.FUNCTIONS["report"])
    assert report["Parameters"] == {
        "state.$": "$",
        "execution_name.$": "$$.Execution.Name",
        "execution_started_at.$": "$$.Execution.StartTime",
        # The report reads the execution's history by its ARN, for its timeline.
        "execution_arn.$": "$$.Execution.Id",
    }
    assert report["ResultPath"] == "$.report"
    assert report["End"] is True
    assert report["Retry"] == RETRY


def test_a_report_that_keeps_failing_fails_the_execution_with_its_error(definition):
    report = definition["States"]["Report"]
    failed = definition["States"]["ReportFailed"]

    assert report["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.report_error", "Next": "ReportFailed"}
    ]
    assert failed["Type"] == "Fail"
    assert failed["ErrorPath"] == "$.report_error.Error"
    assert failed["CausePath"] == "$.report_error.Cause"


def test_every_path_ends_at_report(definition):
    # Given the states any state can go to next
    states = definition["States"]

    def successors(name: str) -> set[str]:
        state = states[name]
        found = {state["Next"]} if "Next" in state else set()
        found |= {choice["Next"] for choice in state.get("Choices", [])}
        found |= {catch["Next"] for catch in state.get("Catch", [])}
        if "Default" in state:
            found.add(state["Default"])
        return found

    # Then every state reaches Report, and only Report and ReportFailed end the execution
    for name in states:
        if name in ("Report", "ReportFailed"):
            continue
        seen, queue = set(), [name]
        while queue:
            current = queue.pop()
            if current not in seen:
                seen.add(current)
                queue.extend(successors(current))
        assert "Report" in seen, name
        assert successors(name), f"{name} ends the execution"


def test_state_machine_is_standard_traced_and_logged(assembly):
    _, machine = assembly.one(PIPELINE_STACK, "AWS::StepFunctions::StateMachine")
    properties = assembly.render(PIPELINE_STACK, machine["Properties"])

    assert properties["StateMachineName"] == naming.STATE_MACHINE
    assert properties["StateMachineType"] == "STANDARD"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    logging = properties["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    # The states' input carries the approval task token: kept out of the logs.
    assert logging["IncludeExecutionData"] is False
    assert logging["Destinations"] == [
        {
            "CloudWatchLogsLogGroup": {
                "LogGroupArn": f"<AWS::Logs::LogGroup {PIPELINE_LOG_GROUP}.Arn>"
            }
        }
    ]


def test_state_machine_may_invoke_exactly_the_pipeline_functions(assembly):
    _, machine = assembly.one(PIPELINE_STACK, "AWS::StepFunctions::StateMachine")
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    invoked = set()
    for policy in assembly.resources(PIPELINE_STACK, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Action"] == "lambda:InvokeFunction":
                    invoked |= set(assembly.render(PIPELINE_STACK, statement["Resource"]))

    roles = ("ingest", "enrich", "decide", "request_approval", "mitigate", "report")
    expected = {FUNCTION_ARN.format(naming.FUNCTIONS[role]) for role in roles}
    assert invoked == expected | {f"{arn}:*" for arn in expected}
