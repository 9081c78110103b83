"""Decide weighs automatic actions: the blast radius of each, and the hourly budget of them all."""

from __future__ import annotations

import copy
import json

import boto3
import pytest
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import Decision, Mode
from services.decide import handler
from tests.integration.test_decide import Context, cold_start
from tests.project_tables import create_table

# Automatic isolation and blocks, with a budget small enough to spend in a test.
POLICY = {
    "version": 1,
    "safeguards": {"max_dependents": 0, "hourly_budget": {"blocks": 2, "disruptions": 1}},
    "rules": [
        {
            "name": "isolate",
            "match": {"types": ["Backdoor:*"]},
            "mode": "auto",
            "actions": ["isolate_instance"],
        },
        {"name": "block", "mode": "auto", "actions": ["waf_block"]},
    ],
}


@pytest.fixture
def account(monkeypatch, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    monkeypatch.setenv("POLICY_FILE", str(policy))
    monkeypatch.delenv("POLICY_PARAMETER", raising=False)
    monkeypatch.setenv("BUDGET_TABLE", naming.BUDGET_TABLE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "decide")
    cold_start()
    with mock_aws():
        create_table(boto3.resource("dynamodb"), naming.BUDGET_TABLE)
        yield boto3.client("ec2")
    cold_start()


def request(event, execution: str, finding_type: str | None = None, **finding) -> dict:
    document = copy.deepcopy(event("decide-request.json"))
    if finding_type:
        document["finding"]["type"] = finding_type
    document["finding"]["resource"].update(finding)
    return {**document, "execution": execution, "dry_run": False}


def decide(document: dict) -> Decision:
    return Decision.model_validate(handler.decide(document, Context()))


def test_an_instance_in_an_auto_scaling_group_is_not_isolated_without_a_person(account, event):
    # Given a C&C finding about an instance that its Auto Scaling group tagged
    tags = {"aws:autoscaling:groupName": "web"}
    document = request(event, "exec-1", "Backdoor:EC2/C&CActivity.B", tags=tags)

    # When decide weighs the automatic isolation
    decision = decide(document)

    # Then it asks a person first, naming the group
    assert decision.mode == Mode.APPROVAL
    assert "Auto Scaling group web" in decision.reason
    assert decision.approval_timeout_seconds == 3600


def test_a_critical_instance_is_not_isolated_without_a_person(account, event):
    document = request(
        event, "exec-1", "Backdoor:EC2/C&CActivity.B", tags={"cloud-sniper:critical": "true"}
    )

    decision = decide(document)

    assert decision.mode == Mode.APPROVAL
    assert "tagged cloud-sniper:critical=true" in decision.reason


def test_an_instance_nothing_depends_on_is_isolated_at_once(account, event):
    decision = decide(request(event, "exec-1", "Backdoor:EC2/C&CActivity.B", tags={}))

    assert decision.mode == Mode.AUTO


def test_past_the_hourly_budget_automatic_blocks_are_asked_first(account, event):
    # Given a budget of two automatic blocks an hour
    first = decide(request(event, "exec-1"))
    second = decide(request(event, "exec-2"))

    # When a third execution would block again, and the second is retried
    third = decide(request(event, "exec-3"))
    retried = decide(request(event, "exec-2"))

    # Then the first two block at once, a retry counts once, and the third asks first
    assert [first.mode, second.mode, retried.mode] == [Mode.AUTO] * 3
    assert third.mode == Mode.APPROVAL
    assert "hourly budget of automatic blocks (2 an hour) is spent" in third.reason


def test_a_dry_run_spends_no_budget(account, event):
    for number in range(5):
        dry = {**request(event, f"dry-{number}"), "dry_run": True}
        assert decide(dry).mode == Mode.AUTO

    assert decide(request(event, "exec-1")).mode == Mode.AUTO
