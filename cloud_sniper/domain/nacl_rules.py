"""Rule numbers for the inbound deny entries Cloud Sniper writes in network ACLs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

# A network ACL evaluates its entries in ascending rule number; 32767 is the catch-all "*" entry
# AWS keeps last, so the highest number a rule may use is 32766.
MIN_RULE_NUMBER = 1
MAX_RULE_NUMBER = 32766
# AWS's default quota of rules per direction in one network ACL (adjustable up to 40); the
# catch-all entry does not count.
DEFAULT_ENTRY_LIMIT = 20

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class NaclRuleRangeError(ValueError):
    """The configured rule range is not "<low>-<high>" within the numbers a network ACL allows."""


class NaclRangeFullError(Exception):
    """Every rule number of the range is taken by entries that are not ours to evict."""


class NaclFullError(NaclRangeFullError):
    """The network ACL holds its quota of entries, and none of them is ours to evict."""


@dataclass(frozen=True)
class RuleRange:
    """The rule numbers Cloud Sniper may use, both ends included."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not MIN_RULE_NUMBER <= self.low <= self.high <= MAX_RULE_NUMBER:
            raise NaclRuleRangeError(
                f"rule range {self.low}-{self.high} must satisfy "
                f"{MIN_RULE_NUMBER} <= low <= high <= {MAX_RULE_NUMBER}"
            )

    @classmethod
    def parse(cls, text: str) -> RuleRange:
        """Read a range written "50-99"."""
        match = _RANGE.match(text or "")
        if match is None:
            raise NaclRuleRangeError(f"rule range {text!r} is not written <low>-<high>, e.g. 50-99")
        return cls(int(match.group(1)), int(match.group(2)))

    def __contains__(self, rule_number: object) -> bool:
        return isinstance(rule_number, int) and self.low <= rule_number <= self.high

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class NaclEntry:
    """One inbound or outbound entry of a network ACL, as described by EC2."""

    rule_number: int
    rule_action: str
    egress: bool
    protocol: str = "-1"
    cidr: str | None = None

    def denies(self, cidr: str) -> bool:
        """Tell whether this is an inbound all-protocol deny of exactly that CIDR."""
        return (
            not self.egress
            and self.rule_action == "deny"
            and self.protocol == "-1"
            and self.cidr is not None
            and _same_network(self.cidr, cidr)
        )


@dataclass(frozen=True)
class OurRule:
    """An active block of ours holding a rule number in a network ACL."""

    block_id: str
    rule_number: int
    created_at: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Allocation:
    """The rule number to use, and the block of ours to evict first when the range was full."""

    rule_number: int
    evicted: OurRule | None = None


def inbound(entries: Iterable[NaclEntry]) -> list[NaclEntry]:
    """The inbound entries (Egress false) in the order the network ACL evaluates them."""
    return sorted((entry for entry in entries if not entry.egress), key=lambda e: e.rule_number)


def allocate_rule_number(
    rule_range: RuleRange,
    used: Iterable[int],
    ours: Iterable[OurRule],
    entry_limit: int | None = None,
) -> Allocation:
    """Choose the rule number for a new deny entry.

    `used` holds every rule number of the network ACL in that direction, ours and others'. The
    lowest number of the range nobody uses wins; when there is none, or when the network ACL
    already holds `entry_limit` entries, the block of ours that expires first gives up its
    number. A number held by an entry that is not ours is never chosen.
    """
    used = set(used)
    ours_in_range = [rule for rule in ours if rule.rule_number in rule_range]
    taken = used | {rule.rule_number for rule in ours_in_range}
    counted = {number for number in used if number <= MAX_RULE_NUMBER}
    full = entry_limit is not None and len(counted) >= entry_limit

    if not full:
        for number in range(rule_range.low, rule_range.high + 1):
            if number not in taken:
                return Allocation(rule_number=number)

    if not ours_in_range:
        if full:
            raise NaclFullError(
                f"network ACL full: it holds {len(counted)} entries, its quota of {entry_limit}, "
                "and none is Cloud Sniper's to evict"
            )
        raise NaclRangeFullError(
            f"every rule number of {rule_range} is used by network ACL entries "
            "Cloud Sniper did not create; widen NACL_RULE_RANGE or free a number"
        )
    first = min(ours_in_range, key=_eviction_order)
    return Allocation(rule_number=first.rule_number, evicted=first)


def _eviction_order(rule: OurRule) -> tuple[datetime, datetime, int]:
    # The block that expires first goes first: it was going to be lifted soonest anyway.
    return (rule.expires_at or rule.created_at, rule.created_at, rule.rule_number)


def shadowing_allows(entries: Iterable[NaclEntry], cidr: str, rule_number: int) -> list[int]:
    """Inbound allow entries evaluated before `rule_number` that cover part of `cidr`.

    Such an entry lets the traffic through before our deny is reached, so the block is weaker
    than it looks: the range should sit below the account's allow rules.
    """
    network = ipaddress.ip_network(cidr)
    shadowing = []
    for entry in inbound(entries):
        if entry.rule_number >= rule_number:
            break
        if entry.rule_action != "allow" or entry.cidr is None:
            continue
        other = ipaddress.ip_network(entry.cidr)
        if other.version == network.version and other.overlaps(network):
            shadowing.append(entry.rule_number)
    return shadowing


def _same_network(left: str, right: str) -> bool:
    try:
        return ipaddress.ip_network(left) == ipaddress.ip_network(right)
    except ValueError:
        return False
