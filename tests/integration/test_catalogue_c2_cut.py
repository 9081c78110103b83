"""The C2 cut against an emulated account: outbound network ACL denies, and DNS Firewall absent."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import ActionKind, ActionStatus, Finding, PlannedAction
from cloud_sniper.domain.normalize import normalize
from services.mitigate.adapters.records import DynamoRecordStore
from services.mitigate.catalogue import (
    ActionRun,
    RecordStatus,
    catalogue,
    expire_records,
    record_id,
    run_action,
    undo_action,
)
from services.mitigate.catalogue.c2_cut import DOMAIN_LIST
from services.mitigate.settings import load_settings
from tests.conftest import load_event
from tests.project_tables import create_table

NOW = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
C2_V4 = "203.0.113.50/32"
C2_V6 = "2001:db8::c2/128"
C2_DOMAIN = "beacon.c2-relay.example"
UNAVAILABLE = "DNS Firewall is not available in this account / the local emulation"


class CountingClients:
    """The clients an action runs on, counting each AWS call as "<service>:<Operation>"."""

    def __init__(self) -> None:
        self._session = boto3.Session(region_name="us-east-1")
        self._made: dict[str, Any] = {}
        self.calls: list[str] = []

    def __call__(self, service_name: str) -> Any:
        if service_name not in self._made:
            client = self._session.client(service_name)
            client.meta.events.register("before-call.*.*", self._count)
            self._made[service_name] = client
        return self._made[service_name]

    def _count(self, model: Any, **_: Any) -> None:
        self.calls.append(f"{model.service_model.signing_name}:{model.name}")

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


@dataclasses.dataclass
class Account:
    ec2: Any
    vpc_id: str
    subnet_ids: list[str]
    nacl_ids: list[str]  # the default network ACL (first subnet), then a custom one (second)
    records: DynamoRecordStore
    clients: CountingClients

    def entries(self) -> dict[str, list[tuple]]:
        """Every entry of each network ACL, both directions, as comparable tuples."""
        acls = self.ec2.describe_network_acls(NetworkAclIds=self.nacl_ids)["NetworkAcls"]
        return {
            acl["NetworkAclId"]: sorted(
                (
                    entry["Egress"],
                    entry["RuleNumber"],
                    entry["RuleAction"],
                    entry["Protocol"],
                    entry.get("CidrBlock") or entry.get("Ipv6CidrBlock"),
                )
                for entry in acl["Entries"]
            )
            for acl in acls
        }

    def outbound(self, nacl_id: str) -> dict[int, tuple[str, str]]:
        return {
            number: (action, cidr)
            for egress, number, action, _, cidr in self.entries()[nacl_id]
            if egress
        }

    def entry(self, nacl_id: str, number: int, action: str, cidr: str, egress: bool) -> None:
        """Write an entry as someone else, or an earlier attempt, would."""
        key = "Ipv6CidrBlock" if ":" in cidr else "CidrBlock"
        self.ec2.create_network_acl_entry(
            NetworkAclId=nacl_id,
            RuleNumber=number,
            Protocol="-1",
            RuleAction=action,
            Egress=egress,
            **{key: cidr},
        )


@pytest.fixture
def settings(monkeypatch):
    """The mitigate function's environment; NACL_RULE_RANGE is what the cut allocates from."""

    def use(rule_range: str = "50-99") -> None:
        monkeypatch.setenv("BLOCKS_TABLE", naming.BLOCKS_TABLE)
        monkeypatch.setenv("INDICATORS_TABLE", naming.INDICATORS_TABLE)
        monkeypatch.setenv("NACL_RULE_RANGE", rule_range)
        load_settings.cache_clear()

    use()
    yield use
    load_settings.cache_clear()


@pytest.fixture
def account(settings):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc_id = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
        subnet_ids = [
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr)["Subnet"]["SubnetId"]
            for cidr in ("10.40.1.0/24", "10.40.2.0/24")
        ]
        default = ec2.describe_network_acls(
            Filters=[{"Name": "association.subnet-id", "Values": [subnet_ids[1]]}]
        )["NetworkAcls"][0]
        custom = ec2.create_network_acl(VpcId=vpc_id)["NetworkAcl"]["NetworkAclId"]
        association = next(
            a["NetworkAclAssociationId"]
            for a in default["Associations"]
            if a["SubnetId"] == subnet_ids[1]
        )
        ec2.replace_network_acl_association(AssociationId=association, NetworkAclId=custom)
        table = create_table(
            boto3.resource("dynamodb", region_name="us-east-1"), naming.ACTIONS_TABLE
        )
        yield Account(
            ec2=ec2,
            vpc_id=vpc_id,
            subnet_ids=subnet_ids,
            nacl_ids=[default["NetworkAclId"], custom],
            records=DynamoRecordStore(table),
            clients=CountingClients(),
        )


def c2_run(account: Account, target: str, finding_file: str, **resource: Any) -> ActionRun:
    finding: Finding = normalize(load_event(finding_file))
    where = {"vpc_id": account.vpc_id, "subnet_ids": account.subnet_ids, **resource}
    finding = finding.model_copy(update={"resource": finding.resource.model_copy(update=where)})
    action = PlannedAction(
        id=f"c2_block-{target}",
        kind=ActionKind.C2_BLOCK,
        target=target,
        params={"vpc_id": where["vpc_id"], "subnet_ids": where["subnet_ids"]},
        ttl_seconds=3600,
    )
    return ActionRun(
        finding=finding,
        action=action,
        incident_id="inc-c2-0001",
        now=NOW,
        expires_at=NOW + timedelta(hours=1),
        clients=account.clients,
    )


def address_run(account: Account, target: str = C2_V4, **resource: Any) -> ActionRun:
    return c2_run(account, target, "guardduty-cc-activity.json", **resource)


def declared() -> set[str]:
    action = catalogue()[ActionKind.C2_BLOCK]
    return {name for permission in action.permissions for name in permission.actions}


def assert_declared(calls: list[str]) -> None:
    undeclared = sorted(set(calls) - declared())
    assert not undeclared, f"called without a declared permission: {undeclared}"


def test_address_cut_lifecycle_apply_verify_reapply_undo(account, capsys):
    # Given a C2 address, a resource in two subnets with two network ACLs, an inbound address
    # block at 50 and someone's outbound allow at 50 in the first one
    first, second = account.nacl_ids
    account.entry(first, 50, "deny", "198.51.100.7/32", egress=False)
    account.entry(first, 50, "allow", "192.0.2.0/24", egress=True)
    before = account.entries()
    counts: dict[str, int] = {}

    # When the cut is applied through the catalogue
    result = run_action(address_run(account), account.records, dry_run=False)
    applied_calls = account.clients.take()

    # Then each network ACL denies the address outbound at the lowest free outbound number,
    # the inbound entries are untouched, and the result is applied and verified
    assert result.status is ActionStatus.APPLIED, result.detail
    assert account.outbound(first)[51] == ("deny", C2_V4)
    assert account.outbound(second)[50] == ("deny", C2_V4)
    assert [e for e in account.entries()[first] if not e[0]] == [
        e for e in before[first] if not e[0]
    ]
    assert f"denied {C2_V4} outbound in {first} by rule 51" in result.detail
    assert "verified: " in result.detail
    record = account.records.get(record_id(ActionKind.C2_BLOCK, C2_V4))
    assert record is not None and record.status is RecordStatus.ACTIVE
    assert record.expires_at == NOW + timedelta(hours=1)
    assert [(e["nacl_id"], e["rule_number"], e["cidr"]) for e in record.state["entries"]] == [
        (nacl_id, number, C2_V4) for nacl_id, number in sorted([(first, 51), (second, 50)])
    ]

    # And verify alone reads each network ACL once
    check = catalogue()[ActionKind.C2_BLOCK].verify(record, account.clients)
    verify_calls = account.clients.take()
    assert check.ok, check.detail
    counts["apply"] = len(applied_calls) - len(verify_calls)
    counts["verify"] = len(verify_calls)

    # When it is applied again
    during = account.entries()
    again = run_action(address_run(account), account.records, dry_run=False)
    reapply_calls = account.clients.take()

    # Then it is already applied and nothing changed in the account
    assert again.status is ActionStatus.ALREADY_APPLIED, again.detail
    assert account.entries() == during
    counts["reapply"] = len(reapply_calls)

    # When it is undone
    undone = undo_action(record, account.clients, "analyst", "false positive", NOW)
    undo_calls = account.clients.take()

    # Then exactly our entries are gone: the account is as it was
    assert undone.status is RecordStatus.UNDONE
    assert account.entries() == before
    assert f"removed outbound rule 51 denying {C2_V4} from {first}" in undone.verification
    counts["undo"] = len(undo_calls)

    # And every call made is declared, in the numbers a two-network-ACL cut takes
    for calls in (applied_calls, verify_calls, reapply_calls, undo_calls):
        assert_declared(calls)
    assert Counter(applied_calls) == {
        # The subnets' network ACLs, each read to allocate, then each read to verify.
        "ec2:DescribeNetworkAcls": 5,
        "ec2:CreateNetworkAclEntry": 2,
    }
    assert Counter(undo_calls) == {"ec2:DescribeNetworkAcls": 2, "ec2:DeleteNetworkAclEntry": 2}
    assert counts == {"apply": 5, "verify": 2, "reapply": 2, "undo": 4}
    with capsys.disabled():
        print(f"\nc2_block address, two network ACLs: API calls {counts}")


def test_an_ipv6_address_is_denied_outbound(account):
    # Given a C2 IPv6 address
    # When it is cut
    result = run_action(address_run(account, C2_V6), account.records, dry_run=False)

    # Then its outbound deny is an IPv6 entry in each network ACL
    assert result.status is ActionStatus.APPLIED, result.detail
    for nacl_id in account.nacl_ids:
        assert account.outbound(nacl_id)[50] == ("deny", C2_V6)


def test_a_deny_left_by_a_crashed_attempt_is_recorded_not_duplicated(account):
    # Given our outbound deny already in the range, written before a crash lost the record
    first, second = account.nacl_ids
    account.entry(first, 50, "deny", C2_V4, egress=True)
    account.entry(second, 50, "deny", C2_V4, egress=True)
    before = account.entries()

    # When the cut is applied again
    result = run_action(address_run(account), account.records, dry_run=False)

    # Then no entry is added, and the record keeps it, to be lifted in time
    assert result.status is ActionStatus.APPLIED, result.detail
    assert account.entries() == before
    assert f"{C2_V4} was already denied outbound in {first} by rule 50; recorded" in result.detail
    record = account.records.get(record_id(ActionKind.C2_BLOCK, C2_V4))
    assert all(entry["ours"] for entry in record.state["entries"])


def test_someone_elses_deny_outside_the_range_is_left_at_undo(account):
    # Given the account's own outbound deny of the address at 10, outside our range
    first, _ = account.nacl_ids
    account.entry(first, 10, "deny", C2_V4, egress=True)
    result = run_action(address_run(account), account.records, dry_run=False)
    record = account.records.get(record_id(ActionKind.C2_BLOCK, C2_V4))

    # When the cut is undone
    undone = undo_action(record, account.clients, "analyst", "done", NOW)

    # Then that deny stays: it was never ours
    assert "not ours" in result.detail
    assert account.outbound(first)[10] == ("deny", C2_V4)
    assert f"left rule 10 of {first}: not ours" in undone.verification


def test_a_full_egress_range_fails_visibly_and_changes_nothing(account, settings):
    # Given NACL_RULE_RANGE of two numbers, both taken by outbound entries in each network ACL
    settings("60-61")
    for nacl_id in account.nacl_ids:
        account.entry(nacl_id, 60, "allow", "192.0.2.0/24", egress=True)
        account.entry(nacl_id, 61, "deny", "198.51.100.9/32", egress=True)
    before = account.entries()

    # When the cut is applied
    result = run_action(address_run(account), account.records, dry_run=False)

    # Then it fails, saying the range is full, evicts nothing and records nothing
    assert result.status is ActionStatus.FAILED
    assert "egress range full" in result.detail
    assert "60-61" in result.detail
    assert account.entries() == before
    assert account.records.get(record_id(ActionKind.C2_BLOCK, C2_V4)) is None


def test_a_network_acl_whose_range_is_full_fails_the_verification_not_the_others(account, settings):
    # Given a full range in the first network ACL only
    settings("60-60")
    first, second = account.nacl_ids
    account.entry(first, 60, "allow", "192.0.2.0/24", egress=True)

    # When the cut is applied
    result = run_action(address_run(account), account.records, dry_run=False)

    # Then the second is cut and recorded, and the result says the first is not
    assert result.status is ActionStatus.FAILED
    assert account.outbound(second)[60] == ("deny", C2_V4)
    assert f"{first} not cut: egress range full" in result.detail
    record = account.records.get(record_id(ActionKind.C2_BLOCK, C2_V4))
    assert [entry["nacl_id"] for entry in record.state["entries"]] == [second]


def test_a_deny_removed_by_hand_is_reported_when_verified_again(account):
    # Given a cut in force whose entry in the second network ACL was deleted by hand
    run_action(address_run(account), account.records, dry_run=False)
    account.ec2.delete_network_acl_entry(
        NetworkAclId=account.nacl_ids[1], RuleNumber=50, Egress=True
    )

    # When the cut is asked for again
    result = run_action(address_run(account), account.records, dry_run=False)

    # Then the verification fails, naming what no longer holds
    assert result.status is ActionStatus.FAILED
    assert f"rule 50 of {account.nacl_ids[1]} no longer denies {C2_V4} outbound" in result.detail


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ({"subnet_ids": ["subnet-0000000000000dead"]}, "subnet-0000000000000dead not found"),
        ({"subnet_ids": []}, "names no subnet"),
    ],
)
def test_a_missing_subnet_is_not_found(account, resource, reason):
    # Given a finding about subnets that do not exist, or none
    run = address_run(account, **resource)

    # When the cut is applied
    result = run_action(run, account.records, dry_run=False)

    # Then it is not found, and nothing is recorded
    assert result.status is ActionStatus.NOT_FOUND
    assert reason in result.detail
    assert account.records.get(record_id(ActionKind.C2_BLOCK, C2_V4)) is None


def test_the_expiry_run_lifts_the_cut_once_due(account):
    # Given a cut in force
    before = account.entries()
    run_action(address_run(account), account.records, dry_run=False)

    # When the expiry runs before, then after its expiry
    early = expire_records(account.records, account.clients, NOW + timedelta(minutes=30))
    still = account.records.get(record_id(ActionKind.C2_BLOCK, C2_V4))
    late = expire_records(account.records, account.clients, NOW + timedelta(hours=2))

    # Then it stays until due, then its entries are gone and the record is expired
    assert early == {} and still.status is RecordStatus.ACTIVE
    assert late == {}
    assert account.entries() == before
    expired = account.records.get(record_id(ActionKind.C2_BLOCK, C2_V4))
    assert expired.status is RecordStatus.EXPIRED


def test_a_domain_is_reported_unavailable_under_the_local_emulation(account, capsys):
    # Given a DNS C2 finding, in an account whose emulation has no DNS Firewall
    run = c2_run(account, C2_DOMAIN, "guardduty-cc-activity-dns.json")

    # When its domain is cut
    result = run_action(run, account.records, dry_run=False)
    calls = account.clients.take()

    # Then it is reported unavailable, nothing pretends otherwise, and nothing is recorded
    assert result.status is ActionStatus.UNAVAILABLE
    assert result.detail == UNAVAILABLE
    assert account.records.get(record_id(ActionKind.C2_BLOCK, C2_DOMAIN)) is None
    assert calls == ["route53resolver:ListFirewallDomainLists"]
    assert_declared(calls)
    with capsys.disabled():
        print(f"\nc2_block domain under moto: API calls {Counter(calls)}, looking up {DOMAIN_LIST}")
