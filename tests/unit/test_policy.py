"""The policy: reading it, matching findings against its rules, and the decisions it makes."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import cloud_sniper
from cloud_sniper.domain.models import (
    ActionKind,
    Direction,
    Enrichment,
    Finding,
    Indicator,
    IndicatorHistory,
    IndicatorKind,
    IndicatorRole,
    Mode,
    Resource,
)
from cloud_sniper.domain.policy import (
    NO_RULE_REASON,
    Policy,
    PolicyError,
    evaluate,
    format_duration,
    load_policy,
    parse_duration,
    parse_policy,
    policy_as_json,
)

DEFAULT_POLICY = Path(cloud_sniper.__file__).parent / "data" / "default-policy.yaml"
# Public unicast addresses that no safety rule refuses (from MaxMind's GeoIP test databases).
ATTACKER = "89.160.20.112"
ATTACKER_V6 = "2001:218::1"
NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def address(value: str = ATTACKER, **fields) -> Indicator:
    kind = IndicatorKind.IPV6 if ":" in value else IndicatorKind.IPV4
    defaults = {"role": IndicatorRole.ATTACKER, "direction": Direction.INBOUND}
    return Indicator(kind=kind, value=value, **{**defaults, **fields})


def finding(resource: dict | None = None, **fields) -> Finding:
    defaults = {
        "id": "f-1",
        "type": "UnauthorizedAccess:EC2/SSHBruteForce",
        "severity": 5.0,
        "severity_label": "Medium",
        "account_id": "111122223333",
        "region": "us-east-1",
        "created_at": NOW,
        "updated_at": NOW,
        "indicators": [address()],
    }
    instance = {
        "kind": "Instance",
        "instance_id": "i-0abc1234def567890",
        "vpc_id": "vpc-0a1b2c3d",
        "subnet_ids": ["subnet-0a1b2c3d", "subnet-0e1f2a3b"],
        "public_ips": ["81.2.69.160"],
        "private_ips": ["10.0.1.15"],
    }
    return Finding(resource=Resource(**{**instance, **(resource or {})}), **{**defaults, **fields})


def policy(*rules: dict, **fields) -> Policy:
    return parse_policy({"version": 1, "rules": list(rules), **fields})


def decide(policy: Policy, finding: Finding, estate: list[str] | None = None):
    return evaluate(policy, finding, Enrichment(), estate or [])


BLOCK = {"name": "block", "mode": "auto", "actions": ["waf_block", "nacl_block"]}
ASK = {"name": "ask", "mode": "approval", "actions": ["waf_block"]}


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("1h30m", 5400),
        (" 2H ", 7200),
        ("90", 90),
        (90, 90),
    ],
)
def test_a_duration_is_read_as_seconds(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["24 hours", "h", "", "1.5h", "-5m", True, 1.5, None])
def test_a_value_that_is_not_a_duration_is_refused(value):
    with pytest.raises(ValueError, match="not a duration|a duration is"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(86400, "24h"), (3600, "1h"), (5400, "90m"), (172800, "2d"), (45, "45s")]
)
def test_a_duration_is_written_the_way_a_policy_would(seconds, text):
    assert format_duration(seconds) == text


# --- reading a policy ----------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_policy_is_read_from_yaml_and_from_json_alike(tmp_path):
    # Given the same policy in YAML and in JSON
    yaml_path = write(
        tmp_path,
        "policy.yaml",
        "version: 1\ndefaults: {block_ttl: 2h}\nrules:\n"
        "  - {name: block, mode: auto, actions: [waf_block]}\n",
    )
    json_path = write(
        tmp_path,
        "policy.json",
        json.dumps(
            {
                "version": 1,
                "defaults": {"block_ttl": "2h"},
                "rules": [{"name": "block", "mode": "auto", "actions": ["waf_block"]}],
            }
        ),
    )

    # When both are loaded
    from_yaml, from_json = load_policy(yaml_path), load_policy(json_path)

    # Then they are the same policy, durations in seconds
    assert from_yaml == from_json
    assert from_yaml.defaults.block_ttl == 7200
    assert from_yaml.defaults.approval_timeout == 3600


@pytest.mark.parametrize(
    ("document", "field", "problem"),
    [
        ({"version": 2}, "version", "Input should be 1"),
        ({"version": 1, "defaults": {"block_ttl": "1 day"}}, "defaults.block_ttl", "duration"),
        ({"version": 1, "defaults": {"block_ttl": "10s"}}, "defaults.block_ttl", "greater than"),
        ({"version": 1, "allowlist": ["81.2.69.0/24", "10.0.0.1/8"]}, "allowlist[1]", "CIDR"),
        ({"version": 1, "allowlist": ["not-a-network"]}, "allowlist[0]", "CIDR"),
        ({"version": 1, "surprise": True}, "surprise", "Extra inputs"),
        (
            {"version": 1, "rules": [{"name": "block", "mode": "auto"}]},
            "rules[0] (block)",
            "needs at least one action",
        ),
        (
            {"version": 1, "rules": [{"name": "tell", "mode": "notify", "actions": ["waf_block"]}]},
            "rules[0] (tell)",
            "takes no actions",
        ),
        (
            {"version": 1, "rules": [{**BLOCK, "approval_timeout": "1h"}]},
            "rules[0] (block)",
            "approval_timeout only applies",
        ),
        (
            {"version": 1, "rules": [{**ASK, "actions": ["waf_block", "waf_block"]}]},
            "rules[0] (ask)",
            "listed twice",
        ),
        (
            {"version": 1, "rules": [{**ASK, "actions": ["isolate"]}]},
            "rules[0] (ask).actions[0]",
            "waf_block",
        ),
        (
            {"version": 1, "rules": [{**ASK, "approval_timeout": "30d"}]},
            "rules[0] (ask).approval_timeout",
            "less than or equal",
        ),
        (
            {"version": 1, "rules": [{**ASK, "match": {"types": []}}]},
            "rules[0] (ask).match.types",
            "at least 1 item",
        ),
        (
            {"version": 1, "rules": [{**ASK, "match": {"min_severity": 8, "max_severity": 2}}]},
            "rules[0] (ask).match",
            "min_severity 8.0 is above max_severity 2.0",
        ),
        (
            {"version": 1, "rules": [{**ASK, "match": {"directions": ["sideways"]}}]},
            "rules[0] (ask).match.directions[0]",
            "inbound",
        ),
        (
            {"version": 1, "rules": [{**ASK, "match": {"typo": ["*"]}}]},
            "rules[0] (ask).match.typo",
            "Extra inputs",
        ),
        ({"version": 1, "rules": [ASK, ASK]}, "rules", "two rules are named 'ask'"),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_file_and_the_field(
    tmp_path, document, field, problem
):
    # Given a policy file with one mistake
    path = write(tmp_path, "policy.json", json.dumps(document))

    # When it is loaded
    with pytest.raises(PolicyError) as raised:
        load_policy(path)

    # Then the error names the file, the field and the problem
    message = str(raised.value)
    assert message.startswith(f"{path}: invalid policy: ")
    assert f"{field}: " in message
    assert problem in message


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("policy.json", '{"version": 1,,}', "not valid JSON: Expecting property name"),
        ("policy.yaml", "version: 1\nrules: [\n", "not valid YAML"),
        ("policy.yaml", "- version: 1\n", "a policy is a mapping"),
        ("policy.toml", "version = 1\n", "unknown policy format"),
    ],
)
def test_an_unreadable_policy_file_is_refused_naming_it(tmp_path, name, text, problem):
    # Given a policy file that cannot be read as a policy
    path = write(tmp_path, name, text)

    # When it is loaded, then the error names the file and says why
    with pytest.raises(PolicyError, match=f"^{path}: {problem}"):
        load_policy(path)


def test_a_missing_policy_file_is_refused_naming_it(tmp_path):
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "absent.json")


def test_reading_yaml_without_pyyaml_says_to_ship_json(tmp_path, monkeypatch):
    # Given a runtime without pyyaml, as in the Lambda bundle
    monkeypatch.setitem(sys.modules, "yaml", None)
    path = write(tmp_path, "policy.yaml", "version: 1\n")

    # When a YAML policy is loaded, then the error says the bundle reads JSON
    with pytest.raises(PolicyError, match="needs pyyaml; ship the policy as JSON"):
        load_policy(path)


def test_a_json_policy_is_read_without_pyyaml(tmp_path, monkeypatch):
    # Given a runtime without pyyaml and the default policy built as JSON
    built = write(tmp_path, "policy.json", policy_as_json(DEFAULT_POLICY))
    monkeypatch.setitem(sys.modules, "yaml", None)

    # When the JSON is loaded, then it is the default policy
    assert load_policy(built).rules[1].name == "brute-force-inbound"


def test_the_default_policy_survives_its_build_as_json(tmp_path):
    # Given the default policy, built as the JSON the Lambda bundle ships
    built = write(tmp_path, "policy.json", policy_as_json(DEFAULT_POLICY))

    # When the JSON is read back
    reloaded = load_policy(built)

    # Then it is the same policy, and the last rule catches everything
    assert reloaded == load_policy(DEFAULT_POLICY)
    assert reloaded.rules[-1].match.types == ["*"]
    assert reloaded.allowlist == []


def test_allowlist_entries_are_kept_as_networks():
    # Given an allowlist of a network, a single address and an IPv6 network
    loaded = policy(allowlist=["81.2.69.0/24", "216.160.83.56", "2001:0218::/32"])

    # Then each entry reads as a network, written the canonical way
    assert loaded.allowlist == ["81.2.69.0/24", "216.160.83.56/32", "2001:218::/32"]


# --- matching --------------------------------------------------------------------------------


def test_the_first_matching_rule_wins():
    # Given two rules that both match, notify first
    rules = policy(
        {"name": "first", "mode": "notify", "match": {"types": ["UnauthorizedAccess:*"]}}, BLOCK
    )

    # When a finding is evaluated, then the first one decides
    decision = decide(rules, finding())
    assert (decision.mode, decision.rule) == (Mode.NOTIFY, "first")


def test_a_finding_no_rule_matches_is_notified():
    # Given a policy whose only rule is about another type
    rules = policy({**BLOCK, "match": {"types": ["Recon:*"]}})

    # When a brute force finding is evaluated
    decision = decide(rules, finding())

    # Then it is notified, saying no rule matched
    assert decision.mode == Mode.NOTIFY
    assert decision.reason == NO_RULE_REASON
    assert decision.rule is None


@pytest.mark.parametrize(
    ("patterns", "matched"),
    [
        (["UnauthorizedAccess:EC2/SSHBruteForce"], True),
        (["UnauthorizedAccess:EC2/*"], True),
        (["*:EC2/*BruteForce"], True),
        (["Recon:*", "*SSH*"], True),
        (["unauthorizedaccess:ec2/sshbruteforce"], False),
        (["UnauthorizedAccess:EC2/SSH"], False),
        (["Recon:*"], False),
    ],
)
def test_types_are_case_sensitive_globs(patterns, matched):
    rules = policy({**BLOCK, "match": {"types": patterns}})

    assert (rules.rule_for(finding()) is not None) is matched


@pytest.mark.parametrize(
    ("severity", "matched"), [(3.9, False), (4.0, True), (5.5, True), (7.0, True), (7.1, False)]
)
def test_severity_bounds_are_inclusive(severity, matched):
    rules = policy({**BLOCK, "match": {"min_severity": 4, "max_severity": 7}})

    assert (rules.rule_for(finding(severity=severity)) is not None) is matched


@pytest.mark.parametrize(
    ("match", "matched"),
    [
        ({"resource_kinds": ["Instance"]}, True),
        ({"resource_kinds": ["AccessKey", "S3Bucket"]}, False),
        ({"resource_tags": {"env": "prod"}}, True),
        ({"resource_tags": {"env": "prod", "team": "web"}}, True),
        ({"resource_tags": {"env": "prod", "team": "data"}}, False),
        ({"resource_tags": {"owner": "web"}}, False),
        ({"directions": ["inbound"]}, True),
        ({"directions": ["outbound", "unknown"]}, False),
    ],
)
def test_resource_kinds_tags_and_directions_must_all_hold(match, matched):
    # Given an inbound finding on an instance tagged env=prod, team=web
    tagged = finding(resource={"tags": {"env": "prod", "team": "web"}})

    assert (policy({**BLOCK, "match": match}).rule_for(tagged) is not None) is matched


def test_a_finding_without_directions_matches_unknown():
    # Given an API call finding whose indicators carry no direction
    call = finding(
        type="Recon:IAMUser/MaliciousIPCaller",
        resource={"kind": "AccessKey"},
        indicators=[Indicator(kind=IndicatorKind.ACCESS_KEY, value="AKIAEXAMPLE")],
    )

    # Then only a rule accepting unknown directions matches it
    assert policy({**BLOCK, "match": {"directions": ["unknown"]}}).rule_for(call) is not None
    assert policy({**BLOCK, "match": {"directions": ["inbound"]}}).rule_for(call) is None


# --- planning actions -----------------------------------------------------------------------


def test_an_auto_rule_plans_its_actions_against_the_attacker():
    # Given a rule blocking with WAF and network ACLs for 2h
    rules = policy({**BLOCK, "block_ttl": "2h"})

    # When an inbound brute force from a public address is evaluated
    decision = decide(rules, finding())

    # Then both blocks are planned on the address as a /32, with deterministic ids
    assert decision.mode == Mode.AUTO
    assert decision.rule == "block"
    assert decision.refusals == []
    assert decision.approval_timeout_seconds is None
    waf, nacl = decision.actions
    assert waf.id == f"waf_block:{ATTACKER}/32"
    assert (waf.kind, waf.target, waf.params, waf.ttl_seconds) == (
        ActionKind.WAF_BLOCK,
        f"{ATTACKER}/32",
        {"ip_version": 4},
        7200,
    )
    assert nacl.id == f"nacl_block:{ATTACKER}/32"
    assert nacl.params == {
        "subnet_ids": ["subnet-0a1b2c3d", "subnet-0e1f2a3b"],
        "vpc_id": "vpc-0a1b2c3d",
        "direction": "inbound",
    }


def test_an_ipv6_attacker_is_planned_as_a_128():
    # Given an attacker written in a long IPv6 form
    attacked = finding(indicators=[address("2001:0218:0000::0001")])

    # When it is evaluated
    decision = decide(policy(BLOCK), attacked)

    # Then its target is the canonical /128 and the WAF block asks for the IPv6 set
    assert [action.target for action in decision.actions] == [f"{ATTACKER_V6}/128"] * 2
    assert decision.actions[0].params == {"ip_version": 6}


def test_the_default_block_ttl_applies_when_the_rule_sets_none():
    rules = policy(BLOCK, defaults={"block_ttl": "6h"})

    assert {action.ttl_seconds for action in decide(rules, finding()).actions} == {21600}


def test_an_approval_rule_carries_its_timeout():
    # Given an approval rule with its own timeout, and one inheriting the default
    own = policy({**ASK, "approval_timeout": "15m"}, defaults={"approval_timeout": "2h"})
    inherited = policy(ASK, defaults={"approval_timeout": "2h"})

    # When a finding is evaluated by each, then each decision carries its timeout
    assert decide(own, finding()).approval_timeout_seconds == 900
    assert decide(inherited, finding()).approval_timeout_seconds == 7200
    assert decide(own, finding()).mode == Mode.APPROVAL


def test_an_address_named_twice_is_planned_once():
    # Given a port probe naming the same attacker on two ports
    probe = finding(indicators=[address(local_port=22), address(local_port=3389)])

    # Then each action is planned once
    assert [action.id for action in decide(policy(ASK), probe).actions] == [
        f"waf_block:{ATTACKER}/32"
    ]


def test_an_address_both_attacker_and_target_is_refused():
    # Given an address the instance both received traffic from and reached out to
    both = finding(
        indicators=[
            address(),
            address(role=IndicatorRole.TARGET, direction=Direction.OUTBOUND),
        ]
    )

    # When it is evaluated, then nothing is planned against it
    decision = decide(policy(ASK), both)
    assert decision.actions == []
    assert decision.mode == Mode.NOTIFY


def test_refused_addresses_are_listed_next_to_the_planned_actions():
    # Given one public attacker and one private address
    mixed = finding(indicators=[address(), address("10.9.8.7")])

    # When it is evaluated
    decision = decide(policy(ASK), mixed)

    # Then the public one is planned and the private one refused, with its reason
    assert decision.mode == Mode.APPROVAL
    assert [action.target for action in decision.actions] == [f"{ATTACKER}/32"]
    (refusal,) = decision.refusals
    assert (refusal.target, refusal.kind) == ("10.9.8.7/32", "waf_block")
    assert "private address" in refusal.reason


def test_a_network_acl_block_needs_subnets():
    # Given an attacker of a resource with no VPC or subnet (an access key)
    key = finding(resource={"kind": "AccessKey", "vpc_id": None, "subnet_ids": []})

    # When a rule asks for both blocks
    decision = decide(policy(BLOCK), key)

    # Then the WAF block is planned, the network ACL block refused for want of subnets
    assert [action.kind for action in decision.actions] == [ActionKind.WAF_BLOCK]
    assert decision.refusals[0].kind == "nacl_block"
    assert "no VPC and subnet" in decision.refusals[0].reason


@pytest.mark.parametrize("mode", ["auto", "approval"])
def test_when_every_action_is_refused_the_decision_is_notify(mode):
    # Given a finding whose only address is the estate's own NAT gateway address
    rules = policy({**BLOCK, "mode": mode})

    # When it is evaluated
    decision = decide(rules, finding(), estate=[ATTACKER])

    # Then nothing is planned: notify, saying what the rule asked and why each was refused
    assert decision.mode == Mode.NOTIFY
    assert decision.rule == "block"
    assert decision.actions == []
    assert decision.approval_timeout_seconds is None
    assert decision.reason.startswith(f"rule 'block' asks for {mode} but every action was refused")
    assert "one of the estate's own public addresses" in decision.reason
    assert [(r.target, r.kind) for r in decision.refusals] == [
        (f"{ATTACKER}/32", "waf_block"),
        (f"{ATTACKER}/32", "nacl_block"),
    ]


def test_a_finding_naming_no_address_is_notified():
    # Given an auto rule and a finding with a domain only
    dns = finding(
        indicators=[
            Indicator(kind=IndicatorKind.DOMAIN, value="evil.example", direction="outbound")
        ]
    )

    # When it is evaluated, then it is notified: nothing to block
    decision = decide(policy(BLOCK), dns)
    assert decision.mode == Mode.NOTIFY
    assert decision.reason == "rule 'block' asks for auto but the finding names nothing to act on"


def test_an_exempt_resource_is_notified_with_the_blocks_refused():
    # Given an instance tagged cloud-sniper:exempt=true, attacked from a public address
    exempt = finding(resource={"tags": {"cloud-sniper:exempt": "true"}})

    # When an auto rule evaluates it
    decision = decide(policy(BLOCK), exempt)

    # Then nothing is planned: notify, each block refused for the tag
    assert decision.mode == Mode.NOTIFY
    assert decision.actions == []
    assert decision.reason.startswith("resource tagged cloud-sniper:exempt=true")
    assert {r.reason for r in decision.refusals} == {"resource tagged cloud-sniper:exempt=true"}
    assert len(decision.refusals) == 2


def test_an_allowlisted_attacker_is_refused():
    rules = policy(ASK, allowlist=["89.160.20.0/24"])

    decision = decide(rules, finding())

    assert decision.mode == Mode.NOTIFY
    assert decision.refusals[0].reason == "allowlisted by the policy (89.160.20.0/24)"


def test_the_reason_says_which_rule_matched_and_what_was_known():
    # Given a described rule and an enrichment that has seen the attacker before
    rules = policy({**ASK, "description": "threat list hit"})
    history = IndicatorHistory(
        kind=IndicatorKind.IPV4,
        value=ATTACKER,
        seen_before=True,
        sightings=3,
        first_seen=NOW,
        last_seen=NOW,
    )

    # When a finding is evaluated
    decision = evaluate(rules, finding(), Enrichment(indicators=[history]), [])

    # Then the reason names the rule, its description and the history
    assert decision.reason == "rule 'ask' matched: threat list hit (1 of 1 indicators seen before)"


# --- the default policy ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


OUT = address(role=IndicatorRole.TARGET, direction=Direction.OUTBOUND)
ACCESS_KEY = {
    "kind": "AccessKey",
    "access_key_id": "ASIAZ2EXAMPLE7QWERTY",
    "user_type": "AssumedRole",
}


@pytest.mark.parametrize(
    ("finding_type", "severity", "indicator", "resource", "mode", "rule"),
    [
        (
            "UnauthorizedAccess:EC2/SSHBruteForce",
            2.0,
            address(),
            None,
            "auto",
            "brute-force-inbound",
        ),
        (
            "UnauthorizedAccess:EC2/RDPBruteForce",
            5.0,
            address(),
            None,
            "auto",
            "brute-force-inbound",
        ),
        (
            "UnauthorizedAccess:EC2/SSHBruteForce",
            8.0,
            OUT,
            None,
            "approval",
            "instance-attacks-others",
        ),
        ("Recon:EC2/PortProbeUnprotectedPort", 5.0, address(), None, "auto", "port-probe"),
        ("Recon:EC2/PortProbeUnprotectedPort", 2.0, address(), None, "ignore", "recon-low"),
        (
            "UnauthorizedAccess:EC2/MaliciousIPCaller.Custom",
            5.0,
            address(),
            None,
            "approval",
            "custom-threat-list-inbound",
        ),
        (
            "UnauthorizedAccess:EC2/MaliciousIPCaller.Custom",
            5.0,
            OUT,
            None,
            "approval",
            "compromised-workload-c2",
        ),
        ("Backdoor:EC2/C&CActivity.B", 8.0, OUT, None, "approval", "compromised-workload-c2"),
        (
            "CryptoCurrency:EC2/BitcoinTool.B!DNS",
            8.0,
            address(role=IndicatorRole.OBSERVED, direction=Direction.OUTBOUND),
            None,
            "approval",
            "compromised-workload-c2",
        ),
        (
            "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
            8.0,
            address(),
            ACCESS_KEY,
            "approval",
            "compromised-credentials",
        ),
        (
            "Discovery:S3/MaliciousIPCaller",
            5.0,
            address(),
            None,
            "auto",
            "api-from-malicious-address",
        ),
        (
            "Recon:IAMUser/MaliciousIPCaller",
            5.0,
            address(),
            None,
            "auto",
            "api-from-malicious-address",
        ),
        (
            "Discovery:Kubernetes/TorIPCaller",
            5.0,
            address(),
            None,
            "auto",
            "api-from-malicious-address",
        ),
        ("Execution:Runtime/ReverseShell", 8.0, address(), None, "approval", "malware-on-instance"),
        (
            "Stealth:IAMUser/CloudTrailLoggingDisabled",
            2.0,
            address(),
            ACCESS_KEY,
            "notify",
            "high-priority-notify",
        ),
        ("Made:Up/NeverSeenBefore", 5.0, address(), None, "notify", "catch-all"),
    ],
)
def test_the_default_policy_decides_the_usual_findings(
    default_policy, finding_type, severity, indicator, resource, mode, rule
):
    # Given a finding of a common type
    common = finding(resource, type=finding_type, severity=severity, indicators=[indicator])

    # When the default policy evaluates it
    decision = decide(default_policy, common)

    # Then the intended rule decides, in the intended mode
    assert (decision.rule, decision.mode) == (rule, Mode(mode))


def test_the_default_policy_blocks_an_inbound_brute_force_for_a_day(default_policy):
    decision = decide(default_policy, finding())

    assert [action.kind for action in decision.actions] == [
        ActionKind.NACL_BLOCK,
        ActionKind.WAF_BLOCK,
    ]
    assert {action.ttl_seconds for action in decision.actions} == {86400}


def test_the_default_policy_waits_an_hour_for_an_approval(default_policy):
    caller = finding(type="UnauthorizedAccess:EC2/MaliciousIPCaller.Custom")

    assert decide(default_policy, caller).approval_timeout_seconds == 3600


# --- actions beyond blocks: planned, reported, not yet carried out ---------------------------

C2 = {"name": "c2", "mode": "approval", "actions": ["isolate_instance", "c2_block"]}


@pytest.fixture
def only_blocks_available(monkeypatch):
    """A version of Cloud Sniper that carries out address blocks alone, as the first did."""
    from cloud_sniper.domain import policy as policy_module

    available = frozenset({ActionKind.WAF_BLOCK, ActionKind.NACL_BLOCK})
    monkeypatch.setattr(policy_module, "AVAILABLE_ACTIONS", available)


DOMAIN = Indicator(kind=IndicatorKind.DOMAIN, value="c2.malicious.example")


def test_a_c2_finding_plans_isolation_and_the_c2_cut_as_not_yet_available(only_blocks_available):
    # Given a rule isolating the instance and cutting its C2, and a C&C finding naming the
    # remote address it reached and the domain it resolved
    c2 = finding(type="Backdoor:EC2/C&CActivity.B", indicators=[OUT, DOMAIN])

    # When it is evaluated
    decision = decide(policy(C2), c2)

    # Then the instance, the address and the domain are planned, none runnable yet: notified,
    # with the plan kept and said in the reason
    assert decision.mode == Mode.NOTIFY
    assert decision.actions == []
    assert [(a.kind, a.target) for a in decision.unavailable] == [
        (ActionKind.ISOLATE_INSTANCE, "i-0abc1234def567890"),
        (ActionKind.C2_BLOCK, f"{ATTACKER}/32"),
        (ActionKind.C2_BLOCK, "c2.malicious.example"),
    ]
    assert "not yet available" in decision.reason
    # Isolation ends by a release, never by expiry; the C2 cut expires as any block does
    assert [a.ttl_seconds is None for a in decision.unavailable] == [True, False, False]


def test_the_c2_cut_never_blocks_the_victim_of_an_instance_that_attacks(only_blocks_available):
    # Given a rule asking to cut the remote of a spam finding: the remote is the spam's victim
    spam = finding(type="Backdoor:EC2/Spambot", indicators=[OUT])

    # When it is evaluated
    decision = decide(policy({**C2, "actions": ["c2_block"]}), spam)

    # Then the remote is refused as a possible victim
    assert decision.mode == Mode.NOTIFY
    (refusal,) = decision.refusals
    assert refusal.target == f"{ATTACKER}/32"
    assert "victim" in refusal.reason


def test_the_c2_cut_still_refuses_the_estate_and_private_addresses(only_blocks_available):
    private = address("10.1.2.3", role=IndicatorRole.TARGET, direction=Direction.OUTBOUND)
    c2 = finding(type="Trojan:EC2/DropPoint", indicators=[private, OUT])

    decision = decide(policy({**C2, "actions": ["c2_block"]}), c2, estate=[ATTACKER])

    assert {r.target: r.reason for r in decision.refusals} == {
        "10.1.2.3/32": "private address (RFC 1918)",
        f"{ATTACKER}/32": "one of the estate's own public addresses (Elastic IP or NAT gateway)",
    }


def test_root_credentials_are_never_revoked(only_blocks_available):
    # Given a rule revoking credentials and a finding about the root user's key
    root = finding(
        {"kind": "AccessKey", "access_key_id": "AKIAROOTROOTROOT1234", "user_type": "Root"},
        type="Policy:IAMUser/RootCredentialUsage",
    )
    revoke = {"name": "revoke", "mode": "approval", "actions": ["revoke_credentials"]}

    # When it is evaluated, then the revocation is refused and a person is told
    decision = decide(policy(revoke), root)
    assert decision.mode == Mode.NOTIFY
    assert [r.reason for r in decision.refusals] == [
        "root credentials: a person acts on them, never Cloud Sniper"
    ]


def test_a_public_bucket_plans_one_action_per_bucket(only_blocks_available):
    buckets = finding(
        {"kind": "S3Bucket", "bucket_names": ["exports", "archive"]},
        type="Policy:S3/BucketPublicAccessGranted",
    )
    close = {"name": "close", "mode": "approval", "actions": ["block_public_access"]}

    decision = decide(policy(close), buckets)

    assert [(a.kind, a.target) for a in decision.unavailable] == [
        (ActionKind.BLOCK_PUBLIC_ACCESS, "exports"),
        (ActionKind.BLOCK_PUBLIC_ACCESS, "archive"),
    ]


def test_a_rule_mixing_blocks_and_later_actions_runs_the_blocks(only_blocks_available):
    # Given an auto rule blocking the attacker and isolating the instance
    mixed = {"name": "mixed", "mode": "auto", "actions": ["waf_block", "isolate_instance"]}

    # When an inbound finding is evaluated
    decision = decide(policy(mixed), finding())

    # Then the block runs, the isolation is reported as planned, and the mode stands
    assert decision.mode == Mode.AUTO
    assert [a.kind for a in decision.actions] == [ActionKind.WAF_BLOCK]
    assert [a.kind for a in decision.unavailable] == [ActionKind.ISOLATE_INSTANCE]


def test_a_rule_can_match_the_product_that_found_it():
    inspector = {"name": "inspector", "match": {"products": ["Inspector"]}, "mode": "notify"}
    rules = policy(inspector, {"name": "rest", "mode": "ignore"})

    assert decide(rules, finding(product="Inspector")).rule == "inspector"
    assert decide(rules, finding()).rule == "rest"


def test_a_rule_sets_the_priority_of_its_decision():
    loud = {"name": "loud", "mode": "notify", "priority": "high"}

    assert decide(policy(loud), finding()).priority == "high"
    assert decide(policy({"name": "quiet", "mode": "notify"}), finding()).priority == "normal"


def test_every_action_of_this_version_is_carried_out():
    # Given a rule isolating the instance and cutting its C2, and a C&C finding
    c2 = finding(type="Backdoor:EC2/C&CActivity.B", indicators=[OUT, DOMAIN])

    # When it is evaluated, then every action is planned to run, none left for later
    decision = decide(policy(C2), c2)
    assert decision.mode == Mode.APPROVAL
    assert decision.unavailable == []
    assert [a.kind for a in decision.actions] == [
        ActionKind.ISOLATE_INSTANCE,
        ActionKind.C2_BLOCK,
        ActionKind.C2_BLOCK,
    ]


# --- isolation cuts the instance's connections ------------------------------------------------

ISOLATE = {
    "name": "isolate",
    "mode": "approval",
    "actions": ["isolate_instance"],
    "block_ttl": "2d",
}


def test_isolating_an_attacked_instance_also_denies_its_attacker_inbound():
    # Given a rule isolating the instance alone, and a finding naming its inbound attacker
    # When it is evaluated
    decision = decide(policy(ISOLATE), finding())

    # Then the attacker is denied inbound in the instance's subnets too: a security group change
    # leaves a tracked connection open, a network ACL deny does not; the deny expires
    assert decision.mode == Mode.APPROVAL
    isolation, deny = decision.actions
    assert (isolation.kind, isolation.target) == (
        ActionKind.ISOLATE_INSTANCE,
        "i-0abc1234def567890",
    )
    assert (deny.kind, deny.target, deny.ttl_seconds) == (
        ActionKind.NACL_BLOCK,
        f"{ATTACKER}/32",
        2 * 86400,
    )
    assert deny.params == {
        "subnet_ids": ["subnet-0a1b2c3d", "subnet-0e1f2a3b"],
        "vpc_id": "vpc-0a1b2c3d",
        "direction": "inbound",
    }
    assert decision.refusals == []


def test_isolating_an_instance_that_calls_its_c2_denies_the_c2_address_outbound():
    # Given a C&C finding naming the address the instance reached, and a rule isolating it
    c2 = finding(type="Backdoor:EC2/C&CActivity.B", indicators=[OUT, DOMAIN])

    # When it is evaluated
    decision = decide(policy(ISOLATE), c2)

    # Then the C2 address is cut outbound; the domain is left to a rule asking for c2_block
    assert [(a.kind, a.target) for a in decision.actions] == [
        (ActionKind.ISOLATE_INSTANCE, "i-0abc1234def567890"),
        (ActionKind.C2_BLOCK, f"{ATTACKER}/32"),
    ]


def test_isolating_an_instance_that_attacks_others_never_denies_its_victims():
    # Given an instance sending spam: the remote it reached is a victim
    spam = finding(type="Backdoor:EC2/Spambot", indicators=[OUT])

    # When a rule isolating it is evaluated
    decision = decide(policy(ISOLATE), spam)

    # Then the instance is isolated, the victim is not denied, and the decision says why
    assert [a.kind for a in decision.actions] == [ActionKind.ISOLATE_INSTANCE]
    (refusal,) = decision.refusals
    assert (refusal.kind, refusal.target) == ("c2_block", f"{ATTACKER}/32")
    assert refusal.reason.startswith("not denied to cut the isolated instance's connections: ")
    assert "victim" in refusal.reason


def test_the_connection_cut_refuses_private_and_allowlisted_addresses():
    # Given an inbound finding from a private address and from an allowlisted one
    private = address("10.1.2.3")
    scanner = address(ATTACKER_V6)
    trusted = policy(ISOLATE, allowlist=[f"{ATTACKER_V6}/128"])

    # When a rule isolating the instance is evaluated
    decision = decide(trusted, finding(indicators=[private, scanner]))

    # Then neither is denied
    assert [a.kind for a in decision.actions] == [ActionKind.ISOLATE_INSTANCE]
    assert {r.target for r in decision.refusals} == {"10.1.2.3/32", f"{ATTACKER_V6}/128"}


def test_an_address_the_rule_already_denies_is_not_denied_twice():
    # Given a rule isolating the instance and cutting its C2 itself
    c2 = finding(type="Backdoor:EC2/C&CActivity.B", indicators=[OUT])
    both = {**ISOLATE, "actions": ["isolate_instance", "c2_block"]}

    # When it is evaluated, then the C2 address has one deny
    decision = decide(policy(both), c2)
    assert [(a.kind, a.target) for a in decision.actions] == [
        (ActionKind.ISOLATE_INSTANCE, "i-0abc1234def567890"),
        (ActionKind.C2_BLOCK, f"{ATTACKER}/32"),
    ]


def test_without_isolation_no_connection_is_cut():
    decision = decide(policy(ASK), finding())

    assert [a.kind for a in decision.actions] == [ActionKind.WAF_BLOCK]
