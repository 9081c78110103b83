"""CloudSniper-Approvals: an API with IAM on every method, its approvers, a least-privilege role."""

from __future__ import annotations

import json

import pytest

from cloud_sniper.domain import naming
from stacks.config import (
    APPROVALS_ACCESS_LOG_GROUP,
    APPROVALS_API_BURST_LIMIT,
    APPROVALS_API_RATE_LIMIT,
    APPROVALS_API_STAGE,
    APPROVALS_STACK,
    SERVICE_STACKS,
    ConfigError,
    Settings,
)

STACK = APPROVALS_STACK
FUNCTION = f"<AWS::Lambda::Function {naming.FUNCTIONS['approvals']}.Arn>"
API = f"<AWS::ApiGateway::RestApi {naming.APPROVALS_API}>"
ROUTES = {
    ("GET", "/approvals"),
    ("GET", "/approvals/{id}"),
    ("POST", "/approvals/{id}/approve"),
    ("POST", "/approvals/{id}/deny"),
}


def resource_path(assembly, reference: dict) -> str:
    """A method's resource path, from its resource up to the API's root."""
    resources = assembly.templates[STACK]["Resources"]
    parts = []
    while "Ref" in reference:
        properties = resources[reference["Ref"]]["Properties"]
        parts.append(properties["PathPart"])
        reference = properties["ParentId"]
    return "/" + "/".join(reversed(parts))


def test_the_approvals_stack_is_a_service_stack_redeployed_alone(assembly):
    assert STACK == naming.APPROVALS_API_STACK
    assert STACK in SERVICE_STACKS
    assert STACK in assembly.stack_ids


def test_every_method_needs_iam_authorization_and_reaches_the_function(assembly):
    methods = assembly.resources(STACK, "AWS::ApiGateway::Method").values()

    routes = set()
    for method in methods:
        properties = method["Properties"]
        # No unauthenticated route: not even an OPTIONS one
        assert properties["AuthorizationType"] == "AWS_IAM", properties
        integration = properties["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert FUNCTION in assembly.render(STACK, integration["Uri"])
        routes.add((properties["HttpMethod"], resource_path(assembly, properties["ResourceId"])))
    assert routes == ROUTES


def test_the_function_is_invoked_by_this_api_alone(assembly):
    permissions = assembly.resources(STACK, "AWS::Lambda::Permission").values()

    sources = {assembly.render(STACK, p["Properties"]["SourceArn"]) for p in permissions}
    assert {p["Properties"]["Principal"] for p in permissions} == {"apigateway.amazonaws.com"}
    assert all(source.startswith("arn:<AWS::Partition>:execute-api:") for source in sources)
    # One permission per method, for the stage's calls of that method on that path alone
    stage = f"{API}/<AWS::ApiGateway::Stage "
    assert {source.split(stage)[1].split(">", 1)[1] for source in sources} == {
        "/GET/approvals",
        "/GET/approvals/*",
        "/POST/approvals/*/approve",
        "/POST/approvals/*/deny",
    }


def test_the_stage_is_throttled_traced_and_access_logged(assembly):
    _, stage = assembly.one(STACK, "AWS::ApiGateway::Stage", StageName=APPROVALS_API_STAGE)
    properties = stage["Properties"]

    (settings,) = properties["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == APPROVALS_API_RATE_LIMIT
    assert settings["ThrottlingBurstLimit"] == APPROVALS_API_BURST_LIMIT
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False
    assert properties["TracingEnabled"] is True
    access_log = properties["AccessLogSetting"]
    assert APPROVALS_ACCESS_LOG_GROUP in assembly.render(STACK, access_log["DestinationArn"])
    # Who called is in every line of the access log
    assert json.loads(access_log["Format"])["userArn"] == "$context.identity.userArn"


def test_the_approvers_group_may_invoke_this_api_and_nothing_else(assembly):
    _, group = assembly.one(STACK, "AWS::IAM::Group", GroupName=naming.APPROVERS_GROUP)
    assert "ManagedPolicyArns" not in group["Properties"]

    attached = [
        policy["Properties"]
        for policy in assembly.resources(STACK, "AWS::IAM::Policy").values()
        if policy["Properties"].get("Groups")
    ]
    (policy,) = attached
    assert assembly.render(STACK, policy["Groups"]) == [
        f"<AWS::IAM::Group {naming.APPROVERS_GROUP}>"
    ]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "execute-api:Invoke"
    assert assembly.render(STACK, statement["Resource"]) == (
        f"arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:{API}/"
        f"{APPROVALS_API_STAGE}/*/approvals*"
    )


def test_the_functions_role_answers_the_pipelines_tasks_and_the_approvals_table_only(assembly):
    statements = dict(
        (actions, resources)
        for actions, resources in assembly.statements(naming.FUNCTIONS["approvals"])
    )

    assert statements[("states:SendTaskFailure", "states:SendTaskSuccess")] == (
        f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:stateMachine:"
        f"{naming.STATE_MACHINE}",
    )
    assert statements[("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem")] == (
        f"arn:<AWS::Partition>:dynamodb:<AWS::Region>:<AWS::AccountId>:table/"
        f"{naming.APPROVALS_TABLE}",
    )
    # Nothing else touches Step Functions or DynamoDB, nor writes IAM
    others = [a for actions in statements for a in actions]
    assert sorted(a for a in others if a.startswith(("states:", "dynamodb:"))) == [
        "dynamodb:GetItem",
        "dynamodb:Scan",
        "dynamodb:UpdateItem",
        "states:SendTaskFailure",
        "states:SendTaskSuccess",
    ]
    assert {a for a in others if a.startswith("iam:")} == {"iam:GetGroup", "iam:GetRole"}


def test_the_api_url_is_an_output_and_never_an_export(assembly):
    outputs = assembly.templates[STACK]["Outputs"]

    assert list(outputs) == [naming.APPROVALS_API_URL_OUTPUT]
    (output,) = outputs.values()
    assert "Export" not in output
    url = assembly.render(STACK, output["Value"])
    assert url.startswith(
        f"https://{API}.execute-api.<AWS::Region>.<AWS::URLSuffix>/<AWS::ApiGateway::Stage "
    )


def test_the_function_knows_the_approvers(assembly):
    _, function = assembly.function(naming.FUNCTIONS["approvals"])

    variables = function["Environment"]["Variables"]
    assert variables["APPROVERS_GROUP"] == naming.APPROVERS_GROUP
    # No role approves unless the deployment names it
    assert variables["APPROVER_ROLE_PATTERNS"] == ""


def test_a_denial_is_caught_into_the_approval_and_reported(definition):
    # A denial fails the waiting task (SendTaskFailure) with the approval as its cause: both
    # waits catch it before their catch-all, and the cause becomes $.approval again for Report
    for state in ("RequestApproval", "EscalateApproval"):
        if state not in definition["States"]:
            continue
        catches = definition["States"][state]["Catch"]
        errors = [catch["ErrorEquals"] for catch in catches]
        assert [naming.APPROVAL_DENIED_ERROR] in errors
        assert errors.index([naming.APPROVAL_DENIED_ERROR]) < errors.index(["States.ALL"])
        (denied,) = [c for c in catches if c["ErrorEquals"] == [naming.APPROVAL_DENIED_ERROR]]
        assert denied == {
            "ErrorEquals": [naming.APPROVAL_DENIED_ERROR],
            "ResultPath": "$.approval",
            "Next": "ReadDenial",
        }

    read, denied = definition["States"]["ReadDenial"], definition["States"]["ApprovalDenied"]
    assert read == {
        "Type": "Pass",
        "Parameters": {"answer.$": "States.StringToJson($.approval.Cause)"},
        "ResultPath": "$.approval",
        "Next": "ApprovalDenied",
    }
    assert denied == {
        "Type": "Pass",
        "InputPath": "$.approval.answer",
        "ResultPath": "$.approval",
        "Next": "Report",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        (
            " arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/*Responder_* ,",
            ("arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/*Responder_*",),
        ),
        (
            ["arn:aws:iam::*:role/A", "arn:aws:iam::*:role/B"],
            ("arn:aws:iam::*:role/A", "arn:aws:iam::*:role/B"),
        ),
    ],
)
def test_approver_role_patterns_come_from_the_context(value, expected):
    assert Settings.from_context({"approver_role_arns": value}).approver_role_arns == expected


def test_an_approver_role_pattern_that_is_no_role_arn_fails_the_synth():
    with pytest.raises(ConfigError, match="context approver_role_arns: 'admins' is not a role"):
        Settings.from_context({"approver_role_arns": "admins"})
