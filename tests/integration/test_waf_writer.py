"""The WAF writer against an emulated account: one update per set per batch, failures, a flood."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import ActionStatus, Decision, Finding, PlannedAction
from services.mitigate import handler
from services.mitigate.actions import Ports, apply_actions, expire_blocks
from services.mitigate.adapters import build_ports, build_writer_ports
from services.mitigate.settings import Settings, WriterSettings
from tests.integration import waf_queue
from tests.project_tables import create_table

NOW = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
INCIDENT = "inc-0123456789abcdef"
ENVIRONMENT = {
    "BLOCKS_TABLE": naming.BLOCKS_TABLE,
    "INDICATORS_TABLE": naming.INDICATORS_TABLE,
    "WAF_SCOPE": "REGIONAL",
    "WAF_IPV4_SET_NAME": naming.WAF_IPV4_SET,
    "WAF_IPV6_SET_NAME": naming.WAF_IPV6_SET,
    "WAF_CHANGES_QUEUE_URL": waf_queue.QUEUE_URL,
    "POWERTOOLS_SERVICE_NAME": "waf-writer",
}
# The writer's coalescing, over a few intervals; tests/e2e/test_flood.py sends the whole 1,000
# through the local pipeline.
FLOOD = 200
FLOOD_INTERVALS = 4


@dataclasses.dataclass
class Account:
    """The emulated account, the mitigate ports over it, and the WAF calls the writer makes."""

    wafv2: Any
    sqs: Any
    blocks_table: Any
    ports: Ports
    calls: Counter
    session: Any
    finding: Finding
    _writer: Any = None

    def writer(self) -> Any:
        """The writer function's ports, made at its first run: after the test's hooks are set."""
        if self._writer is None:
            settings = WriterSettings.model_validate(ENVIRONMENT)
            self._writer = build_writer_ports(settings, session=self.session)
        return self._writer

    def block(self, *targets: str, now: datetime = NOW, ttl: int | None = None) -> list[Any]:
        """Apply a WAF block of each address, one finding each, as mitigate does."""
        results = []
        for number, target in enumerate(targets):
            action = PlannedAction(id=f"waf_block:{target}", kind="waf_block", target=target)
            if ttl is not None:
                action = action.model_copy(update={"ttl_seconds": ttl})
            plan = Decision(mode="auto", reason="attacker", actions=[action])
            finding = self.finding.model_copy(update={"id": f"finding-{number}-{target}"})
            results += apply_actions(finding, plan, INCIDENT, False, now, self.ports)
        return results

    def write(self) -> tuple[list[dict[str, Any]], list[str]] | None:
        """One interval of the writer function: a batch received, written and settled."""
        return waf_queue.drain(self.sqs, lambda event: handler.waf_writer(event, None))

    def addresses(self, version: int) -> set[str]:
        name = naming.WAF_IPV4_SET if version == 4 else naming.WAF_IPV6_SET
        return set(self.ip_set(name)["Addresses"])

    def ip_set(self, name: str) -> dict[str, Any]:
        summary = next(
            s for s in self.wafv2.list_ip_sets(Scope="REGIONAL")["IPSets"] if s["Name"] == name
        )
        response = self.wafv2.get_ip_set(Name=name, Scope="REGIONAL", Id=summary["Id"])
        return {**response["IPSet"], "LockToken": response["LockToken"]}

    def written(self) -> dict[str, bool]:
        items = self.blocks_table.scan(ConsistentRead=True)["Items"]
        return {item["cidr"]: "written_at" in item for item in items if item["status"] == "active"}


@pytest.fixture
def account(monkeypatch, event):
    with mock_aws():
        wafv2 = boto3.client("wafv2")
        for name, version in ((naming.WAF_IPV4_SET, "IPV4"), (naming.WAF_IPV6_SET, "IPV6")):
            wafv2.create_ip_set(Name=name, Scope="REGIONAL", IPAddressVersion=version, Addresses=[])
        dynamodb = boto3.resource("dynamodb")
        for table in (naming.BLOCKS_TABLE, naming.INDICATORS_TABLE, naming.ACTIONS_TABLE):
            create_table(dynamodb, table)
        sqs = boto3.client("sqs")
        waf_queue.create_queue(sqs)

        # The writer function's clients, counted: every WAF call it makes goes through them.
        session = boto3.session.Session()
        calls: Counter = Counter()
        session.events.register(
            "before-call.wafv2", lambda event_name, **_: calls.update([event_name.split(".")[-1]])
        )
        finding = Finding.model_validate(event("mitigate-request.json")["finding"])
        account = Account(
            wafv2,
            sqs,
            dynamodb.Table(naming.BLOCKS_TABLE),
            build_ports(Settings.model_validate(ENVIRONMENT)),
            calls,
            session,
            finding,
        )
        monkeypatch.setattr(handler, "writer_ports", account.writer)
        yield account


def on_call(session: Any, operation: str, answer: Any) -> list[dict[str, Any]]:
    """Run `answer(request, n)` before the n-th call; a non-None answer replaces the call.

    `request` is the call's JSON body, as sent: {"Name": ..., "Addresses": [...]} for a WAF call.
    """
    seen: list[dict[str, Any]] = []

    def before_call(params: dict[str, Any], **_: Any) -> Any:
        body = params.get("body") or b"{}"
        seen.append(json.loads(body.decode() if isinstance(body, bytes) else body))
        return answer(seen[-1], len(seen))

    session.events.register(f"before-call.{operation}", before_call)
    return seen


def aws_error(code: str, status: int = 400) -> tuple[AWSResponse, dict[str, Any]]:
    parsed = {
        "Error": {"Code": code, "Message": f"{code} injected by the test"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return AWSResponse("https://aws.invalid/", status, {}, None), parsed


def test_a_batch_is_one_read_and_one_update_per_ip_set(account):
    # Given WAF blocks of three IPv4 and two IPv6 addresses, and one more IPv4 lifted at once
    results = account.block(
        "198.51.100.7", "203.0.113.66", "192.0.2.9", "2001:db8::1", "2001:db8::2"
    )
    account.block("198.51.100.99", ttl=60)
    expire_blocks(NOW + timedelta(minutes=2), account.ports)
    assert {r.status for r in results} == {ActionStatus.QUEUED}

    # When the writer runs over the batch
    records, failed = account.write()

    # Then it read and updated each set once, leaving out the address lifted in the same batch
    assert (len(records), failed) == (7, [])
    assert (account.calls["GetIPSet"], account.calls["UpdateIPSet"]) == (2, 2)
    assert account.addresses(4) == {"198.51.100.7/32", "203.0.113.66/32", "192.0.2.9/32"}
    assert account.addresses(6) == {"2001:db8::1/128", "2001:db8::2/128"}

    # And every block in force is marked written, and the queue is empty
    assert account.written() == dict.fromkeys(
        [
            "198.51.100.7/32",
            "203.0.113.66/32",
            "192.0.2.9/32",
            "2001:db8::1/128",
            "2001:db8::2/128",
        ],
        True,
    )
    assert account.write() is None


def test_a_batch_the_sets_already_reflect_writes_nothing(account):
    # Given a batch written once, its messages delivered again as a standard queue may
    account.block("198.51.100.7")
    records, _ = account.write()
    for record in records:
        account.sqs.send_message(QueueUrl=waf_queue.QUEUE_URL, MessageBody=record["body"])

    # When the writer runs over the repeat
    _, failed = account.write()

    # Then it reads the set and makes no update
    assert failed == []
    assert (account.calls["GetIPSet"], account.calls["UpdateIPSet"]) == (2, 1)


def test_a_lock_conflict_is_retried_on_a_fresh_read_keeping_both_changes(account):
    # Given another writer that adds an address just before the writer's first update
    other = boto3.client("wafv2")

    def concurrent_write(params: dict[str, Any], call: int) -> None:
        if call == 1:
            ip_set = account.ip_set(params["Name"])
            other.update_ip_set(
                Name=ip_set["Name"],
                Scope="REGIONAL",
                Id=ip_set["Id"],
                Addresses=[*ip_set["Addresses"], "192.0.2.99/32"],
                LockToken=ip_set["LockToken"],
            )

    on_call(account.session, "wafv2.UpdateIPSet", concurrent_write)
    account.block("198.51.100.7")

    # When the writer runs
    _, failed = account.write()

    # Then the stale lock token is met by a fresh read and a second update that keeps both
    assert failed == []
    assert (account.calls["GetIPSet"], account.calls["UpdateIPSet"]) == (2, 2)
    assert account.addresses(4) == {"192.0.2.99/32", "198.51.100.7/32"}


def test_a_set_that_cannot_be_written_hands_back_its_messages_only(account):
    # Given an IPv4 set whose every update meets a lock conflict, and changes of both sets
    conflicting = {naming.WAF_IPV4_SET}

    def conflict(params: dict[str, Any], _: int) -> Any:
        if params["Name"] in conflicting:
            return aws_error("WAFOptimisticLockException")
        return None

    seen = on_call(account.session, "wafv2.UpdateIPSet", conflict)
    account.block("198.51.100.7", "203.0.113.66", "2001:db8::1")

    # When the writer runs
    records, failed = account.write()

    # Then after a bounded number of attempts on the IPv4 set, its two messages go back to the
    # queue; the IPv6 change is written and done
    v4_messages = sorted(r["messageId"] for r in records if '"ip_version":4' in r["body"])
    assert failed == v4_messages
    assert [p["Name"] for p in seen].count(naming.WAF_IPV4_SET) == 5
    assert account.addresses(4) == set()
    assert account.addresses(6) == {"2001:db8::1/128"}
    assert account.written() == {
        "198.51.100.7/32": False,
        "203.0.113.66/32": False,
        "2001:db8::1/128": True,
    }

    # And once the conflicts stop, the next run writes them
    conflicting.clear()
    records, failed = account.write()
    assert (len(records), failed) == (2, [])
    assert account.addresses(4) == {"198.51.100.7/32", "203.0.113.66/32"}


def test_a_batch_that_fails_entirely_loses_nothing_and_the_next_run_writes_it_all(account):
    # Given changes queued, and a blocks table that throttles the writer's reads once
    account.block("198.51.100.7", "203.0.113.66", "2001:db8::1")
    on_call(
        account.session,
        "dynamodb.BatchGetItem",
        lambda _, call: aws_error("ProvisionedThroughputExceededException") if call == 1 else None,
    )

    # When the writer runs, the whole batch fails
    with pytest.raises(Exception, match="ProvisionedThroughputExceededException"):
        account.write()

    # Then nothing was written, and every message is still in the queue
    assert account.calls["UpdateIPSet"] == 0
    assert len(waf_queue.queued(account.sqs)) == 3

    # And the next run writes them all
    records, failed = account.write()
    assert (len(records), failed) == (3, [])
    assert account.addresses(4) == {"198.51.100.7/32", "203.0.113.66/32"}
    assert account.addresses(6) == {"2001:db8::1/128"}
    assert set(account.written().values()) == {True}


def test_a_full_set_refuses_the_additions_past_its_quota_and_hands_them_back(account):
    # Given an IPv4 set holding 9,998 addresses, two short of WAF's quota of 10,000
    ip_set = account.ip_set(naming.WAF_IPV4_SET)
    filler = [f"10.{n // 65536}.{n // 256 % 256}.{n % 256}/32" for n in range(9_998)]
    account.wafv2.update_ip_set(
        Name=ip_set["Name"],
        Scope="REGIONAL",
        Id=ip_set["Id"],
        Addresses=filler,
        LockToken=ip_set["LockToken"],
    )

    # When three addresses are blocked and the writer runs
    account.block("198.51.100.7", "203.0.113.66", "192.0.2.9")
    records, failed = account.write()

    # Then the set takes two, up to its quota; the third's message goes back to the queue, its
    # block stays queued (to end in the dead-letter queue if the set stays full)
    refused = [r["messageId"] for r in records if "192.0.2.9" in r["body"]]
    assert failed == refused
    addresses = account.addresses(4)
    assert len(addresses) == 10_000
    assert {"198.51.100.7/32", "203.0.113.66/32"} <= addresses
    assert account.written() == {
        "198.51.100.7/32": True,
        "203.0.113.66/32": True,
        "192.0.2.9/32": False,
    }


def test_a_flood_of_findings_ends_with_every_address_blocked_in_few_writes(account, capsys):
    # Given many findings, each with an address of its own, arriving over four intervals
    addresses = [str(ipaddress.ip_address("198.18.0.0") + n) for n in range(FLOOD)]
    per_interval = FLOOD // FLOOD_INTERVALS
    started = time.perf_counter()

    # When mitigate blocks each in WAF, and the writer takes each interval's batch
    statuses: Counter = Counter()
    batches = messages = 0
    for start in range(0, FLOOD, per_interval):
        results = account.block(*addresses[start : start + per_interval])
        statuses.update(r.status for r in results)
        batch = account.write()
        assert batch is not None
        records, failed = batch
        assert failed == []
        batches += 1
        messages += len(records)
    seconds = time.perf_counter() - started

    # Then every address is in the set, none lost, and every block is marked written
    assert statuses == {ActionStatus.QUEUED: FLOOD}
    assert account.addresses(4) == {f"{address}/32" for address in addresses}
    written = account.written()
    assert len(written) == FLOOD and all(written.values())
    assert account.write() is None

    # And the IP set was written no more often than the writer's intervals that elapsed
    updates = account.calls["UpdateIPSet"]
    assert messages == FLOOD
    assert updates <= batches == FLOOD_INTERVALS
    with capsys.disabled():
        print(
            f"\nWAF writer flood: {messages} messages, {batches} batches, "
            f"{updates} UpdateIPSet calls, {account.calls['GetIPSet']} GetIPSet calls, "
            f"{seconds:.1f} s"
        )
