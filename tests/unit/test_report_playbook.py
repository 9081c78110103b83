"""The post-incident playbook: a short, specific list of checks for every finding family."""

from __future__ import annotations

from collections import defaultdict

import pytest

from cloud_sniper.domain.models import Direction, Enrichment
from cloud_sniper.domain.normalize import normalize
from cloud_sniper.domain.policy import evaluate, load_policy
from cloud_sniper.finding_catalogue import DEFAULT_POLICY, decisions_for
from cloud_sniper.synthetic_findings import finding_types, synthetic_finding
from services.report.nist_playbook import FAMILIES, family_for
from tests.conftest import load_event

POLICY = load_policy(DEFAULT_POLICY)
# Findings the catalogue's synthetic ones do not cover: other products' through Security Hub,
# and an inbound call from an address on your own threat list.
SAMPLES = (
    "guardduty-malicious-ip-caller-custom.json",
    "securityhub-inspector-ec2-cve.json",
    "securityhub-macie-sensitive-data.json",
    "securityhub-access-analyzer-external-access.json",
)


def families_by_rule() -> dict[str, set[str]]:
    """For each rule of the default policy, the families of the findings it decides."""
    found: dict[str, set[str]] = defaultdict(set)
    for row in finding_types():
        for decision in decisions_for(row, POLICY):
            finding = normalize(synthetic_finding(row, decision.resource_type))
            found[decision.decision.rule or "none"].add(family_for(finding).name)
    for name in SAMPLES:
        finding = normalize(load_event(name))
        decision = evaluate(POLICY, finding, Enrichment(), [])
        found[decision.rule or "none"].add(family_for(finding).name)
    return found


BY_RULE = families_by_rule()


def test_every_family_has_a_short_list_and_a_unique_name():
    names = [family.name for family in FAMILIES]

    assert len(names) == len(set(names))
    for family in FAMILIES:
        assert 3 <= len(family.checks) <= 4, family.name
        assert all(check.endswith(".") for check in family.checks), family.name
    assert FAMILIES[-1].match.types == ["*"], "the last family takes what no other does"


@pytest.mark.parametrize("rule", [rule.name for rule in POLICY.rules if rule.name != "catch-all"])
def test_each_rule_of_the_default_policy_has_checks_of_its_own(rule):
    # Given the documented finding types the rule decides, on each of their resource types
    # When each gets its family / Then none is left to the generic list
    assert BY_RULE[rule], f"no documented type is decided by {rule}"
    assert "other" not in BY_RULE[rule], rule


def test_every_family_is_reached_by_some_documented_finding():
    reached = set().union(*BY_RULE.values())

    assert {family.name for family in FAMILIES} == reached


def test_the_direction_tells_a_brute_force_victim_from_an_attacker():
    (row,) = [row for row in finding_types() if row.type == "UnauthorizedAccess:EC2/SSHBruteForce"]
    finding = normalize(synthetic_finding(row, row.resource_types[0]))
    inbound = finding.model_copy(
        update={
            "indicators": [
                i.model_copy(update={"direction": Direction.INBOUND}) for i in finding.indicators
            ]
        }
    )
    outbound = finding.model_copy(
        update={
            "indicators": [
                i.model_copy(update={"direction": Direction.OUTBOUND}) for i in finding.indicators
            ]
        }
    )

    assert family_for(inbound).name == "brute-force-inbound"
    assert family_for(outbound).name == "instance-attacks-others"


def test_an_unread_finding_goes_by_its_type_and_an_unknown_one_by_the_generic_list():
    assert family_for(None, "Policy:S3/BucketPublicAccessGranted").name == "bucket-made-public"
    assert family_for(None, "Something:New/NeverSeen").name == "other"
    assert family_for(None, None).name == "other"
