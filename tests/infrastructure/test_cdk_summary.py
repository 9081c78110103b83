"""The scheduled summary: its function, its schedule, and the local runtime's view of them."""

from __future__ import annotations

from cloud_sniper.domain import naming
from cloud_sniper.local.deploy import DeployedApp, DeployedStack, is_runtime_emulated
from cloud_sniper.local.runtime import LocalCloud
from stacks.config import CONTEXT_DEFAULTS, FUNCTIONS, REPORT_STACK

WEEK_SECONDS = 7 * 86400


def summary_rule(assembly) -> dict:
    rules = [
        rule
        for rule in assembly.resources(REPORT_STACK, "AWS::Events::Rule").values()
        if any(
            assembly.render(REPORT_STACK, target["Arn"])
            == f"<AWS::Lambda::Function {naming.FUNCTIONS['summary']}.Arn>"
            for target in rule["Properties"].get("Targets", [])
        )
    ]
    assert len(rules) == 1, rules
    return rules[0]


def test_the_summary_runs_in_the_report_stack_from_the_report_bundle(assembly):
    # Given the summary function as synthesized
    stack, properties = assembly.function(naming.FUNCTIONS["summary"])

    # Then it is the report service's, with the tables, the bucket and the period it needs
    assert stack == REPORT_STACK
    assert properties["Handler"] == FUNCTIONS["summary"].handler
    assert FUNCTIONS["summary"].service == FUNCTIONS["report"].service
    environment = properties["Environment"]["Variables"]
    assert {
        key: environment[key]
        for key in ("INCIDENTS_TABLE", "BLOCKS_TABLE", "ACTIONS_TABLE", "SUMMARY_PERIOD_DAYS")
    } == {
        "INCIDENTS_TABLE": naming.INCIDENTS_TABLE,
        "BLOCKS_TABLE": naming.BLOCKS_TABLE,
        "ACTIONS_TABLE": naming.ACTIONS_TABLE,
        "SUMMARY_PERIOD_DAYS": str(CONTEXT_DEFAULTS["summary_period_days"]),
    }
    assert assembly.render(stack, environment["REPORTS_BUCKET"]) == (
        f"{naming.PREFIX}-reports-<AWS::AccountId>-<AWS::Region>"
    )
    # And it shares the report function's code asset
    _, report = assembly.function(naming.FUNCTIONS["report"])
    assert properties["Code"] == report["Code"]


def test_the_summary_is_scheduled_weekly_with_retries(assembly):
    # Given the rule targeting the summary function
    rule = summary_rule(assembly)["Properties"]

    # Then it runs once a period, a week by default, and retries a failed delivery
    assert CONTEXT_DEFAULTS["summary_period_days"] == 7
    assert rule["ScheduleExpression"] == "rate(7 days)"
    assert rule.get("State", "ENABLED") == "ENABLED"
    [target] = rule["Targets"]
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}

    # And EventBridge, through this rule alone, may invoke the function
    permissions = [
        permission["Properties"]
        for permission in assembly.resources(REPORT_STACK, "AWS::Lambda::Permission").values()
        if assembly.render(REPORT_STACK, permission["Properties"]["FunctionName"])
        == f"<AWS::Lambda::Function {naming.FUNCTIONS['summary']}.Arn>"
    ]
    assert [permission["Principal"] for permission in permissions] == ["events.amazonaws.com"]


def test_the_local_runtime_runs_the_summary_at_its_rate_as_it_runs_expire(assembly):
    # Given the local runtime reading the synthesized templates, as it does once deployed
    cloud = LocalCloud(assembly.directory)
    cloud.app = DeployedApp(
        [DeployedStack(name, template) for name, template in assembly.templates.items()]
    )

    # When it lists the schedules it emulates
    schedules = {schedule.function_name: schedule.every_seconds for schedule in cloud.schedules()}

    # Then the summary runs weekly beside the expiry, and moto is not asked to run the rule
    assert schedules[naming.FUNCTIONS["summary"]] == WEEK_SECONDS
    assert naming.FUNCTIONS["expire"] in schedules
    assert is_runtime_emulated(summary_rule(assembly))
