"""Safeguards: the blast radius of an automatic action, and the hourly budget of them all."""

from __future__ import annotations

from cloud_sniper.domain.models import ActionKind, Decision, Mode, PlannedAction
from cloud_sniper.domain.safeguards import (
    Safeguards,
    budget_counts,
    disruptive_actions,
    limit_blast_radius,
    over_budget,
)

ISOLATE = PlannedAction(id="isolate_instance:i-1", kind=ActionKind.ISOLATE_INSTANCE, target="i-1")
BLOCK = PlannedAction(id="waf_block:1.2.3.4/32", kind=ActionKind.WAF_BLOCK, target="1.2.3.4/32")


def auto(*actions: PlannedAction) -> Decision:
    return Decision(mode=Mode.AUTO, reason="rule 'r' matched", rule="r", actions=list(actions))


def test_only_disruptive_actions_of_an_automatic_decision_are_weighed():
    assert disruptive_actions(auto(ISOLATE, BLOCK)) == [ISOLATE]
    asked = auto(ISOLATE).model_copy(update={"mode": Mode.APPROVAL})
    assert disruptive_actions(asked) == []


def test_a_target_others_depend_on_is_asked_of_a_person_first():
    # Given an automatic isolation of an instance in an Auto Scaling group, behind a target group
    dependents = {ISOLATE.id: ["Auto Scaling group web", "target group web-tg"]}

    # When its blast radius is weighed against a policy allowing none
    decision = limit_blast_radius(auto(ISOLATE, BLOCK), dependents, Safeguards(), 3600)

    # Then the decision asks first, saying why, with the policy's approval timeout
    assert decision.mode == Mode.APPROVAL
    assert decision.approval_timeout_seconds == 3600
    assert decision.reason == (
        "rule 'r' matched; asked first, the blast radius is over the policy's 0: "
        "isolate_instance:i-1 has 2 dependent(s): Auto Scaling group web, target group web-tg"
    )
    assert decision.actions == [ISOLATE, BLOCK]


def test_a_blast_radius_within_the_policy_stays_automatic():
    dependents = {ISOLATE.id: ["Auto Scaling group web"]}

    decision = limit_blast_radius(auto(ISOLATE), dependents, Safeguards(max_dependents=1), 3600)

    assert decision.mode == Mode.AUTO


def test_actions_count_against_their_budget():
    assert budget_counts(auto(ISOLATE, BLOCK, BLOCK)) == {"disruptions": 1, "blocks": 2}
    assert budget_counts(Decision(mode=Mode.NOTIFY, reason="r")) == {}


def test_a_spent_budget_turns_the_decision_into_an_approval():
    decision = over_budget(auto(BLOCK), ["blocks"], Safeguards(), 600)

    assert decision.mode == Mode.APPROVAL
    assert decision.approval_timeout_seconds == 600
    assert decision.reason.endswith(
        "asked first, the hourly budget of automatic blocks (500 an hour) is spent"
    )


def test_nothing_spent_changes_nothing():
    assert over_budget(auto(BLOCK), [], Safeguards(), 600) == auto(BLOCK)
