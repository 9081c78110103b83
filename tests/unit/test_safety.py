"""The safety rules: each one refuses, with its reason, and lets the rest through."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest

from cloud_sniper.domain import safety
from cloud_sniper.domain.models import (
    Direction,
    Enrichment,
    Finding,
    Indicator,
    IndicatorKind,
    IndicatorRole,
    Mode,
    Resource,
)
from cloud_sniper.domain.policy import Policy, evaluate

# Public unicast addresses that no rule refuses (they appear in MaxMind's GeoIP test databases).
ATTACKER = "89.160.20.112"
ATTACKER_V6 = "2001:218::1"
PUBLIC = ["89.160.20.112", "81.2.69.142", "216.160.83.56", "2.125.160.216", "2001:218::1"]


def attacker(value: str = ATTACKER, **fields) -> Indicator:
    kind = IndicatorKind.IPV6 if ":" in value else IndicatorKind.IPV4
    defaults = {"role": IndicatorRole.ATTACKER, "direction": Direction.INBOUND}
    return Indicator(kind=kind, value=value, **{**defaults, **fields})


def instance(**fields) -> Resource:
    defaults = {
        "kind": "Instance",
        "instance_id": "i-0abc1234def567890",
        "vpc_id": "vpc-0a1b2c3d",
        "subnet_ids": ["subnet-0a1b2c3d"],
        "public_ips": ["81.2.69.160"],
        "private_ips": ["10.0.1.15"],
    }
    return Resource(**{**defaults, **fields})


def finding(**fields) -> Finding:
    moment = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    defaults = {
        "id": "f-1",
        "type": "UnauthorizedAccess:EC2/SSHBruteForce",
        "severity": 5.0,
        "severity_label": "Medium",
        "account_id": "111122223333",
        "region": "us-east-1",
        "created_at": moment,
        "updated_at": moment,
        "resource": instance(),
        "indicators": [attacker()],
    }
    return Finding(**{**defaults, **fields})


def refuse(indicator: Indicator, **context) -> str | None:
    defaults = {"allowlist": [], "estate_addresses": [], "resource": instance()}
    return safety.refuse_address(indicator, **{**defaults, **context})


# --- the whole finding ---------------------------------------------------------------------


def test_a_sample_finding_is_never_acted_on():
    # Given a GuardDuty sample finding
    sample = finding(sample=True)

    # When the safety rules read it
    reason = safety.refuse_finding(sample)

    # Then it is refused as a sample
    assert reason == "GuardDuty sample finding: never acted on"


def test_an_archived_finding_is_never_acted_on():
    # Given an archived finding
    archived = finding(archived=True)

    # When the safety rules read it
    reason = safety.refuse_finding(archived)

    # Then it is refused as archived
    assert reason == "archived finding: never acted on"


def test_a_live_finding_is_not_refused_as_a_whole():
    assert safety.refuse_finding(finding()) is None


def test_a_sample_finding_is_ignored_even_when_a_rule_would_block():
    # Given a policy that blocks every finding, and a sample finding
    policy = Policy.model_validate(
        {"version": 1, "rules": [{"name": "all", "mode": "auto", "actions": ["waf_block"]}]}
    )

    # When the finding is evaluated
    decision = evaluate(policy, finding(sample=True), Enrichment(), [])

    # Then nothing is planned: the decision is ignore, with the sample reason
    assert decision.mode == Mode.IGNORE
    assert decision.reason == safety.SAMPLE_REASON
    assert decision.actions == []


# --- the exempt tag ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "True", " TRUE "])
def test_a_resource_tagged_exempt_is_refused(value):
    # Given a resource tagged cloud-sniper:exempt with a true value
    resource = instance(tags={"cloud-sniper:exempt": value})

    # When the safety rules read it
    reason = safety.refuse_resource(resource)

    # Then it is exempt, and the reason names the tag
    assert reason == f"resource tagged cloud-sniper:exempt={value}"


@pytest.mark.parametrize("tags", [{}, {"cloud-sniper:exempt": "false"}, {"exempt": "true"}])
def test_a_resource_without_a_true_exempt_tag_is_not_exempt(tags):
    assert safety.refuse_resource(instance(tags=tags)) is None


# --- the indicator's role ------------------------------------------------------------------


def test_the_remote_address_of_an_outbound_finding_is_never_blocked():
    # Given the remote address of an outbound connection: the instance reached it
    remote = attacker(role=IndicatorRole.TARGET, direction=Direction.OUTBOUND)

    # When the safety rules read it
    reason = safety.refuse_role(remote)

    # Then it is refused as a possible victim
    assert reason is not None
    assert "outbound" in reason
    assert "victim" in reason


def test_an_outbound_direction_is_refused_whatever_the_role_says():
    assert safety.refuse_role(attacker(direction=Direction.OUTBOUND)) is not None


def test_an_address_the_finding_does_not_name_as_attacker_is_refused():
    # Given an address a DNS finding observed, without a role
    observed = attacker(role=IndicatorRole.OBSERVED, direction=None)

    # When the safety rules read it
    reason = safety.refuse_role(observed)

    # Then it is refused: only attackers are blocked
    assert reason == "the finding does not name this address as the attacker"


@pytest.mark.parametrize("direction", [Direction.INBOUND, Direction.UNKNOWN, None])
def test_an_attacker_is_not_refused_for_its_role(direction):
    assert safety.refuse_role(attacker(direction=direction)) is None


# --- special-purpose addresses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "label"),
    [
        ("10.1.2.3", "private address"),
        ("172.16.0.1", "private address"),
        ("172.31.255.254", "private address"),
        ("192.168.1.1", "private address"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("192.0.0.8", "IETF protocol assignment"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.5", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("192.88.99.1", "6to4"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1ff:fe23:4567:890a", "link-local"),
        ("fc00::1", "unique local"),
        ("fd12:3456:789a::1", "unique local"),
        ("ff02::1", "multicast"),
        ("ff05::1:3", "multicast"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("2001::1", "IETF protocol assignment"),
        ("100::1", "discard-only"),
        ("::ffff:89.160.20.112", "IPv4-mapped"),
        ("64:ff9b::5aa0:1470", "translation"),
    ],
)
def test_a_special_purpose_address_is_never_blocked(address, label):
    # Given an address no attacker on the internet can have
    parsed = ipaddress.ip_address(address)

    # When the safety rules read it
    reason = safety.refuse_special(parsed)

    # Then it is refused, and the reason says what kind of address it is
    assert reason is not None
    assert label in reason


@pytest.mark.parametrize(
    "address",
    [*PUBLIC, "100.63.255.255", "100.128.0.0", "172.32.0.1", "192.0.3.1", "2a02:cf40::1"],
)
def test_a_public_unicast_address_is_not_refused_as_special(address):
    # Given a public unicast address, some just outside a special block
    parsed = ipaddress.ip_address(address)

    # When the safety rules read it, then nothing refuses it
    assert safety.refuse_special(parsed) is None


# --- the allowlist, the estate and the resource ----------------------------------------------


@pytest.mark.parametrize(
    ("address", "network"),
    [("89.160.20.112", "89.160.20.0/24"), ("2001:218::1", "2001:218::/32")],
)
def test_an_allowlisted_address_is_never_blocked(address, network):
    # Given an allowlist holding the address's network
    allowlist = [ipaddress.ip_network(network)]

    # When the safety rules read the address
    reason = safety.refuse_allowlisted(ipaddress.ip_address(address), allowlist)

    # Then it is refused, and the reason names the allowlist entry
    assert reason == f"allowlisted by the policy ({network})"


def test_an_address_outside_the_allowlist_is_not_refused_by_it():
    allowlist = [ipaddress.ip_network("81.2.69.0/24"), ipaddress.ip_network("2001:220::/32")]

    assert safety.refuse_allowlisted(ipaddress.ip_address(ATTACKER), allowlist) is None


@pytest.mark.parametrize(
    ("address", "estate"),
    [("89.160.20.112", ["81.2.69.142", "89.160.20.112"]), ("2001:218::1", ["2001:218:0:0::1"])],
)
def test_an_estate_address_is_never_blocked(address, estate):
    # Given the estate's public addresses (Elastic IPs, NAT gateways), in any spelling
    parsed = ipaddress.ip_address(address)

    # When the safety rules read one of them
    reason = safety.refuse_estate(parsed, estate)

    # Then it is refused as the estate's own
    assert reason == "one of the estate's own public addresses (Elastic IP or NAT gateway)"


def test_the_affected_resources_own_public_address_is_never_blocked():
    # Given a finding whose "attacker" is the instance's own public address
    resource = instance(public_ips=["81.2.69.160"])

    # When the safety rules read it
    reason = safety.refuse_resource_address(ipaddress.ip_address("81.2.69.160"), resource)

    # Then it is refused as the resource's own
    assert reason == "the affected resource's own address"


def test_a_value_that_is_not_an_address_is_refused():
    assert refuse(attacker("not-an-address")) == "not an IP address"


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_attacker_passes_every_rule(address):
    # Given a public attacker address, outside the estate, the allowlist and the resource
    indicator = attacker(address)

    # When every address rule reads it
    reason = refuse(indicator, estate_addresses=["216.160.83.57"])

    # Then none refuses it
    assert reason is None


def test_the_most_specific_reason_comes_first():
    # Given the estate's own address, which is also the remote of an outbound connection
    indicator = attacker(role=IndicatorRole.TARGET, direction=Direction.OUTBOUND)

    # When the address rules read it
    reason = refuse(indicator, estate_addresses=[ATTACKER])

    # Then the role decides first: whoever it is, an outbound remote is never blocked
    assert reason is not None
    assert "outbound" in reason
