"""cdk-nag's AwsSolutions checks pass on every stack, and every accepted finding says why.

cdk-nag 3 reports through CDK's validation plugins: an unacknowledged warning or error fails
the synth itself, and its report lands in the assembly's validation-report.json. Acknowledged
findings are written, with their reasons, into each resource's template Metadata.
"""

from __future__ import annotations

import json

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_sqs as sqs

from stacks.nag import acknowledge, apply_checks


def acknowledgments(assembly) -> list[tuple[str, str, dict]]:
    """(stack, logical id, rule) for every finding acknowledged in the templates."""
    return [
        (stack, logical_id, rule)
        for stack, template in assembly.templates.items()
        for logical_id, resource in template["Resources"].items()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]


def test_synthesized_app_has_no_validation_finding(assembly):
    # Given the assembly the session synthesized (the synth fails on any finding)
    report = json.loads((assembly.directory / "validation-report.json").read_text())

    # Then no plugin reported a violation
    assert all(plugin["conclusion"] == "success" for plugin in report["pluginReports"])
    assert not [p for p in report["pluginReports"] if p.get("violations")]


def test_checks_ran_on_every_stack_with_resources_to_check(assembly):
    # Every stack but the data stack has a function or a role whose findings were acknowledged;
    # their metadata is written by the AwsSolutions plugin, so it ran on them.
    stacks = {stack for stack, _, _ in acknowledgments(assembly)}

    assert stacks == set(assembly.stack_ids)


def test_every_acknowledgment_carries_a_reason(assembly):
    for stack, logical_id, rule in acknowledgments(assembly):
        assert rule["id"].startswith("AwsSolutions-"), (stack, logical_id, rule)
        assert len(rule["reason"]) >= 40, (stack, logical_id, rule)


def test_wildcard_acknowledgments_name_the_wildcard(assembly):
    # IAM5 is accepted finding by finding, never for a whole policy
    for stack, logical_id, rule in acknowledgments(assembly):
        if rule["id"].startswith("AwsSolutions-IAM5"):
            assert rule["id"].startswith("AwsSolutions-IAM5[Resource::"), (stack, logical_id)


def test_acknowledgments_sit_on_resources_not_on_stacks(assembly):
    for stack, template in assembly.templates.items():
        assert "cdk_nag" not in template.get("Metadata", {}), stack


def test_an_unacknowledged_finding_fails_the_synth(tmp_path):
    # Given an app with the project's checks and a queue that breaks two AwsSolutions rules
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Nagged")
    sqs.Queue(stack, "Plain")
    apply_checks(app)

    # When it is synthesized, Then the synth fails with the findings named
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-SQS3", "AwsSolutions-SQS4"} <= rules


def test_an_acknowledged_finding_passes_with_its_reason(tmp_path):
    # Given the same queue with both findings acknowledged
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Accepted")
    queue = sqs.Queue(stack, "Plain")
    acknowledge(queue, "AwsSolutions-SQS3", "a test queue that is thrown away, never redriven")
    acknowledge(queue, "AwsSolutions-SQS4", "a test queue that is never deployed to an account")
    apply_checks(app)

    # When it is synthesized, Then it passes and the template says why
    assembly = app.synth()
    template = assembly.get_stack_by_name("Accepted").template
    (resource,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SQS::Queue"]
    ids = {rule["id"] for rule in resource["Metadata"]["cdk_nag"]["rules_to_suppress"]}
    assert ids == {"AwsSolutions-SQS3", "AwsSolutions-SQS4"}
