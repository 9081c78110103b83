"""The approval's notices and timeouts as deployed: the escalation topic and branch, Slack."""

from __future__ import annotations

import json

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match

from cloud_sniper.domain import naming
from stacks.config import DECIDE_STACK, ConfigError, Settings
from stacks.decide import request_approval_environment, slack_webhook_policy
from stacks.nag import apply_checks

FUNCTION_ARN = "arn:<AWS::Partition>:lambda:<AWS::Region>:<AWS::AccountId>:function:{}"
SECRET = "cloud-sniper/slack-webhook"


def test_the_escalation_topic_is_named_encrypted_and_ssl_only(assembly):
    # Given the decide stack, then it holds the escalation topic beside the approvals topic,
    # encrypted with the AWS managed key and refusing plain HTTP
    key, topic = assembly.one(
        DECIDE_STACK, "AWS::SNS::Topic", TopicName=naming.APPROVAL_ESCALATION_TOPIC
    )
    assert naming.APPROVAL_ESCALATION_TOPIC == "cloud-sniper-approvals-escalation"
    assert assembly.render(DECIDE_STACK, topic["Properties"]["KmsMasterKeyId"]) == (
        "arn:<AWS::Partition>:kms:<AWS::Region>:<AWS::AccountId>:alias/aws/sns"
    )
    assembly.assertions[DECIDE_STACK].has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": key}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_request_approval_publishes_to_both_topics_and_reads_no_secret_by_default(assembly):
    # Given the app synthesized without a Slack webhook
    statements = assembly.statements(naming.FUNCTIONS["request_approval"])
    _, function = assembly.function(naming.FUNCTIONS["request_approval"])
    variables = function["Environment"]["Variables"]

    # Then it publishes to the two topics alone, knows both, and neither reads nor names a secret
    assert (
        ("sns:Publish",),
        (
            f"<AWS::SNS::Topic {naming.APPROVAL_ESCALATION_TOPIC}>",
            f"<AWS::SNS::Topic {naming.APPROVAL_TOPIC}>",
        ),
    ) in statements
    assert not [actions for actions, _ in statements if "secretsmanager:GetSecretValue" in actions]
    assert "SLACK_WEBHOOK_SECRET" not in variables
    assert assembly.render(DECIDE_STACK, variables["ESCALATION_TOPIC_ARN"]) == (
        f"<AWS::SNS::Topic {naming.APPROVAL_ESCALATION_TOPIC}>"
    )


def test_the_slack_webhook_secret_is_named_not_its_url():
    # Given a deployment naming its Slack webhook's secret
    settings = Settings.from_context({"slack_webhook_secret": f" {SECRET} "})

    # When the function's environment is made, then it holds the secret's name and no URL
    environment = request_approval_environment(settings, "approvals-arn", "escalations-arn")
    assert environment == {
        "APPROVALS_TABLE": naming.APPROVALS_TABLE,
        "APPROVAL_TOPIC_ARN": "approvals-arn",
        "ESCALATION_TOPIC_ARN": "escalations-arn",
        "SLACK_WEBHOOK_SECRET": SECRET,
    }
    assert Settings.from_context({}).slack_webhook_secret is None
    assert Settings.from_context({"slack_webhook_secret": ""}).slack_webhook_secret is None


@pytest.mark.parametrize(
    "value", ["https://hooks.slack.com/services/T0/B0/x", "arn:aws:secretsmanager:x", "a b"]
)
def test_a_webhook_url_or_anything_but_a_secret_name_is_refused(value):
    # A URL in the context would land in the template: only a secret's name is taken
    with pytest.raises(ConfigError, match="context slack_webhook_secret: .* not a Secrets Manager"):
        Settings.from_context({"slack_webhook_secret": value})


def test_the_slack_webhook_policy_reads_that_one_secret_and_passes_the_checks(tmp_path):
    # Given a role granted the Slack webhook's secret, with the project's checks
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "SlackOnly")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    slack_webhook_policy(stack, role, SECRET)
    apply_checks(app)

    # When it is synthesized (cdk-nag fails the synth on an unacknowledged finding)
    template = app.synth().get_stack_by_name("SlackOnly").template

    # Then the one statement allows GetSecretValue on that secret, whatever suffix Secrets
    # Manager gave its ARN, and nothing else
    (policy,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Effect"] == "Allow"
    assert json.dumps(statement["Resource"]) == json.dumps(
        {
            "Fn::Join": [
                "",
                [
                    "arn:",
                    {"Ref": "AWS::Partition"},
                    ":secretsmanager:",
                    {"Ref": "AWS::Region"},
                    ":",
                    {"Ref": "AWS::AccountId"},
                    f":secret:{SECRET}-??????",
                ],
            ]
        }
    )


def test_a_timeout_goes_to_the_policys_choice_of_escalating_or_reporting(definition):
    # Given the state after an unanswered request
    choice = definition["States"]["Escalate?"]

    # Then a decision saying escalate (and only one saying so) goes to the escalation; any other,
    # or one from before the choice existed, is reported as timed out
    assert choice["Type"] == "Choice"
    assert choice["Choices"] == [
        {
            "And": [
                {"Variable": "$.decision.on_approval_timeout", "IsPresent": True},
                {"Variable": "$.decision.on_approval_timeout", "StringEquals": "escalate"},
            ],
            "Next": "EscalateApproval",
        }
    ]
    assert choice["Default"] == "Report"


def test_the_escalation_waits_once_more_and_its_timeout_is_final(definition):
    request = definition["States"]["RequestApproval"]
    escalation = definition["States"]["EscalateApproval"]

    # The escalation is the same function waiting for a new token, told it is the escalation,
    # for the same timeout; its answer joins the approved or denied path
    assert escalation["Resource"] == request["Resource"]
    assert escalation["Resource"].endswith(":states:::lambda:invoke.waitForTaskToken")
    assert escalation["Parameters"] == {
        "FunctionName": FUNCTION_ARN.format(naming.FUNCTIONS["request_approval"]),
        "Payload": {**request["Parameters"]["Payload"], "escalated": True},
    }
    assert escalation["TimeoutSecondsPath"] == request["TimeoutSecondsPath"]
    assert escalation["ResultPath"] == "$.approval"
    assert escalation["Next"] == request["Next"] == "Approved?"
    assert escalation["Retry"] == request["Retry"]

    # And its timeout is reported, with no second escalation; an answer is caught as the
    # request's is; any other error is reported as a failure
    timeout, *answers, failure = escalation["Catch"]
    assert timeout == {
        "ErrorEquals": ["States.Timeout"],
        "ResultPath": "$.approval_error",
        "Next": "Report",
    }
    assert answers == request["Catch"][1:-1]
    assert failure == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Report"}
    assert "escalated" not in request["Parameters"]["Payload"]
