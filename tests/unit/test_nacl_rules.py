"""Rule-number allocation for the inbound deny entries we write in network ACLs."""

from datetime import UTC, datetime, timedelta

import pytest

from cloud_sniper.domain.nacl_rules import (
    Allocation,
    NaclEntry,
    NaclFullError,
    NaclRangeFullError,
    NaclRuleRangeError,
    OurRule,
    RuleRange,
    allocate_rule_number,
    inbound,
    shadowing_allows,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RANGE = RuleRange(50, 54)
DEFAULT_INBOUND = [100, 32767]


def ours(rule_number: int, minutes: int) -> OurRule:
    return OurRule(
        block_id=f"nacl#acl-1#10.0.0.{rule_number}/32",
        rule_number=rule_number,
        created_at=T0 + timedelta(minutes=minutes),
    )


def test_empty_range_gives_its_lowest_number():
    # Given a network ACL holding only the default entries
    # When a number is allocated
    allocation = allocate_rule_number(RANGE, DEFAULT_INBOUND, [])

    # Then the lowest number of the range is used and nothing is evicted
    assert allocation == Allocation(rule_number=50, evicted=None)


def test_lowest_gap_is_filled_first():
    # Given our entries at 50 and 52 and a foreign entry at 51
    used = [50, 51, 52, *DEFAULT_INBOUND]

    # When a number is allocated
    allocation = allocate_rule_number(RANGE, used, [ours(50, 0), ours(52, 1)])

    # Then the first number nobody uses is chosen
    assert allocation.rule_number == 53
    assert allocation.evicted is None


def test_number_held_by_our_record_is_not_reused_while_free_numbers_remain():
    # Given a block of ours recorded at 50 whose entry is not (yet) described
    # When a number is allocated
    allocation = allocate_rule_number(RANGE, DEFAULT_INBOUND, [ours(50, 0)])

    # Then 50 stays with that block
    assert allocation.rule_number == 51


def test_full_range_of_our_blocks_evicts_the_oldest():
    # Given the whole range used by our blocks, the oldest at 52
    blocks = [ours(50, 3), ours(51, 2), ours(52, 0), ours(53, 4), ours(54, 1)]
    used = [block.rule_number for block in blocks] + DEFAULT_INBOUND

    # When a number is allocated
    allocation = allocate_rule_number(RANGE, used, blocks)

    # Then the oldest block is evicted and its number reused
    assert allocation.rule_number == 52
    assert allocation.evicted == ours(52, 0)


def test_mixed_full_range_evicts_only_our_blocks():
    # Given a full range where the oldest entry (51) is foreign and ours are 53 and 54
    blocks = [ours(53, 5), ours(54, 9)]
    used = [50, 51, 52, 53, 54, *DEFAULT_INBOUND]

    # When a number is allocated
    allocation = allocate_rule_number(RANGE, used, blocks)

    # Then our oldest block gives up its number, never a foreign one
    assert allocation.rule_number == 53
    assert allocation.evicted == blocks[0]


def test_our_blocks_outside_the_range_are_never_evicted():
    # Given a range full of foreign entries and one of our blocks left from an older range
    used = [50, 51, 52, 53, 54, 10]

    # When a number is allocated
    # Then the range is reported full
    with pytest.raises(NaclRangeFullError, match="50-54"):
        allocate_rule_number(RANGE, used, [ours(10, 0)])


def test_range_full_of_foreign_entries_is_an_error():
    # Given every number of the range used by entries that are not ours
    used = [50, 51, 52, 53, 54, *DEFAULT_INBOUND]

    # When a number is allocated
    # Then a clear error names the range
    with pytest.raises(NaclRangeFullError, match="did not create"):
        allocate_rule_number(RANGE, used, [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50-99", RuleRange(50, 99)), (" 1 - 32766 ", RuleRange(1, 32766)), ("7-7", RuleRange(7, 7))],
)
def test_range_strings_are_parsed(text, expected):
    assert RuleRange.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "50", "50-", "-99", "99-50", "0-10", "50-32767", "a-b", "50..99", "50-99-100", "-5-10"],
)
def test_bad_range_strings_are_rejected(text):
    with pytest.raises(NaclRuleRangeError):
        RuleRange.parse(text)


def test_inbound_entries_are_ordered_by_rule_number():
    # Given entries in both directions, out of order
    entries = [
        NaclEntry(100, "allow", egress=False, cidr="0.0.0.0/0"),
        NaclEntry(10, "allow", egress=True, cidr="0.0.0.0/0"),
        NaclEntry(50, "deny", egress=False, cidr="203.0.113.7/32"),
    ]

    # When the inbound entries are listed
    # Then only Egress false entries come, in evaluation order
    assert [entry.rule_number for entry in inbound(entries)] == [50, 100]


def test_deny_entry_matches_only_its_own_inbound_cidr():
    entry = NaclEntry(50, "deny", egress=False, protocol="-1", cidr="2001:db8::1/128")

    assert entry.denies("2001:0db8:0:0:0:0:0:1/128")
    assert not entry.denies("2001:db8::2/128")
    assert not NaclEntry(50, "deny", egress=True, cidr="2001:db8::1/128").denies("2001:db8::1/128")
    assert not NaclEntry(50, "deny", egress=False, protocol="6", cidr="10.0.0.1/32").denies(
        "10.0.0.1/32"
    )


def test_allow_entries_before_our_deny_are_reported():
    # Given an allow for 203.0.113.0/24 at 20, an allow for everything at 100
    entries = [
        NaclEntry(20, "allow", egress=False, cidr="203.0.113.0/24"),
        NaclEntry(30, "allow", egress=False, cidr="198.51.100.0/24"),
        NaclEntry(40, "allow", egress=True, cidr="0.0.0.0/0"),
        NaclEntry(100, "allow", egress=False, cidr="0.0.0.0/0"),
    ]

    # When our deny for 203.0.113.7 sits at 50
    # Then only the inbound allow at 20 covers it before 50
    assert shadowing_allows(entries, "203.0.113.7/32", 50) == [20]
    assert shadowing_allows(entries, "2001:db8::1/128", 50) == []


# --- the network ACL's quota of entries -------------------------------------------------------


def test_a_network_acl_at_its_quota_evicts_our_block_that_expires_first():
    # Given a network ACL at its quota of 4 entries, two of them ours, the later created one
    # expiring first, and free numbers left in the range
    early, late = ours(50, 0), ours(51, 5)
    early = OurRule(early.block_id, 50, early.created_at, expires_at=T0 + timedelta(hours=24))
    late = OurRule(late.block_id, 51, late.created_at, expires_at=T0 + timedelta(hours=1))
    used = [50, 51, *DEFAULT_INBOUND, 200]

    # When a number is allocated
    allocation = allocate_rule_number(RANGE, used, [early, late], entry_limit=4)

    # Then the block that expires first gives up its number, though numbers are free
    assert allocation == Allocation(rule_number=51, evicted=late)


def test_the_catch_all_entry_does_not_count_against_the_quota():
    allocation = allocate_rule_number(RANGE, [100, 32767], [], entry_limit=2)

    assert allocation == Allocation(rule_number=50)


def test_a_network_acl_at_its_quota_with_nothing_of_ours_is_full():
    with pytest.raises(NaclFullError, match="network ACL full: it holds 3 entries, its quota of 3"):
        allocate_rule_number(RANGE, [100, 101, 102, 32767], [], entry_limit=3)
