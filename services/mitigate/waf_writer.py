"""The WAF writer: the IP set changes mitigate and expire ask for, one update per set per batch.

Mitigate and expire put one message per change on the WAF changes queue; the writer, alone on
that queue, receives them in batches (one per interval of its event source mapping) and turns
each batch into at most one update of each IP set. A change is judged against the blocks table
as the writer reads it, since a standard queue may deliver a message twice or late.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal, Protocol

from aws_lambda_powertools import Logger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cloud_sniper.domain.models import Model

logger = Logger(child=True)

# WAFv2's quota of addresses in one IP set.
IP_SET_ADDRESS_LIMIT = 10_000


class IpSetChange(Model):
    """One change asked of the writer: add or remove a CIDR in the IP set of its IP version."""

    op: Literal["add", "remove"]
    ip_version: Literal[4, 6]
    cidr: str
    block_id: str = Field(min_length=1)

    @field_validator("cidr")
    @classmethod
    def _network(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value.strip()))
        except ValueError as exc:
            raise ValueError(f"cidr {value!r} is not an IP network") from exc

    @model_validator(mode="after")
    def _same_version(self) -> IpSetChange:
        version = ipaddress.ip_network(self.cidr).version
        if version != self.ip_version:
            raise ValueError(f"cidr {self.cidr} is IPv{version}, not IPv{self.ip_version}")
        return self


class SqsAttributes(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sent_timestamp: Annotated[int, Field(alias="SentTimestamp")]


class SqsRecord(BaseModel):
    """The part of an SQS record the writer reads (AWS's format: other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    message_id: Annotated[str, Field(alias="messageId")]
    body: str
    attributes: SqsAttributes


@dataclass(frozen=True)
class QueuedChange:
    """A change as the queue delivered it: its message and when SQS received it."""

    message_id: str
    sent_at: datetime
    change: IpSetChange


@dataclass(frozen=True)
class BlockState:
    """What the blocks table says of a block when the writer reads it."""

    active: bool
    created_at: datetime


@dataclass(frozen=True)
class Merge:
    """A set's addresses with a batch's net changes: what was added, removed and refused."""

    addresses: list[str]
    added: list[str]
    removed: list[str]
    refused: list[str]  # additions past the set's quota of addresses

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


@dataclass
class SetChanges:
    """The net effect of a batch on one IP set, with the messages behind it."""

    ip_version: int
    adds: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    # The blocks to mark written once their CIDR is in the set, by CIDR.
    to_mark: dict[str, str] = field(default_factory=dict)
    # Every message about a CIDR, stale ones included: each is done when its CIDR is settled.
    messages: dict[str, list[str]] = field(default_factory=dict)
    stale: int = 0

    @property
    def message_ids(self) -> list[str]:
        return [message_id for ids in self.messages.values() for message_id in ids]


@dataclass
class WriteReport:
    """What one batch came to: the messages to hand back to the queue, and the figures."""

    messages: int = 0
    failed: list[str] = field(default_factory=list)
    writes: int = 0
    added: int = 0
    removed: int = 0
    refused: int = 0
    stale: int = 0


class IpSetWriter(Protocol):
    def set_name(self, ip_version: int) -> str: ...

    def apply_changes(
        self, ip_version: int, adds: Sequence[str], removes: Sequence[str]
    ) -> Merge: ...


class WrittenBlocks(Protocol):
    def states(self, block_ids: Iterable[str]) -> dict[str, BlockState]: ...

    def mark_written(self, block_id: str, at: datetime) -> bool: ...


@dataclass(frozen=True)
class WriterPorts:
    ip_sets: IpSetWriter
    blocks: WrittenBlocks


def parse_records(records: Sequence[Mapping[str, object]]) -> tuple[list[QueuedChange], list[str]]:
    """The changes of an SQS batch, and the ids of the messages that are no change at all."""
    changes: list[QueuedChange] = []
    invalid: list[str] = []
    for position, raw in enumerate(records):
        try:
            record = SqsRecord.model_validate(raw)
        except ValidationError as exc:
            message_id = raw.get("messageId") if isinstance(raw, Mapping) else None
            logger.error("invalid record", extra={"position": position, "error": str(exc)})
            if isinstance(message_id, str):
                invalid.append(message_id)
            continue
        try:
            change = IpSetChange.model_validate_json(record.body)
        except ValidationError as exc:
            # Kept failing, it ends in the dead-letter queue for a person to read.
            logger.error(
                "invalid change", extra={"message_id": record.message_id, "error": str(exc)}
            )
            invalid.append(record.message_id)
            continue
        sent_at = datetime.fromtimestamp(record.attributes.sent_timestamp / 1000, UTC)
        changes.append(QueuedChange(record.message_id, sent_at, change))
    return changes, invalid


def net_changes(
    queued: Sequence[QueuedChange], blocks: Mapping[str, BlockState]
) -> dict[int, SetChanges]:
    """Each IP set's net change: for each CIDR, the last change that still holds wins.

    An addition holds while its block is active. A removal holds unless the block was applied
    anew after it was asked (a late or repeated removal must not lift the new block). Changes
    are ordered by the time SQS received them, then by their place in the batch.
    """
    plans: dict[int, SetChanges] = {}
    latest: dict[tuple[int, str], QueuedChange] = {}
    ordered = sorted(enumerate(queued), key=lambda item: (item[1].sent_at, item[0]))
    for _, item in ordered:
        change = item.change
        plan = plans.setdefault(change.ip_version, SetChanges(change.ip_version))
        plan.messages.setdefault(change.cidr, []).append(item.message_id)
        if _holds(item, blocks.get(change.block_id)):
            latest[(change.ip_version, change.cidr)] = item
        else:
            plan.stale += 1

    for (version, cidr), item in latest.items():
        plan = plans[version]
        if item.change.op == "add":
            plan.adds.append(cidr)
            plan.to_mark[cidr] = item.change.block_id
        else:
            plan.removes.append(cidr)
    return plans


def merge_addresses(
    current: Sequence[str],
    adds: Sequence[str],
    removes: Sequence[str],
    limit: int = IP_SET_ADDRESS_LIMIT,
) -> Merge:
    """A set's addresses after removing then adding, never past `limit` addresses.

    Additions past the limit are refused, the later ones first; CIDRs compare as networks, so
    `192.0.2.1/32` in the set is the address `192.0.2.1/32` asked for however it is written.
    """
    present = {_key(address): address for address in current}
    removed = []
    for cidr in removes:
        if present.pop(_key(cidr), None) is not None:
            removed.append(cidr)

    added, refused = [], []
    for cidr in adds:
        key = _key(cidr)
        if key in present:
            continue
        if len(present) >= limit:
            refused.append(cidr)
            continue
        present[key] = cidr
        added.append(cidr)
    return Merge(list(present.values()), added, removed, refused)


def write_changes(queued: Sequence[QueuedChange], ports: WriterPorts, now: datetime) -> WriteReport:
    """Apply a batch: one update per IP set, then mark the blocks written.

    A set that cannot be written hands back all its messages, and only its own; an addition
    refused by a full set hands back its messages. Reading the blocks is the first step, so a
    failure there raises and the whole batch returns to the queue.
    """
    report = WriteReport(messages=len(queued))
    states = ports.blocks.states({item.change.block_id for item in queued})
    for version, plan in sorted(net_changes(queued, states).items()):
        report.stale += plan.stale
        set_name = ports.ip_sets.set_name(version)
        try:
            merge = ports.ip_sets.apply_changes(version, plan.adds, plan.removes)
            refused = set(merge.refused)
            for cidr, block_id in plan.to_mark.items():
                if cidr not in refused:
                    ports.blocks.mark_written(block_id, now)
        except Exception as exc:  # one set's failure must not hold the other's changes back
            logger.exception("ip set write failed", extra={"ip_set": set_name, "error": str(exc)})
            report.failed += plan.message_ids
            continue

        report.writes += int(merge.changed)
        report.added += len(merge.added)
        report.removed += len(merge.removed)
        report.refused += len(merge.refused)
        if merge.refused:
            logger.error(
                "ip set full",
                extra={
                    "ip_set": set_name,
                    "limit": IP_SET_ADDRESS_LIMIT,
                    "refused": len(merge.refused),
                    "first_refused": merge.refused[0],
                },
            )
            report.failed += [m for cidr in merge.refused for m in plan.messages[cidr]]
        logger.info(
            "ip set written" if merge.changed else "ip set unchanged",
            extra={
                "ip_set": set_name,
                "added": len(merge.added),
                "removed": len(merge.removed),
                "size": len(merge.addresses),
            },
        )
    return report


def _holds(item: QueuedChange, block: BlockState | None) -> bool:
    if item.change.op == "add":
        return block is not None and block.active
    # Removals are asked before the block is marked removed, so an active block applied no
    # later than the removal was asked is the one being lifted.
    return block is None or not block.active or block.created_at <= item.sent_at


def _key(address: str) -> str:
    try:
        return str(ipaddress.ip_network(address.strip(), strict=False))
    except ValueError:
        return address
