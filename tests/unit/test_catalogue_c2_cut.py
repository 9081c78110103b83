"""The C2 cut: what it acts on, the outbound rule numbers it takes, and DNS Firewall (stubbed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import ActionKind, Finding, PlannedAction
from cloud_sniper.domain.nacl_rules import NaclEntry, RuleRange
from cloud_sniper.domain.normalize import normalize
from services.mitigate.adapters.dns_firewall import DnsFirewall, FirewallRule
from services.mitigate.catalogue import (
    ActionFailedError,
    ActionRecord,
    ActionRun,
    ActionTargetNotFoundError,
    catalogue,
)
from services.mitigate.catalogue.c2_cut import (
    BLOCK_RULE,
    DOMAIN_LIST,
    RULE_GROUP,
    association_priority,
    denies_outbound,
    egress_rule_number,
    normal_domain,
    parse_target,
    rule_priority,
    shadowing_egress_allows,
)
from tests.conftest import load_event

NOW = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
DOMAIN = "beacon.c2-relay.example"
VPC = "vpc-0f1e2d3c4b5a69788"
ACTION_ID = "act-c2-0001"
LIST_ID = "rslvr-fdl-0123456789abcdef"
GROUP_ID = "rslvr-frg-0123456789abcdef"
ASSOCIATION_ID = "rslvr-frgassoc-0123456789abcdef"
RANGE = RuleRange(50, 52)


def egress(rule_number: int, action: str, cidr: str, protocol: str = "-1") -> NaclEntry:
    return NaclEntry(rule_number, action, egress=True, protocol=protocol, cidr=cidr)


def ingress(rule_number: int, action: str, cidr: str) -> NaclEntry:
    return NaclEntry(rule_number, action, egress=False, protocol="-1", cidr=cidr)


def dns_finding() -> Finding:
    return normalize(load_event("guardduty-cc-activity-dns.json"))


def run_for(target: str, finding: Finding, clients: Any = None, **params: Any) -> ActionRun:
    resource = finding.resource
    action = PlannedAction(
        id=ACTION_ID,
        kind=ActionKind.C2_BLOCK,
        target=target,
        params={"vpc_id": resource.vpc_id, "subnet_ids": resource.subnet_ids, **params},
        ttl_seconds=3600,
    )
    return ActionRun(
        finding=finding,
        action=action,
        incident_id="inc-c2",
        now=NOW,
        expires_at=NOW + timedelta(hours=1),
        clients=clients or (lambda service: pytest.fail(f"no AWS call expected: {service}")),
    )


def action():
    return catalogue()[ActionKind.C2_BLOCK]


def declared_actions() -> set[str]:
    return {name for permission in action().permissions for name in permission.actions}


# The target


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("203.0.113.50/32", "203.0.113.50/32"),
        ("203.0.113.50", "203.0.113.50/32"),
        ("2001:db8::1/128", "2001:db8::1/128"),
        ("198.51.100.0/24", "198.51.100.0/24"),
    ],
)
def test_an_address_target_is_a_network(target, expected):
    # Given an address target
    # When it is parsed
    network = parse_target(target)

    # Then it is the network to deny
    assert str(network) == expected


def test_a_domain_target_is_compared_lowercase_without_the_root_dot():
    # Given a domain as a finding may spell it
    # When it is parsed
    domain = parse_target(" Beacon.C2-Relay.Example. ")

    # Then it is the normal form
    assert domain == DOMAIN
    assert normal_domain("BEACON.c2-relay.example.") == DOMAIN


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("10.0.0.0/8", "wider than /16"),
        ("2001:db8::/32", "wider than /48"),
        ("example", "single label"),
        ("bad..example.com", "label ''"),
        ("-bad.example.com", "label '-bad'"),
        ("c2.exa mple.com", "label 'exa mple'"),
        ("", "neither an IP address nor a domain name"),
    ],
)
def test_a_target_that_is_no_address_or_domain_is_refused_with_the_reason(target, reason):
    # Given a target too wide, or not a domain name
    # When it is parsed
    with pytest.raises(ActionFailedError) as raised:
        parse_target(target)

    # Then the error names it and why
    assert reason in str(raised.value)


# Outbound entries and rule numbers


def test_only_an_outbound_all_protocol_deny_of_that_cidr_counts_as_the_cut():
    # Given entries of every other kind and one outbound deny of the address
    cidr = "203.0.113.50/32"

    # When each is checked
    # Then only the outbound all-protocol deny of exactly that CIDR matches
    assert denies_outbound(egress(50, "deny", cidr), cidr)
    assert not denies_outbound(ingress(50, "deny", cidr), cidr)
    assert not denies_outbound(egress(50, "allow", cidr), cidr)
    assert not denies_outbound(egress(50, "deny", cidr, protocol="6"), cidr)
    assert not denies_outbound(egress(50, "deny", "203.0.113.0/24"), cidr)


def test_the_outbound_rule_number_ignores_inbound_entries():
    # Given inbound entries at 50 and 51 (address blocks) and an outbound entry at 50
    entries = [ingress(50, "deny", "198.51.100.7/32"), ingress(51, "deny", "198.51.100.8/32")]
    entries.append(egress(50, "allow", "0.0.0.0/0"))

    # When an outbound rule number is chosen
    number = egress_rule_number(RANGE, entries, "acl-1")

    # Then only the outbound numbers count: 51 is free outbound
    assert number == 51


def test_a_full_outbound_range_fails_visibly_and_evicts_nothing():
    # Given every outbound number of the range taken, some by our own older cuts
    entries = [egress(number, "deny", f"203.0.113.{number}/32") for number in (50, 51, 52)]

    # When an outbound rule number is asked for
    with pytest.raises(ActionFailedError) as raised:
        egress_rule_number(RANGE, entries, "acl-1")

    # Then the cut fails, naming the range and the network ACL
    assert "egress range full" in str(raised.value)
    assert "50-52" in str(raised.value)
    assert "acl-1" in str(raised.value)


def test_an_earlier_outbound_allow_covering_the_address_is_reported():
    # Given an outbound allow-all at 10 and a narrower allow of another network at 20
    entries = [egress(10, "allow", "0.0.0.0/0"), egress(20, "allow", "192.0.2.0/24")]

    # When the cut sits at 50
    shadowing = shadowing_egress_allows(entries, "203.0.113.50/32", 50)

    # Then only the allow that covers the address is named
    assert shadowing == [10]


def test_the_association_takes_the_lowest_free_priority():
    # Given other rule groups associated with the VPC at 101 and 103
    # When ours is associated
    # Then it is evaluated first among the free priorities
    assert association_priority([101, 103]) == 102
    assert association_priority([]) == 101


def test_a_new_rule_comes_after_every_rule_of_the_group():
    # Given a group with rules at 100 and 250
    rules = [FirewallRule("a", 100, "ALLOW"), FirewallRule("b", 250, "ALERT")]

    # When the block rule is added
    # Then it takes the next priority, or 100 in an empty group
    assert rule_priority(rules) == 251
    assert rule_priority([]) == 100


# Planning


def test_the_plan_of_an_address_names_the_subnets():
    # Given an outbound C2 finding with one subnet
    finding = normalize(load_event("guardduty-cc-activity.json"))

    # When the cut is planned
    plan = action().plan(run_for("203.0.113.50/32", finding))

    # Then it says what would be denied where, and reads nothing
    assert plan == (
        "deny 203.0.113.50/32 outbound in the network ACLs of subnets subnet-0a9b8c7d6e5f43210"
    )


def test_the_plan_of_a_domain_names_the_list_the_group_and_the_vpc():
    # Given a DNS C2 finding
    # When the cut of its domain is planned
    plan = action().plan(run_for(DOMAIN, dns_finding()))

    # Then it names the list, the rule group and the VPC
    assert plan == (
        f"add {DOMAIN} to DNS Firewall domain list {DOMAIN_LIST}, blocked (NXDOMAIN) by "
        f"rule group {RULE_GROUP} in {VPC}"
    )


def test_the_plan_of_a_bad_target_says_it_would_be_refused():
    # Given a target too wide to cut
    # When it is planned
    plan = action().plan(run_for("10.0.0.0/8", dns_finding()))

    # Then the plan says why it would be refused
    assert plan.startswith("refuse the C2 cut: target 10.0.0.0/8 is wider than /16")


def test_a_domain_without_a_vpc_is_not_found_before_any_call():
    # Given a finding that names no VPC
    finding = dns_finding()
    resource = finding.resource.model_copy(update={"vpc_id": None})
    run = run_for(DOMAIN, finding.model_copy(update={"resource": resource}), vpc_id=None)

    # When the cut is applied
    # Then it is not found, and no client was asked for
    with pytest.raises(ActionTargetNotFoundError, match="names no VPC"):
        action().apply(run)


# DNS Firewall, stubbed against the route53resolver service model


@pytest.fixture
def resolver():
    client = boto3.client("route53resolver", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def stub(stubber: Stubber, operation: str, response: dict, **expected: Any) -> str:
    stubber.add_response(operation, response, expected)
    return operation


def iam_action(operation: str) -> str:
    return "route53resolver:" + "".join(part.capitalize() for part in operation.split("_"))


def test_apply_creates_what_is_missing_then_adds_the_domain(resolver):
    # Given an account with no Cloud Sniper domain list, rule group or association, and
    # another rule group associated with the VPC at priority 101
    client, stubber = resolver
    other = {"Id": "rslvr-frgassoc-other", "FirewallRuleGroupId": "rslvr-frg-other"}
    calls = [
        stub(stubber, "list_firewall_domain_lists", {"FirewallDomainLists": []}),
        stub(
            stubber,
            "create_firewall_domain_list",
            {"FirewallDomainList": {"Id": LIST_ID, "Name": DOMAIN_LIST}},
            CreatorRequestId=f"{ACTION_ID}-domain-list",
            Name=DOMAIN_LIST,
        ),
        stub(stubber, "list_firewall_rule_groups", {"FirewallRuleGroups": []}),
        stub(
            stubber,
            "create_firewall_rule_group",
            {"FirewallRuleGroup": {"Id": GROUP_ID, "Name": RULE_GROUP}},
            CreatorRequestId=f"{ACTION_ID}-rule-group",
            Name=RULE_GROUP,
        ),
        stub(
            stubber,
            "create_firewall_rule",
            {"FirewallRule": {"FirewallRuleGroupId": GROUP_ID, "Priority": 100}},
            CreatorRequestId=f"{ACTION_ID}-rule",
            FirewallRuleGroupId=GROUP_ID,
            FirewallDomainListId=LIST_ID,
            Priority=100,
            Action="BLOCK",
            BlockResponse="NXDOMAIN",
            Name=BLOCK_RULE,
        ),
        stub(
            stubber,
            "list_firewall_rule_group_associations",
            {
                "FirewallRuleGroupAssociations": [
                    {**other, "VpcId": VPC, "Priority": 101, "Status": "COMPLETE"}
                ]
            },
            VpcId=VPC,
        ),
        stub(
            stubber,
            "associate_firewall_rule_group",
            {
                "FirewallRuleGroupAssociation": {
                    "Id": ASSOCIATION_ID,
                    "FirewallRuleGroupId": GROUP_ID,
                    "VpcId": VPC,
                    "Priority": 102,
                    "Status": "UPDATING",
                }
            },
            CreatorRequestId=f"{ACTION_ID}-association-{VPC}",
            FirewallRuleGroupId=GROUP_ID,
            VpcId=VPC,
            Priority=102,
            Name=f"cloud-sniper-{VPC}",
        ),
        stub(
            stubber,
            "update_firewall_domains",
            {"Id": LIST_ID, "Name": DOMAIN_LIST, "Status": "UPDATING"},
            FirewallDomainListId=LIST_ID,
            Operation="ADD",
            Domains=[DOMAIN],
        ),
    ]

    # When the domain is cut
    applied = action().apply(run_for(DOMAIN, dns_finding(), lambda service: client))

    # Then each missing piece was created, the association in progress is accepted, the domain
    # was added, and the record says what the undo needs and what was made
    assert applied.state == {
        "target_kind": "domain",
        "domain": DOMAIN,
        "vpc_id": VPC,
        "domain_list_id": LIST_ID,
        "rule_group_id": GROUP_ID,
        "association_id": ASSOCIATION_ID,
        "created_list": True,
        "created_rule_group": True,
        "created_rule": True,
        "created_association": True,
        "added": True,
    }
    assert applied.detail.startswith(f"added {DOMAIN} to DNS Firewall domain list {DOMAIN_LIST}")
    assert "(association updating)" in applied.detail
    assert f"created domain list {DOMAIN_LIST}, rule group {RULE_GROUP}" in applied.detail
    # And every call made is one the action declares
    assert {iam_action(call) for call in calls} <= declared_actions()


def test_apply_when_everything_is_in_place_adds_nothing(resolver):
    # Given the list (holding the domain, as AWS spells it), the group, its BLOCK rule and the
    # association in place, plus a managed list and a shared group of the same names
    client, stubber = resolver
    managed = {"Id": "rslvr-fdl-aws", "Name": DOMAIN_LIST, "ManagedOwnerName": "Route 53"}
    shared = {"Id": "rslvr-frg-aaa", "Name": RULE_GROUP, "ShareStatus": "SHARED_WITH_ME"}
    stub(
        stubber,
        "list_firewall_domain_lists",
        {"FirewallDomainLists": [managed, {"Id": LIST_ID, "Name": DOMAIN_LIST}]},
    )
    stub(
        stubber,
        "list_firewall_rule_groups",
        {"FirewallRuleGroups": [shared, {"Id": GROUP_ID, "Name": RULE_GROUP}]},
    )
    stub(
        stubber,
        "list_firewall_rules",
        {
            "FirewallRules": [
                {
                    "Name": BLOCK_RULE,
                    "Priority": 100,
                    "Action": "BLOCK",
                    "FirewallDomainListId": LIST_ID,
                }
            ]
        },
        FirewallRuleGroupId=GROUP_ID,
    )
    stub(
        stubber,
        "list_firewall_rule_group_associations",
        {
            "FirewallRuleGroupAssociations": [
                {
                    "Id": ASSOCIATION_ID,
                    "FirewallRuleGroupId": GROUP_ID,
                    "VpcId": VPC,
                    "Priority": 101,
                    "Status": "COMPLETE",
                }
            ]
        },
        VpcId=VPC,
    )
    stub(
        stubber,
        "list_firewall_domains",
        {"Domains": ["other.example.", f"{DOMAIN}."]},
        FirewallDomainListId=LIST_ID,
    )

    # When the domain is cut again (a crash before the record, then a retry)
    applied = action().apply(run_for(DOMAIN, dns_finding(), lambda service: client))

    # Then nothing is written: the domain is recorded as it is
    assert applied.detail.startswith(f"{DOMAIN} was already in DNS Firewall domain list")
    assert applied.state["added"] is False
    assert not any(
        applied.state[key]
        for key in ("created_list", "created_rule_group", "created_rule", "created_association")
    )


def record_of(state: dict) -> ActionRecord:
    return ActionRecord(
        record_id=f"c2_block#{DOMAIN}",
        kind=ActionKind.C2_BLOCK,
        target=DOMAIN,
        incident_id="inc-c2",
        finding_id="f",
        action_id=ACTION_ID,
        applied_at=NOW,
        state=state,
    )


DOMAIN_STATE = {"target_kind": "domain", "domain": DOMAIN, "domain_list_id": LIST_ID}


def test_verify_finds_the_domain_in_the_list(resolver):
    # Given the list holding the domain over two pages
    client, stubber = resolver
    stub(
        stubber,
        "list_firewall_domains",
        {"Domains": ["a.example."], "NextToken": "page-2"},
        FirewallDomainListId=LIST_ID,
    )
    stub(
        stubber,
        "list_firewall_domains",
        {"Domains": [f"{DOMAIN}."]},
        FirewallDomainListId=LIST_ID,
        NextToken="page-2",
    )

    # When the cut is verified
    check = action().verify(record_of(DOMAIN_STATE), lambda service: client)

    # Then it holds
    assert check.ok, check.detail
    assert check.detail == f"{DOMAIN} is in DNS Firewall domain list {LIST_ID}"


def test_verify_fails_when_the_domain_was_taken_out(resolver):
    # Given the list without the domain
    client, stubber = resolver
    stub(stubber, "list_firewall_domains", {"Domains": []}, FirewallDomainListId=LIST_ID)

    # When the cut is verified
    check = action().verify(record_of(DOMAIN_STATE), lambda service: client)

    # Then it does not hold
    assert not check.ok
    assert "is not in DNS Firewall domain list" in check.detail


def test_undo_removes_only_the_domain(resolver):
    # Given a domain cut in force
    client, stubber = resolver
    call = stub(
        stubber,
        "update_firewall_domains",
        {"Id": LIST_ID, "Status": "UPDATING"},
        FirewallDomainListId=LIST_ID,
        Operation="REMOVE",
        Domains=[DOMAIN],
    )

    # When it is undone
    detail = action().undo(record_of(DOMAIN_STATE), lambda service: client)

    # Then the domain is removed; the list, group and association stay (no other call is stubbed)
    assert detail == f"removed {DOMAIN} from DNS Firewall domain list {LIST_ID}"
    assert iam_action(call) in declared_actions()


def test_undo_of_a_domain_whose_list_is_gone_is_done(resolver):
    # Given the domain list deleted by hand
    client, stubber = resolver
    stubber.add_client_error(
        "update_firewall_domains",
        service_error_code="ResourceNotFoundException",
        http_status_code=400,
    )

    # When the cut is undone
    detail = action().undo(record_of(DOMAIN_STATE), lambda service: client)

    # Then there is nothing left to remove
    assert detail == f"DNS Firewall domain list {LIST_ID} is gone, and {DOMAIN} with it"


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("ThrottlingException", 400, TransientAwsError),
        ("InternalServiceErrorException", 500, TransientAwsError),
        ("AccessDeniedException", 403, ActionFailedError),
        ("ValidationException", 400, ActionFailedError),
    ],
)
def test_errors_are_retried_only_when_transient(resolver, code, status, error):
    # Given DNS Firewall answering with an error
    client, stubber = resolver
    stubber.add_client_error(
        "list_firewall_domain_lists", service_error_code=code, http_status_code=status
    )

    # When the domain list is looked up
    with pytest.raises(error) as raised:
        DnsFirewall(client).domain_list_id(DOMAIN_LIST)

    # Then throttling and service errors are transient, the rest a permanent failure
    assert "ListFirewallDomainLists" in str(raised.value)
    assert code in str(raised.value)
