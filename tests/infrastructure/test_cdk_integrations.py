"""The report function's integrations: Security Hub on and TheHive off by default, and their
settings."""

from __future__ import annotations

import pytest

from cloud_sniper.domain import naming
from stacks.config import ConfigError, Settings

HUB = "arn:<AWS::Partition>:securityhub:<AWS::Region>:<AWS::AccountId>:hub/default"


def test_by_default_the_report_updates_security_hub_on_its_hub_alone(assembly):
    # Given the report function of the app synthesized with the default context
    name = naming.FUNCTIONS["report"]
    _, function = assembly.function(name)

    # Then it is told to update Security Hub, and may, on this account's hub and nothing else
    assert function["Environment"]["Variables"]["SECURITY_HUB_UPDATES"] == "true"
    updates = [s for s in assembly.statements(name) if "securityhub:BatchUpdateFindings" in s[0]]
    assert updates == [(("securityhub:BatchUpdateFindings",), (HUB,))]


def test_by_default_the_report_knows_no_thehive_and_reads_no_secret(assembly):
    # Given the report function synthesized with the default context
    name = naming.FUNCTIONS["report"]
    _, function = assembly.function(name)

    # Then it has no TheHive setting and no permission on any secret
    variables = function["Environment"]["Variables"]
    assert not {"THEHIVE_URL", "THEHIVE_API_KEY_SECRET"} & set(variables)
    actions = {action for statement in assembly.statements(name) for action in statement[0]}
    assert not [action for action in actions if action.startswith("secretsmanager:")]


def test_thehive_is_on_with_its_url_and_the_name_of_its_keys_secret():
    settings = Settings.from_context(
        {"thehive_url": "https://thehive.example.com/", "thehive_api_key_secret": "soc/thehive"}
    )

    assert (settings.thehive_url, settings.thehive_api_key_secret) == (
        "https://thehive.example.com",
        "soc/thehive",
    )
    assert Settings.from_context({}).thehive_url is None


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"thehive_url": "https://thehive.example.com"}, "thehive_api_key_secret: missing"),
        ({"thehive_api_key_secret": "soc/thehive"}, "thehive_url: missing"),
        (
            {"thehive_url": "http://thehive.example.com", "thehive_api_key_secret": "k"},
            "thehive_url: 'http://thehive.example.com' is not an https:// URL",
        ),
        (
            {
                "thehive_url": "https://thehive.example.com",
                "thehive_api_key_secret": "arn:aws:secretsmanager:us-east-1:1:secret:k",
            },
            "is not a Secrets Manager secret name",
        ),
    ],
)
def test_a_half_or_unsafe_thehive_setting_fails_the_synth(context, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_context(context)


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("false", False), ("0", False)])
def test_security_hub_updates_turn_off_from_the_command_line(value, expected):
    # `-c security_hub_updates=false` arrives as a string
    assert Settings.from_context({"security_hub_updates": value}).security_hub_updates is expected


def test_security_hub_updates_refuse_anything_but_a_flag():
    with pytest.raises(ConfigError, match="context security_hub_updates: 'sometimes' is not"):
        Settings.from_context({"security_hub_updates": "sometimes"})


def test_with_thehive_on_the_request_and_the_report_read_its_key_and_nothing_else():
    # Given the decide and report stacks synthesized with TheHive configured
    import aws_cdk as cdk
    from aws_cdk.assertions import Match, Template

    from stacks.decide import DecideStack
    from stacks.report import ReportStack

    settings = Settings.from_context(
        {"thehive_url": "https://thehive.example.com", "thehive_api_key_secret": "soc/thehive"}
    )
    app = cdk.App()
    stacks = {
        "request_approval": DecideStack(app, "Decide", settings=settings),
        "report": ReportStack(app, "Report", settings=settings),
    }

    for role, stack in stacks.items():
        template = Template.from_stack(stack)
        # Then the function knows TheHive's URL and the secret's name, never the key
        template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "FunctionName": naming.FUNCTIONS[role],
                "Environment": {
                    "Variables": Match.object_like(
                        {
                            "THEHIVE_URL": "https://thehive.example.com",
                            "THEHIVE_API_KEY_SECRET": "soc/thehive",
                        }
                    )
                },
            },
        )
        # And it may read that one secret
        template.has_resource_properties(
            "AWS::IAM::Policy",
            {
                "PolicyDocument": {
                    "Statement": [
                        {
                            "Action": "secretsmanager:GetSecretValue",
                            "Effect": "Allow",
                            "Resource": {
                                "Fn::Join": [
                                    "",
                                    Match.array_with([Match.string_like_regexp("soc/thehive-")]),
                                ]
                            },
                        }
                    ]
                }
            },
        )
