"""The policy's choice on an approval nobody answers in time: deny, or escalate once."""

from __future__ import annotations

from pathlib import Path

import pytest

import cloud_sniper
from cloud_sniper.domain.models import Mode, OnApprovalTimeout
from cloud_sniper.domain.policy import PolicyError, load_policy, parse_policy
from tests.unit.test_policy import decide, finding

DEFAULT_POLICY = Path(cloud_sniper.__file__).parent / "data" / "default-policy.yaml"
ASK = {
    "name": "ask",
    "match": {"types": ["UnauthorizedAccess:*"]},
    "mode": "approval",
    "actions": ["waf_block"],
}
BLOCK = {**ASK, "name": "block", "mode": "auto"}


def test_an_unanswered_approval_is_denied_unless_the_policy_says_otherwise():
    # Given a policy that says nothing of timeouts
    policy = parse_policy({"version": 1, "rules": [ASK]})

    # When it asks for an approval, then the decision carries deny
    decision = decide(policy, finding())
    assert policy.defaults.on_approval_timeout is OnApprovalTimeout.DENY
    assert decision.mode is Mode.APPROVAL
    assert decision.on_approval_timeout is OnApprovalTimeout.DENY


def test_the_shipped_policy_denies_on_timeout_and_says_so():
    # Given the default policy, then it sets the default explicitly
    assert load_policy(DEFAULT_POLICY).defaults.on_approval_timeout is OnApprovalTimeout.DENY
    assert "on_approval_timeout: deny" in DEFAULT_POLICY.read_text()


@pytest.mark.parametrize(
    ("defaults", "rule", "expected"),
    [
        ({"on_approval_timeout": "escalate"}, {}, OnApprovalTimeout.ESCALATE),
        ({}, {"on_approval_timeout": "escalate"}, OnApprovalTimeout.ESCALATE),
        ({"on_approval_timeout": "escalate"}, {"on_approval_timeout": "deny"}, "deny"),
    ],
)
def test_a_rule_inherits_the_default_choice_or_sets_its_own(defaults, rule, expected):
    # Given a policy with a default choice and a rule that may set its own
    policy = parse_policy({"version": 1, "defaults": defaults, "rules": [{**ASK, **rule}]})

    # When the rule asks for an approval, then the rule's own choice wins over the default
    assert decide(policy, finding()).on_approval_timeout == expected


def test_a_decision_that_asks_no_one_has_no_timeout_choice():
    # Given a policy escalating by default, and an automatic rule
    policy = parse_policy(
        {"version": 1, "defaults": {"on_approval_timeout": "escalate"}, "rules": [BLOCK]}
    )

    # When it decides, then nothing is to be escalated
    decision = decide(policy, finding())
    assert decision.mode is Mode.AUTO
    assert decision.on_approval_timeout is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"version": 1, "rules": [{**BLOCK, "on_approval_timeout": "escalate"}]},
            "rules[0] (block): on_approval_timeout only applies to mode approval",
        ),
        (
            {"version": 1, "rules": [{**ASK, "on_approval_timeout": "wait"}]},
            "rules[0] (ask).on_approval_timeout: Input should be 'deny' or 'escalate'",
        ),
        (
            {"version": 1, "defaults": {"on_approval_timeout": True}, "rules": [ASK]},
            "defaults.on_approval_timeout: Input should be 'deny' or 'escalate'",
        ),
    ],
)
def test_an_invalid_timeout_choice_is_named(document, message):
    # When a policy sets the choice where it cannot apply, or to something else, then the
    # error names the field and says why
    with pytest.raises(PolicyError, match="invalid policy") as raised:
        parse_policy(document, "mine.yaml")
    assert message in str(raised.value)
