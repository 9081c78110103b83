"""The mitigate service against an emulated account: WAF IP sets, network ACLs, blocks, expiry."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import ActionStatus, Decision, Finding, PlannedAction
from services.mitigate import handler
from services.mitigate.actions import Ports, apply_actions, expire_blocks, list_blocks
from services.mitigate.adapters import (
    Ec2NetworkAcls,
    WafChangeQueue,
    WafIpSets,
    build_ports,
    build_writer_ports,
)
from services.mitigate.settings import (
    Settings,
    WriterSettings,
    load_settings,
    load_writer_settings,
)
from services.mitigate.waf_writer import parse_records, write_changes
from tests.integration import waf_queue
from tests.project_tables import create_table

NOW = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
V4 = "198.51.100.7"
V6 = "2001:db8::bad:1"
OTHER_V4 = "203.0.113.66"
FOREIGN_CIDR = "192.0.2.0/24"
INCIDENT = "inc-0123456789abcdef"
NAMES = {4: naming.WAF_IPV4_SET, 6: naming.WAF_IPV6_SET}

ENVIRONMENT = {
    "BLOCKS_TABLE": naming.BLOCKS_TABLE,
    "INDICATORS_TABLE": naming.INDICATORS_TABLE,
    "WAF_SCOPE": "REGIONAL",
    "WAF_IPV4_SET_NAME": naming.WAF_IPV4_SET,
    "WAF_IPV6_SET_NAME": naming.WAF_IPV6_SET,
    "NACL_RULE_RANGE": "50-99",
    "DEFAULT_BLOCK_TTL_SECONDS": "86400",
    "POWERTOOLS_SERVICE_NAME": "mitigate",
    "WAF_CHANGES_QUEUE_URL": waf_queue.QUEUE_URL,
}


@dataclasses.dataclass
class Account:
    """The emulated account and what the tests read back from it."""

    ec2: Any
    wafv2: Any
    dynamodb: Any
    sqs: Any
    subnet_id: str
    nacl_id: str

    def ports(self, rule_range: str = "50-99") -> Ports:
        return build_ports(Settings.model_validate({**ENVIRONMENT, "NACL_RULE_RANGE": rule_range}))

    def write(self, at: datetime = NOW) -> list[str]:
        """Run the WAF writer over every change queued; the ids of the messages it handed back."""
        ports = build_writer_ports(WriterSettings.model_validate(ENVIRONMENT))

        def writer(event: dict[str, Any]) -> dict[str, Any]:
            changes, invalid = parse_records(event["Records"])
            failed = invalid + write_changes(changes, ports, at).failed
            return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

        batch = waf_queue.drain(self.sqs, writer)
        return [] if batch is None else batch[1]

    def ip_set(self, version: int) -> dict[str, Any]:
        name = naming.WAF_IPV4_SET if version == 4 else naming.WAF_IPV6_SET
        summary = next(
            s for s in self.wafv2.list_ip_sets(Scope="REGIONAL")["IPSets"] if s["Name"] == name
        )
        response = self.wafv2.get_ip_set(Name=name, Scope="REGIONAL", Id=summary["Id"])
        return {**response["IPSet"], "LockToken": response["LockToken"]}

    def addresses(self, version: int) -> list[str]:
        return self.ip_set(version)["Addresses"]

    def inbound(self) -> dict[int, tuple[str, str, str]]:
        """Inbound entries of the subnet's network ACL: rule number → (action, CIDR, protocol)."""
        acl = self.ec2.describe_network_acls(NetworkAclIds=[self.nacl_id])["NetworkAcls"][0]
        return {
            entry["RuleNumber"]: (
                entry["RuleAction"],
                entry.get("CidrBlock") or entry.get("Ipv6CidrBlock"),
                entry["Protocol"],
            )
            for entry in acl["Entries"]
            if not entry["Egress"]
        }

    def deny(self, rule_number: int, cidr: str) -> None:
        """Write an inbound deny entry as someone else would."""
        self.ec2.create_network_acl_entry(
            NetworkAclId=self.nacl_id,
            RuleNumber=rule_number,
            Protocol="-1",
            RuleAction="deny",
            Egress=False,
            CidrBlock=cidr,
        )

    def blocks(self) -> dict[str, dict[str, Any]]:
        items = self.dynamodb.Table(naming.BLOCKS_TABLE).scan(ConsistentRead=True)["Items"]
        return {item["block_id"]: item for item in items}

    def indicator(self, kind: str, value: str) -> dict[str, Any]:
        table = self.dynamodb.Table(naming.INDICATORS_TABLE)
        return table.get_item(Key={"kind": kind, "value": value})["Item"]


@pytest.fixture
def account():
    with mock_aws():
        ec2 = boto3.client("ec2")
        wafv2 = boto3.client("wafv2")
        dynamodb = boto3.resource("dynamodb")
        sqs = boto3.client("sqs")
        waf_queue.create_queue(sqs)

        vpc_id = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
        subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
        acls = ec2.describe_network_acls(
            Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}]
        )["NetworkAcls"]

        for name, version in ((naming.WAF_IPV4_SET, "IPV4"), (naming.WAF_IPV6_SET, "IPV6")):
            wafv2.create_ip_set(
                Name=name,
                Scope="REGIONAL",
                IPAddressVersion=version,
                Addresses=[],
                Description="Addresses blocked by Cloud Sniper",
            )

        dynamodb.create_table(
            TableName=naming.BLOCKS_TABLE,
            KeySchema=[{"AttributeName": "block_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "block_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        create_table(dynamodb, naming.ACTIONS_TABLE)
        indicators = dynamodb.create_table(
            TableName=naming.INDICATORS_TABLE,
            KeySchema=[
                {"AttributeName": "kind", "KeyType": "HASH"},
                {"AttributeName": "value", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "kind", "AttributeType": "S"},
                {"AttributeName": "value", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for kind, value in (("ipv4", V4), ("ipv4", OTHER_V4), ("ipv6", V6)):
            indicators.put_item(Item={"kind": kind, "value": value, "sightings": 1})

        yield Account(ec2, wafv2, dynamodb, sqs, subnet_id, acls[0]["NetworkAclId"])


@pytest.fixture
def finding(event) -> Callable[[list[str]], Finding]:
    """The sample finding, about a resource in the given subnets."""

    def build(subnet_ids: list[str]) -> Finding:
        document = event("mitigate-request.json")["finding"]
        document["resource"]["subnet_ids"] = subnet_ids
        return Finding.model_validate(document)

    return build


def decision(target: str, kinds: tuple[str, ...] = ("waf_block", "nacl_block"), ttl=None):
    actions = [
        PlannedAction(id=f"{kind}-{target}", kind=kind, target=target, ttl_seconds=ttl)
        for kind in kinds
    ]
    return Decision(mode="auto", reason="attacker", actions=actions)


def on_call(client: Any, operation: str, answer: Callable[[int], Any]) -> list[int]:
    """Run `answer(n)` before the n-th call of an operation; a non-None answer replaces the call."""
    calls: list[int] = []

    def before_call(**_: Any) -> Any:
        calls.append(len(calls) + 1)
        return answer(len(calls))

    client.meta.events.register(
        f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}", before_call
    )
    return calls


def aws_error(code: str, status: int = 400) -> tuple[AWSResponse, dict[str, Any]]:
    parsed = {
        "Error": {"Code": code, "Message": f"{code} injected by the test"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return AWSResponse("https://aws.invalid/", status, {}, None), parsed


def with_queue(ports: Ports, client: Any) -> Ports:
    """The ports with the WAF changes queue reached through that SQS client."""
    names = {4: naming.WAF_IPV4_SET, 6: naming.WAF_IPV6_SET}
    ip_sets = WafChangeQueue(client, names, queue_url=waf_queue.QUEUE_URL)
    return dataclasses.replace(ports, ip_sets=ip_sets)


@pytest.mark.parametrize(
    ("target", "version", "cidr", "kind"),
    [(V4, 4, "198.51.100.7/32", "ipv4"), (V6, 6, "2001:db8::bad:1/128", "ipv6")],
)
def test_waf_and_nacl_blocks_are_applied(account, target, version, cidr, kind, finding):
    # Given an attacker address and a finding about an instance in the subnet
    ports = account.ports()

    # When the decision's WAF and NACL blocks are applied
    results = apply_actions(
        finding([account.subnet_id]), decision(target), INCIDENT, False, NOW, ports
    )

    # Then the NACL block is applied and the WAF block queued for the writer, each with its
    # block and expiry
    assert [(r.kind.value, r.status) for r in results] == [
        ("waf_block", ActionStatus.QUEUED),
        ("nacl_block", ActionStatus.APPLIED),
    ]
    waf_set = naming.WAF_IPV4_SET if version == 4 else naming.WAF_IPV6_SET
    assert [r.block_id for r in results] == [
        f"waf#{waf_set}#{cidr}",
        f"nacl#{account.nacl_id}#{cidr}",
    ]
    assert {r.expires_at for r in results} == {NOW + timedelta(days=1)}
    assert account.addresses(version) == []

    # And once the WAF writer ran, the address is in the IP set of its version, whose
    # description is kept, and its block is marked written
    assert account.write() == []
    assert account.addresses(version) == [cidr]
    assert account.blocks()[f"waf#{waf_set}#{cidr}"]["written_at"] == "2024-05-01T11:00:00Z"
    assert account.addresses(6 if version == 4 else 4) == []
    assert account.ip_set(version)["Description"] == "Addresses blocked by Cloud Sniper"

    # And the network ACL denies it inbound at the first number of the range, before the allow
    assert account.inbound()[50] == ("deny", cidr, "-1")
    assert account.inbound()[100][0] == "allow"

    # And both blocks are recorded active, with their expiry for the TTL-free epoch too
    blocks = account.blocks()
    assert {item["status"] for item in blocks.values()} == {"active"}
    nacl_block = blocks[f"nacl#{account.nacl_id}#{cidr}"]
    assert nacl_block["rule_number"] == 50
    assert nacl_block["incident_id"] == INCIDENT
    assert nacl_block["finding_id"] == finding([]).id
    assert nacl_block["expires_at"] == "2024-05-02T11:00:00Z"
    assert nacl_block["expires_at_epoch"] == int((NOW + timedelta(days=1)).timestamp())

    # And the knowledge base knows the indicator is blocked
    indicator = account.indicator(kind, target)
    assert indicator["block_state"] == "active"
    assert indicator["blocked_until"] == "2024-05-02T11:00:00+00:00"
    assert indicator["blocked_before"] is True
    assert indicator["sightings"] == 1


def test_applying_twice_changes_nothing(account, finding):
    # Given blocks applied once, the WAF writer having run
    ports = account.ports()
    apply_actions(finding([account.subnet_id]), decision(V4), INCIDENT, False, NOW, ports)
    account.write()
    before = (account.ip_set(4), account.inbound(), account.blocks(), account.indicator("ipv4", V4))

    # When the same decision is applied again, as a retried Mitigate task does
    later = NOW + timedelta(minutes=5)
    results = apply_actions(
        finding([account.subnet_id]), decision(V4), INCIDENT, False, later, ports
    )

    # Then both are already applied with their first expiry, and nothing changed in the account
    assert {r.status for r in results} == {ActionStatus.ALREADY_APPLIED}
    assert {r.expires_at for r in results} == {NOW + timedelta(days=1)}
    after = (account.ip_set(4), account.inbound(), account.blocks(), account.indicator("ipv4", V4))
    assert after == before
    assert waf_queue.queued(account.sqs) == []


def test_a_retry_before_the_writer_ran_asks_it_again_and_it_adds_the_address_once(account, finding):
    # Given a WAF block recorded and queued, whose execution is retried before the writer runs
    ports = account.ports()
    plan = decision(V4, ("waf_block",))
    apply_actions(finding([account.subnet_id]), plan, INCIDENT, False, NOW, ports)

    # When the retry applies it again
    [retried] = apply_actions(finding([account.subnet_id]), plan, INCIDENT, False, NOW, ports)

    # Then it is still queued, asked twice (the first ask may have been lost with the attempt)
    assert retried.status is ActionStatus.QUEUED
    assert "already asked of the WAF writer" in retried.detail
    assert len(waf_queue.queued(account.sqs)) == 2

    # And the writer adds the address once, in one update
    wafv2 = boto3.client("wafv2")
    updates = on_call(wafv2, "UpdateIPSet", lambda _: None)
    writer = build_writer_ports(WriterSettings.model_validate(ENVIRONMENT))
    writer = dataclasses.replace(writer, ip_sets=WafIpSets(wafv2, "REGIONAL", NAMES))
    batch = waf_queue.receive_batch(account.sqs)
    report = write_changes(parse_records(batch)[0], writer, NOW)
    assert (report.failed, report.writes, updates) == ([], 1, [1])
    assert account.addresses(4) == ["198.51.100.7/32"]


def test_blocks_left_unrecorded_by_a_failed_attempt_are_recorded_on_retry(account, finding):
    # Given an attempt that changed WAF and the network ACL, then failed before recording
    account.wafv2.update_ip_set(
        Name=naming.WAF_IPV4_SET,
        Scope="REGIONAL",
        Id=account.ip_set(4)["Id"],
        Addresses=["198.51.100.7/32"],
        LockToken=account.ip_set(4)["LockToken"],
    )
    account.deny(50, "198.51.100.7/32")

    # When the task is retried
    results = apply_actions(
        finding([account.subnet_id]), decision(V4), INCIDENT, False, NOW, account.ports()
    )

    # Then both blocks are recorded so that they expire: the NACL block found in place, the WAF
    # block asked of the writer, which mitigate no longer reads
    assert [r.status for r in results] == [ActionStatus.QUEUED, ActionStatus.ALREADY_APPLIED]
    assert sorted(rule for rule, entry in account.inbound().items() if entry[0] == "deny") == [
        50,
        32767,
    ]
    assert sorted(account.blocks()) == sorted(r.block_id for r in results)

    # And the writer finds the address in place: nothing is added twice, the block is written
    lock_token = account.ip_set(4)["LockToken"]
    assert account.write() == []
    assert account.addresses(4) == ["198.51.100.7/32"]
    assert account.ip_set(4)["LockToken"] == lock_token
    assert "written_at" in account.blocks()[results[0].block_id]


def test_a_throttled_waf_change_is_transient_and_leaves_no_block(account, finding):
    # Given a WAF changes queue that throttles every message
    client = boto3.client("sqs")
    on_call(client, "SendMessage", lambda _: aws_error("ThrottlingException"))
    ports = with_queue(account.ports(), client)

    # When the decision's blocks are applied
    # Then the transient error goes up for the state machine's Retry, before any NACL change,
    # and the WAF block recorded just before is forgotten: nothing reports it in force
    with pytest.raises(TransientAwsError, match="SendMessage cloud-sniper-waf-changes"):
        apply_actions(finding([account.subnet_id]), decision(V4), INCIDENT, False, NOW, ports)
    assert 50 not in account.inbound()
    assert account.blocks() == {}
    assert waf_queue.queued(account.sqs) == []

    # And the retry, the queue working again, records and queues the block
    results = apply_actions(
        finding([account.subnet_id]), decision(V4), INCIDENT, False, NOW, account.ports()
    )
    assert [r.status for r in results] == [ActionStatus.QUEUED, ActionStatus.APPLIED]


class ThrottledBody:
    """The raw body of a throttling answer, as botocore reads one from the wire."""

    def stream(self, **_: Any):
        yield json.dumps({"__type": "ThrottlingException", "message": "injected"}).encode()


def test_the_sdk_retries_a_throttled_call_briefly_and_leaves_the_rest_to_the_state_machine(
    account, finding
):
    # Given a WAF changes queue that throttles every request that reaches the wire
    session = boto3.session.Session()
    sent: list[str] = []

    def throttle(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        return AWSResponse(request.url, 400, {}, ThrottledBody())

    session.events.register("before-send.sqs.SendMessage", throttle)
    settings = Settings.model_validate(ENVIRONMENT)

    # When the clients the service builds apply a WAF block
    ports = build_ports(settings, session=session)
    with pytest.raises(TransientAwsError, match="ThrottlingException"):
        apply_actions(
            finding([account.subnet_id]), decision(V4, ("waf_block",)), INCIDENT, False, NOW, ports
        )

    # Then the SDK sent the request three times (max_attempts counts retries in botocore's
    # Config), not the five of its legacy default
    assert len(sent) == 3


def test_full_range_evicts_our_oldest_block(account, finding):
    # Given a range of 50-52 where 51 holds someone else's entry, and our blocks at 50 and 52
    account.deny(51, FOREIGN_CIDR)
    ports = account.ports("50-52")
    subnet = [account.subnet_id]
    nacl_only = ("nacl_block",)
    apply_actions(finding(subnet), decision(V4, nacl_only), INCIDENT, False, NOW, ports)
    second = NOW + timedelta(minutes=1)
    apply_actions(finding(subnet), decision(OTHER_V4, nacl_only), INCIDENT, False, second, ports)
    assert account.inbound()[50][1] == "198.51.100.7/32"
    assert account.inbound()[52][1] == "203.0.113.66/32"

    # When a third address is blocked
    third = NOW + timedelta(minutes=2)
    results = apply_actions(
        finding(subnet), decision("203.0.113.99", nacl_only), INCIDENT, False, third, ports
    )

    # Then the oldest of our blocks gives up its number, and the foreign entry stays
    assert [r.status for r in results] == [ActionStatus.APPLIED]
    evicted_id = f"nacl#{account.nacl_id}#198.51.100.7/32"
    assert evicted_id in results[0].detail
    inbound = account.inbound()
    assert inbound[50] == ("deny", "203.0.113.99/32", "-1")
    assert inbound[51] == ("deny", FOREIGN_CIDR, "-1")
    assert inbound[52] == ("deny", "203.0.113.66/32", "-1")
    evicted = account.blocks()[evicted_id]
    assert (evicted["status"], evicted["removed_reason"]) == ("removed", "evicted")
    assert account.indicator("ipv4", V4)["block_state"] == "expired"
    assert [block.target for block in list_blocks(ports)] == [OTHER_V4, "203.0.113.99"]


def test_range_full_of_foreign_entries_fails_only_the_nacl_action(account, finding):
    # Given a range whose every number holds someone else's entry
    account.deny(50, FOREIGN_CIDR)
    account.deny(51, "192.0.2.128/25")
    ports = account.ports("50-51")

    # When the WAF and NACL blocks are applied
    results = apply_actions(finding([account.subnet_id]), decision(V4), INCIDENT, False, NOW, ports)

    # Then the NACL block fails with the reason and the WAF block goes on regardless
    assert [r.status for r in results] == [ActionStatus.QUEUED, ActionStatus.FAILED]
    assert "50-51" in results[1].detail
    assert "did not create" in results[1].detail
    account.write()
    assert account.addresses(4) == ["198.51.100.7/32"]


def test_a_target_that_cannot_be_blocked_fails_alone(account, finding):
    # Given a decision naming a non-address, a network far too wide, and an attacker address
    actions = [
        PlannedAction(id="a1", kind="waf_block", target="evil.example.com"),
        PlannedAction(id="a2", kind="nacl_block", target="0.0.0.0/0"),
        PlannedAction(id="a3", kind="waf_block", target=V4),
    ]
    plan = Decision(mode="auto", reason="attacker", actions=actions)

    # When it is applied
    results = apply_actions(
        finding([account.subnet_id]), plan, INCIDENT, False, NOW, account.ports()
    )

    # Then the first two fail with the reason, and the address is still blocked
    assert [r.status for r in results] == [
        ActionStatus.FAILED,
        ActionStatus.FAILED,
        ActionStatus.QUEUED,
    ]
    assert "not an IP address" in results[0].detail
    assert "wider than /16" in results[1].detail
    assert [rule for rule in account.inbound() if rule < 100] == []
    account.write()
    assert account.addresses(4) == ["198.51.100.7/32"]


def test_missing_subnet_or_subnet_less_resource_is_not_found(account, finding):
    # Given findings about a subnet that does not exist and about a resource without subnet
    ports = account.ports()
    gone = finding(["subnet-0000000000000dead"])
    nowhere = finding([])
    entries_before = account.inbound()

    # When their NACL blocks are applied
    missing = apply_actions(gone, decision(V4, ("nacl_block",)), INCIDENT, False, NOW, ports)
    no_subnet = apply_actions(nowhere, decision(V4, ("nacl_block",)), INCIDENT, False, NOW, ports)

    # Then each says what is missing, and nothing changed
    assert [r.status for r in missing + no_subnet] == [ActionStatus.NOT_FOUND] * 2
    assert "subnet-0000000000000dead" in missing[0].detail
    assert "i-0abc1234def567890" in no_subnet[0].detail
    assert account.inbound() == entries_before
    assert account.blocks() == {}


def test_a_missing_ip_set_fails_its_changes_in_the_writer_alone(account, finding):
    # Given an account without the IPv6 IP set
    ip_set = account.ip_set(6)
    account.wafv2.delete_ip_set(
        Name=ip_set["Name"], Scope="REGIONAL", Id=ip_set["Id"], LockToken=ip_set["LockToken"]
    )

    # When an IPv6 and an IPv4 address are blocked in WAF, and the NACL
    ports = account.ports()
    subnet = [account.subnet_id]
    results = apply_actions(finding(subnet), decision(V6), INCIDENT, False, NOW, ports)
    apply_actions(finding(subnet), decision(V4, ("waf_block",)), INCIDENT, False, NOW, ports)

    # Then mitigate, which no longer reads the sets, queues the WAF block; the NACL block goes on
    assert [r.status for r in results] == [ActionStatus.QUEUED, ActionStatus.APPLIED]

    # And the writer hands back the IPv6 change alone, which stays queued, and writes the IPv4 one
    failed = account.write()
    assert [json.loads(body)["cidr"] for body in waf_queue.queued(account.sqs)] == [
        "2001:db8::bad:1/128"
    ]
    assert len(failed) == 1
    assert account.addresses(4) == ["198.51.100.7/32"]
    assert "written_at" not in account.blocks()[results[0].block_id]


def test_dry_run_plans_and_changes_nothing(account, finding):
    # Given the account as it is
    before = (account.addresses(4), account.inbound(), account.indicator("ipv4", V4))

    # When the decision is applied as a dry run
    results = apply_actions(
        finding([account.subnet_id]), decision(V4), INCIDENT, True, NOW, account.ports()
    )

    # Then every action is planned, with what it would do, and nothing changed
    assert [r.status for r in results] == [ActionStatus.PLANNED] * 2
    assert naming.WAF_IPV4_SET in results[0].detail
    assert account.subnet_id in results[1].detail
    assert (account.addresses(4), account.inbound(), account.indicator("ipv4", V4)) == before
    assert account.blocks() == {}


def test_expiry_lifts_due_blocks_and_keeps_the_others(account, finding):
    # Given a short block of one address and a long block of another, in WAF and the NACL
    ports = account.ports()
    subnet = [account.subnet_id]
    apply_actions(finding(subnet), decision(V4, ttl=60), "inc-short", False, NOW, ports)
    apply_actions(finding(subnet), decision(OTHER_V4, ttl=3600), "inc-long", False, NOW, ports)
    account.write()

    # When the expiry runs after the short one is due, and the WAF writer after it
    report = expire_blocks(NOW + timedelta(minutes=2), ports)
    account.write()

    # Then the short blocks are lifted from WAF and the NACL and marked, the long ones stay
    short = [
        f"nacl#{account.nacl_id}#198.51.100.7/32",
        f"waf#{naming.WAF_IPV4_SET}#198.51.100.7/32",
    ]
    assert sorted(report.expired) == sorted(short)
    assert (report.checked, report.remaining, report.failed) == (4, 2, {})
    assert account.addresses(4) == ["203.0.113.66/32"]
    assert {rule: entry[1] for rule, entry in account.inbound().items() if rule < 100} == {
        51: "203.0.113.66/32"
    }
    blocks = account.blocks()
    assert {blocks[block_id]["status"] for block_id in short} == {"removed"}
    assert {blocks[block_id]["removed_reason"] for block_id in short} == {"expired"}
    assert all("ttl" in blocks[block_id] for block_id in short)
    assert [block.target for block in list_blocks(ports)] == [OTHER_V4, OTHER_V4]
    assert account.indicator("ipv4", V4)["block_state"] == "expired"
    assert account.indicator("ipv4", OTHER_V4)["block_state"] == "active"

    # And a second run finds nothing more to do
    again = expire_blocks(NOW + timedelta(minutes=3), ports)
    assert (again.expired, again.remaining) == ([], 2)
    assert account.blocks() == blocks


def test_indicator_stays_active_while_one_of_its_blocks_lasts(account, finding):
    # Given an address blocked in WAF for a minute and in the NACL for an hour
    ports = account.ports()
    subnet = [account.subnet_id]
    apply_actions(finding(subnet), decision(V4, ("waf_block",), 60), INCIDENT, False, NOW, ports)
    apply_actions(finding(subnet), decision(V4, ("nacl_block",), 3600), INCIDENT, False, NOW, ports)

    # When the WAF block expires
    report = expire_blocks(NOW + timedelta(minutes=2), ports)

    # Then the knowledge base still says blocked, until the NACL block's expiry
    assert report.expired == [f"waf#{naming.WAF_IPV4_SET}#198.51.100.7/32"]
    indicator = account.indicator("ipv4", V4)
    assert indicator["block_state"] == "active"
    assert indicator["blocked_until"] == "2024-05-01T12:00:00+00:00"


def test_expiry_failure_does_not_stop_the_others(account, finding):
    # Given due blocks in WAF and the NACL, and an EC2 API that throttles deletions once
    ports = account.ports()
    apply_actions(finding([account.subnet_id]), decision(V4, ttl=60), INCIDENT, False, NOW, ports)
    ec2 = boto3.client("ec2")
    on_call(
        ec2,
        "DeleteNetworkAclEntry",
        lambda n: aws_error("RequestLimitExceeded", 503) if n == 1 else None,
    )
    ports = dataclasses.replace(ports, network_acls=Ec2NetworkAcls(ec2))

    # When the expiry runs
    later = NOW + timedelta(minutes=2)
    report = expire_blocks(later, ports)

    # Then the WAF block is lifted, the NACL block is reported and stays active for next time
    nacl_block = f"nacl#{account.nacl_id}#198.51.100.7/32"
    assert report.expired == [f"waf#{naming.WAF_IPV4_SET}#198.51.100.7/32"]
    assert list(report.failed) == [nacl_block]
    assert account.blocks()[nacl_block]["status"] == "active"
    assert account.inbound()[50][1] == "198.51.100.7/32"

    # And the next run lifts it
    assert expire_blocks(later, ports).expired == [nacl_block]
    assert 50 not in account.inbound()


def test_handlers_apply_a_decision_and_expire_it(account, monkeypatch, event):
    # Given the functions' environment and the Mitigate task's input
    for key, value in ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    load_settings.cache_clear()
    handler.ports.cache_clear()
    request = event("mitigate-request.json")
    request["finding"]["resource"]["subnet_ids"] = [account.subnet_id]

    # When the mitigate function runs
    output = handler.mitigate(request, None)

    # Then it returns the results as plain JSON
    assert json.loads(json.dumps(output)) == output
    assert [(r["kind"], r["status"]) for r in output["results"]] == [
        ("waf_block", "queued"),
        ("nacl_block", "applied"),
    ]

    # And the WAF writer function, given the queued change, puts the address in its set
    handler.writer_ports.cache_clear()
    load_writer_settings.cache_clear()
    batch = waf_queue.drain(account.sqs, lambda records: handler.waf_writer(records, None))
    assert batch is not None and batch[1] == []
    assert account.addresses(4) == ["198.51.100.7/32"]

    # And the scheduled expiry leaves blocks that are not due
    assert handler.expire({}, None) == {
        "checked": 2,
        "expired": 0,
        "remaining": 2,
        "failed": 0,
        "failed_blocks": [],
    }
    handler.ports.cache_clear()
    load_settings.cache_clear()
    handler.writer_ports.cache_clear()
    load_writer_settings.cache_clear()


def later_update(finding: Finding, hours: int, count: int) -> Finding:
    """The same finding as GuardDuty delivers it again while the activity goes on."""
    return finding.model_copy(
        update={"updated_at": finding.updated_at + timedelta(hours=hours), "count": count}
    )


def counting_writes(ports: Ports) -> tuple[Ports, list[int], list[int]]:
    """The ports with SQS and EC2 clients that count WAF changes asked and NACL entries written."""
    sqs, ec2 = boto3.client("sqs"), boto3.client("ec2")
    waf_writes = on_call(sqs, "SendMessage", lambda _: None)
    nacl_writes = on_call(ec2, "CreateNetworkAclEntry", lambda _: None)
    ports = dataclasses.replace(with_queue(ports, sqs), network_acls=Ec2NetworkAcls(ec2))
    return ports, waf_writes, nacl_writes


def test_a_later_update_renews_the_blocks_in_force_without_writing_them_again(account, finding):
    # Given the WAF and NACL blocks of a finding, applied for a day
    subnet = [account.subnet_id]
    first = finding(subnet)
    apply_actions(first, decision(V4, ttl=86400), INCIDENT, False, NOW, account.ports())
    account.write()
    cidr = "198.51.100.7/32"

    # When GuardDuty delivers a later update of it six hours on, and the same decision follows
    later, again = NOW + timedelta(hours=6), later_update(first, hours=6, count=40)
    ports, waf_writes, nacl_writes = counting_writes(account.ports())
    results = apply_actions(again, decision(V4, ttl=86400), INCIDENT, False, later, ports)

    # Then both blocks are reported in force, with their expiry renewed to a day from now
    renewed = later + timedelta(days=1)
    assert [(r.kind.value, r.status) for r in results] == [
        ("waf_block", ActionStatus.ALREADY_APPLIED),
        ("nacl_block", ActionStatus.ALREADY_APPLIED),
    ]
    assert {r.expires_at for r in results} == {renewed}
    assert all(f"in force ({r.block_id}); expiry renewed to" in r.detail for r in results)

    # And neither WAF nor the network ACL was written again: one address, one deny entry
    assert (waf_writes, nacl_writes) == ([], [])
    assert waf_queue.queued(account.sqs) == []
    assert account.addresses(4) == [cidr]
    assert [rule for rule, entry in account.inbound().items() if entry[1] == cidr] == [50]

    # And the two block records carry the new expiry, and the knowledge base too
    blocks = account.blocks()
    assert sorted(blocks) == sorted(r.block_id for r in results)
    for item in blocks.values():
        item.pop("written_at", None)
        assert (item["status"], item["incident_id"]) == ("active", INCIDENT)
        assert item["expires_at"] == "2024-05-02T17:00:00Z"
        assert item["expires_at_epoch"] == int(renewed.timestamp())
        assert item["created_at"] == "2024-05-01T11:00:00Z"
    assert account.indicator("ipv4", V4)["blocked_until"] == "2024-05-02T17:00:00+00:00"

    # And a retry of that execution's Mitigate task changes nothing more, and still says renewed
    before = (account.blocks(), account.indicator("ipv4", V4))
    retried = apply_actions(
        again, decision(V4, ttl=86400), INCIDENT, False, later + timedelta(minutes=2), ports
    )
    assert {r.expires_at for r in retried} == {renewed}
    assert all("expiry renewed to" in r.detail for r in retried)
    assert (account.blocks(), account.indicator("ipv4", V4)) == before
    assert (waf_writes, nacl_writes) == ([], [])


def test_the_same_address_named_by_another_finding_renews_the_block(account, finding):
    # Given an address blocked for one incident
    subnet = [account.subnet_id]
    apply_actions(
        finding(subnet), decision(V4, ("waf_block",)), INCIDENT, False, NOW, account.ports()
    )
    account.write()

    # When another finding names the same address an hour later
    other = finding(subnet).model_copy(update={"id": "another-finding"})
    later = NOW + timedelta(hours=1)
    ports, waf_writes, _ = counting_writes(account.ports())
    [result] = apply_actions(
        other, decision(V4, ("waf_block",)), "inc-another", False, later, ports
    )

    # Then the block stays the first incident's, in force a day from now, written once
    assert result.status is ActionStatus.ALREADY_APPLIED
    assert result.expires_at == later + timedelta(days=1)
    assert waf_writes == []
    [block] = account.blocks().values()
    assert (block["incident_id"], block["expires_at"]) == (INCIDENT, "2024-05-02T12:00:00Z")


def test_a_renewal_never_shortens_the_expiry(account, finding):
    # Given blocks in force for two days
    subnet = [account.subnet_id]
    first = finding(subnet)
    apply_actions(first, decision(V4, ttl=2 * 86400), INCIDENT, False, NOW, account.ports())
    account.write()
    before = (account.blocks(), account.indicator("ipv4", V4))

    # When a later update asks for them for an hour
    later = NOW + timedelta(hours=6)
    results = apply_actions(
        later_update(first, 6, 30), decision(V4, ttl=3600), INCIDENT, False, later, account.ports()
    )

    # Then they stay in force until their first expiry, and nothing changed
    assert {r.status for r in results} == {ActionStatus.ALREADY_APPLIED}
    assert {r.expires_at for r in results} == {NOW + timedelta(days=2)}
    assert all("already blocked" in r.detail for r in results)
    assert (account.blocks(), account.indicator("ipv4", V4)) == before


def test_a_block_the_expiry_lifted_is_applied_anew_while_the_activity_goes_on(account, finding):
    # Given blocks of a minute, lifted by the expiry run
    subnet = [account.subnet_id]
    first = finding(subnet)
    ports = account.ports()
    apply_actions(first, decision(V4, ttl=60), INCIDENT, False, NOW, ports)
    account.write()
    expire_blocks(NOW + timedelta(minutes=2), ports)
    account.write()
    assert account.addresses(4) == []
    assert account.indicator("ipv4", V4)["block_state"] == "expired"

    # When a later update of the finding asks for them again
    later = NOW + timedelta(hours=1)
    results = apply_actions(
        later_update(first, 1, 25), decision(V4, ttl=3600), INCIDENT, False, later, ports
    )

    # Then both are applied anew, with a new expiry, in WAF and the network ACL
    assert [r.status for r in results] == [ActionStatus.QUEUED, ActionStatus.APPLIED]
    assert {r.expires_at for r in results} == {later + timedelta(hours=1)}
    assert account.write() == []
    cidr = "198.51.100.7/32"
    assert account.addresses(4) == [cidr]
    assert account.inbound()[50] == ("deny", cidr, "-1")
    indicator = account.indicator("ipv4", V4)
    assert (indicator["block_state"], indicator["blocked_until"]) == (
        "active",
        "2024-05-01T13:00:00+00:00",
    )

    # And the history keeps the lifted blocks beside the new ones, oldest first
    history = [
        (block.block_id, block.status.value, block.created_at)
        for block in list_blocks(ports, active_only=False)
    ]
    waf_id, nacl_id = (r.block_id for r in results)
    assert sorted(history) == sorted(
        [
            (f"{waf_id}@20240501T110000Z", "removed", NOW),
            (f"{nacl_id}@20240501T110000Z", "removed", NOW),
            (waf_id, "active", later),
            (nacl_id, "active", later),
        ]
    )
    assert [block.created_at for block in list_blocks(ports, active_only=False)] == [NOW] * 2 + [
        later
    ] * 2
    assert {block.block_id for block in list_blocks(ports)} == {waf_id, nacl_id}
    archived = account.blocks()[f"{waf_id}@20240501T110000Z"]
    assert (archived["removed_reason"], "ttl" in archived) == ("expired", True)

    # And the expiry run lifts the new blocks in their turn
    report = expire_blocks(later + timedelta(hours=2), ports)
    assert sorted(report.expired) == sorted([waf_id, nacl_id])
    account.write()
    assert account.addresses(4) == []


def test_a_catalogue_action_in_a_dry_run_is_planned_and_changes_nothing(account, finding):
    # Given a decision with an isolation, and the account as it is
    ports = account.ports()
    before = (account.ip_set(4), account.inbound(), account.blocks())
    isolation = decision("i-0123456789abcdef0", kinds=("isolate_instance",))

    # When it is applied as a dry run
    (result,) = apply_actions(finding([account.subnet_id]), isolation, INCIDENT, True, NOW, ports)

    # Then it is planned, said in words, and nothing changed
    assert result.status == ActionStatus.PLANNED
    assert result.detail.startswith("dry run: would ")
    assert (account.ip_set(4), account.inbound(), account.blocks()) == before


def test_a_network_acl_at_its_quota_falls_back_to_waf(account, finding):
    # Given a network ACL holding its quota of entries (2 here), none of them ours
    account.deny(120, FOREIGN_CIDR)
    ports = dataclasses.replace(account.ports(), nacl_entry_limit=2)

    # When a decision asks for a network ACL block alone
    results = apply_actions(
        finding([account.subnet_id]), decision(V4, ("nacl_block",)), INCIDENT, False, NOW, ports
    )

    # Then the network ACL block fails saying so, and the address is blocked in WAF instead
    nacl, waf = results
    assert nacl.status == ActionStatus.FAILED
    assert "network ACL full: it holds 2 entries, its quota of 2" in nacl.detail
    assert (waf.kind.value, waf.status) == ("waf_block", ActionStatus.QUEUED)
    assert waf.detail.startswith("in place of the full network ACL: asked the WAF writer to add")
    account.write()
    assert account.addresses(4) == ["198.51.100.7/32"]
    assert 50 not in account.inbound()
