"""Decide keeps the blast radius it counted, and the choice on timeout, for the approver."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import Mode, OnApprovalTimeout
from tests.integration.test_decide import cold_start
from tests.integration.test_decide_safeguards import decide, request
from tests.project_tables import create_table

INSTANCE = "i-0abc1234def567890"
ISOLATION = f"isolate_instance:{INSTANCE}"
# Isolation asked of a person for C&C, automatic for bitcoin mining; escalated by default.
POLICY = {
    "version": 1,
    "defaults": {"on_approval_timeout": "escalate"},
    "safeguards": {"max_dependents": 0},
    "rules": [
        {
            "name": "c2",
            "match": {"types": ["Backdoor:*"]},
            "mode": "approval",
            "actions": ["isolate_instance"],
            "on_approval_timeout": "deny",
        },
        {
            "name": "mining",
            "match": {"types": ["CryptoCurrency:*"]},
            "mode": "auto",
            "actions": ["isolate_instance"],
        },
        {"name": "rest", "mode": "notify"},
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
        yield
    cold_start()


def test_an_approval_carries_what_depends_on_the_instance_to_isolate(account, event):
    # Given a C&C finding about an instance in an Auto Scaling group, which the policy asks of
    # a person
    tags = {"aws:autoscaling:groupName": "web"}
    document = request(event, "exec-1", "Backdoor:EC2/C&CActivity.B", tags=tags)

    # When decide plans the isolation
    decision = decide(document)

    # Then the approval carries its blast radius, and the rule's own choice on timeout
    assert decision.mode == Mode.APPROVAL
    assert decision.dependents == {ISOLATION: ["Auto Scaling group web"]}
    assert decision.on_approval_timeout is OnApprovalTimeout.DENY


def test_an_isolation_the_safeguards_ask_for_follows_the_default_choice(account, event):
    # Given an automatic isolation of an instance its group depends on
    tags = {"aws:autoscaling:groupName": "web"}
    document = request(event, "exec-1", "CryptoCurrency:EC2/BitcoinTool.B!DNS", tags=tags)

    # When the safeguards turn it into an approval
    decision = decide(document)

    # Then it carries the blast radius it was asked for, and the policy's default on timeout
    assert decision.mode == Mode.APPROVAL
    assert decision.dependents == {ISOLATION: ["Auto Scaling group web"]}
    assert decision.on_approval_timeout is OnApprovalTimeout.ESCALATE


def test_an_automatic_isolation_nothing_depends_on_asks_no_one(account, event):
    document = request(event, "exec-1", "CryptoCurrency:EC2/BitcoinTool.B!DNS", tags={})

    decision = decide(document)

    assert decision.mode == Mode.AUTO
    assert decision.dependents == {ISOLATION: []}
    assert decision.on_approval_timeout is None
