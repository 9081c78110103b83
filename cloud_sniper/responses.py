"""Undo what the pipeline did, with a reason: roll back an incident, release an instance.

Runs outside Lambda (the CLI). The response catalogue's actions are undone through the catalogue
itself (`undo_action`) and the WAF and network ACL blocks are lifted as the expiry run lifts
them, so an undo from the command line and an expiry leave the account and the records alike.
Every function works on the mitigate service's ports (`connect` builds them over a session).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import ActionKind, Model
from services.mitigate import catalogue
from services.mitigate.actions import (
    Block,
    BlockStatus,
    MemberRoleError,
    Ports,
    in_account,
    lift_block,
)
from services.mitigate.adapters import build_ports
from services.mitigate.catalogue import ActionRecord, RecordStatus
from services.mitigate.settings import Settings

# What `actions list` shows of each action, in this order.
ACTION_COLUMNS = (
    "kind",
    "target",
    "incident",
    "applied",
    "expires",
    "status",
    "verified",
    "undone (by, at, why)",
)
UNTIL_RELEASED = "until released"

_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_INCIDENT_ID = re.compile(r"inc-[0-9a-f]{16}")


class ResponseError(Exception):
    """What was asked cannot be undone; the message names it and says why."""


class Undone(Model):
    """One action or block a rollback undid."""

    kind: ActionKind
    target: str
    id: str  # the catalogue record's id, or the block's
    detail: str


class Rollback(Model):
    """What a rollback of an incident did."""

    incident_id: str
    undone_by: str
    reason: str
    at: datetime
    undone: list[Undone] = Field(default_factory=list)
    # Records and blocks that could not be undone, by id: they stay in force.
    failed: dict[str, str] = Field(default_factory=dict)


def connect(session: Any) -> Ports:
    """The mitigate service's ports over a session, with the tables and IP sets by their names."""
    settings = Settings.model_validate(
        {
            "BLOCKS_TABLE": naming.BLOCKS_TABLE,
            "INDICATORS_TABLE": naming.INDICATORS_TABLE,
            "ACTIONS_TABLE": naming.ACTIONS_TABLE,
        }
    )
    return build_ports(settings, session)


def incident_recorded(session: Any, incident_id: str) -> bool:
    """Whether the incidents table holds this incident (its report was written)."""
    try:
        response = session.client("dynamodb").get_item(
            TableName=naming.INCIDENTS_TABLE,
            Key={"incident_id": {"S": incident_id}},
            ProjectionExpression="incident_id",
        )
    except (ClientError, BotoCoreError) as exc:
        raise ResponseError(f"cannot read {naming.INCIDENTS_TABLE}: {exc}") from exc
    return "Item" in response


def list_actions(
    ports: Ports, include_all: bool = False, incident_id: str | None = None
) -> list[ActionRecord]:
    """The catalogue's actions, oldest first: those in force, or all; of one incident if named."""
    records = _records(ports)
    found = records.by_incident(incident_id) if incident_id else records.all()
    if include_all:
        return found
    return [record for record in found if record.status is RecordStatus.ACTIVE]


def action_row(record: ActionRecord) -> tuple[str, ...]:
    """One action as `actions list` prints it, in ACTION_COLUMNS order."""
    verified = {None: "-", True: "yes", False: "no"}[record.verified]
    if record.status is RecordStatus.UNDONE:
        undone = f"{record.undone_by or '?'}, {_time(record.undone_at)}, {record.undo_reason}"
    elif record.status is RecordStatus.EXPIRED:
        undone = f"expired, {_time(record.undone_at)}"
    else:
        undone = "-"
    return (
        record.kind.value,
        record.target,
        record.incident_id,
        _time(record.applied_at),
        _time(record.expires_at) if record.expires_at else UNTIL_RELEASED,
        record.status.value,
        verified,
        undone,
    )


def choose(
    incident_id: str,
    records: Iterable[ActionRecord],
    blocks: Iterable[Block],
    action: str | None = None,
) -> tuple[list[ActionRecord], list[Block]]:
    """What a rollback of an incident undoes: its actions and blocks in force, or the one named.

    `action` is an action id (`kind:target`, as the decision names it), a catalogue record id
    (`kind#target`) or a block id; a WAF block and its network ACL blocks share an action id.
    The newest are undone first.
    """
    records = [record for record in records if record.incident_id == incident_id]
    blocks = [block for block in blocks if block.incident_id == incident_id]
    if action is not None:
        records = [record for record in records if action in (record.action_id, record.record_id)]
        blocks = [block for block in blocks if action in (block.action_id, block.block_id)]
        if not records and not blocks:
            raise ResponseError(
                f"incident {incident_id} has no action {action!r}: `cloud-sniper actions list "
                f"--all --incident {incident_id}` and `cloud-sniper blocks list --all` list them"
            )
    in_force = [record for record in records if record.status is RecordStatus.ACTIVE]
    active = [block for block in blocks if block.status is BlockStatus.ACTIVE]
    in_force.sort(key=lambda record: (record.applied_at, record.record_id), reverse=True)
    active.sort(key=lambda block: (block.created_at, block.block_id), reverse=True)
    return in_force, active


def rollback(
    incident_id: str,
    ports: Ports,
    who: str,
    reason: str,
    now: datetime,
    *,
    recorded: bool,
    action: str | None = None,
) -> Rollback:
    """Undo what an incident did: its catalogue actions, then its blocks, those in force.

    `recorded` says whether the incidents table holds the incident: one it does not hold, and
    that applied nothing, is unknown. One action that cannot be undone does not keep the others
    in force; it stays in force itself and is reported in `failed`.
    """
    who, reason = _who(who), _required(reason, "--reason")
    if not _INCIDENT_ID.fullmatch(incident_id):
        raise ResponseError(f"incident {incident_id!r}: an incident id is inc- and 16 hex digits")
    records = _records(ports).by_incident(incident_id)
    # The blocks table's index by incident holds only the blocks; the store reads them all.
    blocks = [block for block in ports.blocks.all() if block.incident_id == incident_id]
    if not (recorded or records or blocks):
        raise ResponseError(
            f"no incident {incident_id}: it is not in {naming.INCIDENTS_TABLE} and applied "
            "nothing (`cloud-sniper executions list` shows what ran)"
        )

    chosen_records, chosen_blocks = choose(incident_id, records, blocks, action)
    result = Rollback(incident_id=incident_id, undone_by=who, reason=reason, at=now)
    for record in chosen_records:
        try:
            undone = _undo(record, ports, who, reason, now)
        except Exception as exc:  # noqa: BLE001 - reported; it stays in force for another try
            result.failed[record.record_id] = f"{type(exc).__name__}: {exc}"
            continue
        result.undone.append(
            Undone(
                kind=record.kind,
                target=record.target,
                id=record.record_id,
                detail=undone.verification,
            )
        )
    for block in chosen_blocks:
        try:
            detail = _lift(block, ports, now, who, reason)
        except Exception as exc:  # noqa: BLE001 - reported; it stays in force for another try
            result.failed[block.block_id] = f"{type(exc).__name__}: {exc}"
            continue
        result.undone.append(
            Undone(kind=block.kind, target=block.target, id=block.block_id, detail=detail)
        )
    return result


def release(instance_id: str, ports: Ports, who: str, reason: str, now: datetime) -> ActionRecord:
    """Undo the isolation of an instance: its security groups and the rest put back."""
    who, reason = _who(who), _required(reason, "--reason")
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise ResponseError(
            f"instance {instance_id!r}: an instance id is i- and 8 or 17 hex digits"
        )
    record_id = catalogue.record_id(ActionKind.ISOLATE_INSTANCE, instance_id)
    record = _records(ports).get(record_id)
    if record is None:
        raise ResponseError(
            f"instance {instance_id} is not isolated: Cloud Sniper never isolated it"
        )
    if record.status is not RecordStatus.ACTIVE:
        by = f" by {record.undone_by}" if record.undone_by else ""
        raise ResponseError(
            f"instance {instance_id} is not isolated: its isolation by {record.incident_id} was "
            f"{record.status.value} at {_time(record.undone_at)}{by}"
        )
    try:
        return _undo(record, ports, who, reason, now)
    except MemberRoleError as exc:
        raise ResponseError(f"instance {instance_id} cannot be released: {exc}") from exc


def _undo(record: ActionRecord, ports: Ports, who: str, reason: str, now: datetime) -> ActionRecord:
    if record.kind not in catalogue.catalogue():
        raise ResponseError(f"{record.record_id}: this version has no {record.kind.value} to undo")
    if ports.clients is None:
        raise ResponseError("the mitigate ports have no AWS clients for the catalogue")
    # Undone in the account it was applied in: a member account's through its member role,
    # which trusts a person's role when the member stack's ResponderPrincipalArns names it.
    clients = in_account(ports, record.account_id, record.incident_id).clients
    assert clients is not None  # in_account keeps or replaces the clients checked above
    undone = catalogue.undo_action(record, clients, who, reason, now)
    _records(ports).save(undone)
    return undone


def _lift(block: Block, ports: Ports, now: datetime, who: str, reason: str) -> str:
    if block.kind is ActionKind.WAF_BLOCK:
        what = f"{block.cidr} from WAF IP set {block.ip_set}"
    else:
        what = f"the deny of {block.cidr} from {block.nacl_id} (rule {block.rule_number})"
    acting = in_account(ports, block.account_id, block.incident_id)
    if not lift_block(block, now, acting, "rolled_back", by=who, note=reason):
        # The expiry run or another rollback marked it removed between our read and now.
        return f"lifted {what}; it had been lifted meanwhile"
    return f"lifted {what}"


def _records(ports: Ports) -> catalogue.RecordStore:
    if ports.records is None:
        raise ResponseError("the mitigate ports have no record store for the actions table")
    return ports.records


def _who(who: str) -> str:
    who = who.strip()
    if not who:
        raise ResponseError("the caller's identity is unknown: an undo is recorded with who did it")
    return who


def _required(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        raise ResponseError(f"{name} is required and cannot be empty")
    return value


def _time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"
