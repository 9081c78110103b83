"""The WAF writer's coalescing: a batch's net effect per IP set, its order, the set's quota."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.mitigate.waf_writer import (
    BlockState,
    IpSetChange,
    QueuedChange,
    merge_addresses,
    net_changes,
    parse_records,
)

T0 = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
A, B, C = "198.51.100.7/32", "203.0.113.66/32", "192.0.2.9/32"
V6 = "2001:db8::bad:1/128"


def block_id(cidr: str) -> str:
    return f"waf#set#{cidr}"


def queued(op: str, cidr: str, seconds: int, number: int = 0) -> QueuedChange:
    version = 6 if ":" in cidr else 4
    change = IpSetChange(op=op, ip_version=version, cidr=cidr, block_id=block_id(cidr))
    return QueuedChange(f"m{seconds}-{number}-{op}-{cidr}", T0 + timedelta(seconds=seconds), change)


def active(*cidrs: str, since: datetime = T0 - timedelta(hours=1)) -> dict[str, BlockState]:
    return {block_id(cidr): BlockState(active=True, created_at=since) for cidr in cidrs}


def removed(*cidrs: str) -> dict[str, BlockState]:
    return {
        block_id(cidr): BlockState(active=False, created_at=T0 - timedelta(hours=1))
        for cidr in cidrs
    }


def test_a_batch_of_additions_is_one_change_per_set():
    # Given additions of three IPv4 addresses (one asked twice) and an IPv6 one, all recorded
    batch = [queued("add", A, 1), queued("add", B, 2), queued("add", A, 3), queued("add", V6, 4)]

    # When the batch is coalesced
    plans = net_changes(batch, active(A, B, V6))

    # Then each set gets its additions once, and every message is accounted for
    assert sorted(plans) == [4, 6]
    assert (plans[4].adds, plans[4].removes) == ([A, B], [])
    assert plans[4].to_mark == {A: block_id(A), B: block_id(B)}
    assert sorted(plans[4].message_ids) == sorted(m.message_id for m in batch[:3])
    assert (plans[6].adds, plans[6].message_ids) == ([V6], [batch[3].message_id])


def test_the_later_change_of_a_cidr_wins_by_the_time_sqs_received_it():
    # Given a block lifted (its removal asked) just after its addition was asked, delivered
    # out of order, and another lifted then applied anew
    batch = [
        queued("remove", A, 5),
        queued("add", A, 1),
        queued("remove", B, 1),
        queued("add", B, 5),
    ]
    blocks = {**removed(A), **active(B, since=T0 + timedelta(seconds=3))}

    # When the batch is coalesced
    plan = net_changes(batch, blocks)[4]

    # Then A leaves the set and B stays in it
    assert (plan.adds, plan.removes) == ([B], [A])


def test_changes_received_at_the_same_time_keep_their_order_in_the_batch():
    batch = [queued("add", A, 1, 0), queued("remove", A, 1, 1)]

    plan = net_changes(batch, active(A))[4]

    assert (plan.adds, plan.removes) == ([], [A])


def test_a_late_or_repeated_change_that_no_longer_holds_is_dropped():
    # Given the addition of a block since lifted, and a repeated removal of a block applied anew
    # after that removal was asked
    batch = [queued("add", A, 1), queued("remove", B, 1)]
    blocks = {**removed(A), **active(B, since=T0 + timedelta(minutes=5))}

    # When the batch is coalesced
    plan = net_changes(batch, blocks)[4]

    # Then neither changes the set, and both messages are done with
    assert (plan.adds, plan.removes, plan.stale) == ([], [], 2)
    assert sorted(plan.message_ids) == sorted(m.message_id for m in batch)


def test_an_addition_whose_block_was_never_recorded_is_dropped():
    plan = net_changes([queued("add", A, 1)], {})[4]

    assert (plan.adds, plan.stale) == ([], 1)


def test_a_removal_of_the_block_being_lifted_holds_while_it_is_still_marked_active():
    # The expiry asks for the removal, then marks the block removed: the writer may come between
    plan = net_changes([queued("remove", A, 10)], active(A))[4]

    assert plan.removes == [A]


def test_merge_removes_then_adds_comparing_cidrs_as_networks():
    merge = merge_addresses(["198.51.100.7/32", " 203.0.113.66/32"], adds=[C, A], removes=[B])

    assert merge.addresses == ["198.51.100.7/32", C]
    assert (merge.added, merge.removed, merge.refused) == ([C], [B], [])
    assert merge.changed


def test_merge_of_what_the_set_already_holds_changes_nothing():
    merge = merge_addresses([A, B], adds=[A], removes=[C])

    assert not merge.changed
    assert merge.addresses == [A, B]


def test_merge_never_goes_past_the_quota_and_refuses_the_later_additions():
    # Given a set one address short of its quota, and a removal freeing another place
    current = [f"10.0.{n // 256}.{n % 256}/32" for n in range(9_999)]

    # When three addresses are added and one removed
    merge = merge_addresses(current, adds=[A, B, C], removes=[current[0]])

    # Then the set holds its quota exactly; the last addition is refused
    assert len(merge.addresses) == 10_000
    assert (merge.added, merge.refused) == ([A, B], [C])


def test_records_that_are_no_change_are_named_and_the_rest_parsed():
    # Given an SQS batch with a good change, a body that is not one and a CIDR of the wrong version
    def record(message_id: str, body: str) -> dict:
        return {
            "messageId": message_id,
            "body": body,
            "attributes": {"SentTimestamp": "1714561200000"},
        }

    good = {"op": "add", "ip_version": 4, "cidr": "198.51.100.7", "block_id": block_id(A)}
    records = [
        record("m1", json.dumps(good)),
        record("m2", "not json"),
        record("m3", json.dumps({**good, "ip_version": 6})),
    ]

    # When the batch is parsed
    changes, invalid = parse_records(records)

    # Then the good one is read with its CIDR in network form and SQS's time, the others named
    assert [(c.message_id, c.change.cidr, c.sent_at) for c in changes] == [("m1", A, T0)]
    assert invalid == ["m2", "m3"]


def test_a_change_names_what_is_wrong_with_it():
    with pytest.raises(ValueError, match="is IPv4, not IPv6"):
        IpSetChange(op="add", ip_version=6, cidr=A, block_id="b")
    with pytest.raises(ValueError, match="'evil.example.com' is not an IP network"):
        IpSetChange(op="remove", ip_version=4, cidr="evil.example.com", block_id="b")
