"""Apply the blocks a decision asks for, record them with an expiry, and lift them when due."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Literal, Protocol

from aws_lambda_powertools import Logger
from pydantic import Field

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import (
    ActionKind,
    ActionResult,
    ActionStatus,
    Decision,
    Finding,
    IndicatorKind,
    Model,
    PlannedAction,
)
from cloud_sniper.domain.nacl_rules import (
    DEFAULT_ENTRY_LIMIT,
    NaclEntry,
    NaclRangeFullError,
    OurRule,
    RuleRange,
    allocate_rule_number,
    inbound,
    shadowing_allows,
)
from services.mitigate import catalogue

logger = Logger(child=True)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A deny wider than this would cut off far more than the attacker the decision named.
MIN_PREFIX_LENGTH = {4: 16, 6: 48}

# The start of the message of a block refused by a network ACL holding its quota of entries.
NACL_FULL = "network ACL full"

# How often to look for a free rule number again when a concurrent execution took ours.
NACL_ALLOCATION_ATTEMPTS = 3


class MitigationError(Exception):
    """An action could not be applied, and retrying it will not help."""


class TargetNotFoundError(MitigationError):
    """Something the action needs (subnet, network ACL, IP set) does not exist in the account."""


class RuleNumberTakenError(MitigationError):
    """The network ACL already holds an inbound entry with that rule number."""


class MemberRoleError(MitigationError):
    """The member role of the finding's account cannot be assumed: missing, or not trusting us."""


_ACCOUNT_ID = re.compile(r"\d{12}")


# Why a block left: its expiry passed, its rule number was needed, or a person rolled it back.
RemovedReason = Literal["expired", "evicted", "rolled_back"]


class BlockStatus(StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


class Block(Model):
    """A block we applied, as the blocks table records it."""

    block_id: str
    kind: ActionKind
    target: str  # the address as the decision named it: a CIDR, /32 or /128 for one host
    cidr: str
    ip_version: Literal[4, 6]
    ip_set: str | None = None
    nacl_id: str | None = None
    subnet_ids: list[str] = Field(default_factory=list)
    rule_number: int | None = None
    incident_id: str
    finding_id: str
    action_id: str
    created_at: datetime
    expires_at: datetime
    # The finding update ("<finding id>@<update time>") that set the expiry last: a retry of its
    # execution renews nothing, a later update or another finding does.
    expiry_set_by: str | None = None
    renewed_at: datetime | None = None
    status: BlockStatus = BlockStatus.ACTIVE
    removed_at: datetime | None = None
    removed_reason: RemovedReason | None = None
    # Who lifted it before its expiry, and why: a person's rollback.
    removed_by: str | None = None
    removal_note: str | None = None
    # When the WAF writer put the address in its IP set; None while the change is queued.
    written_at: datetime | None = None
    # The member account whose network ACL holds the entry; None for the administrator's own.
    account_id: str | None = None

    @property
    def indicator_kind(self) -> IndicatorKind:
        return IndicatorKind.IPV4 if self.ip_version == 4 else IndicatorKind.IPV6

    @property
    def indicator_value(self) -> str:
        """The knowledge base's value: the bare address for one host, as enrich records it."""
        network = ipaddress.ip_network(self.target, strict=False)
        single = network.num_addresses == 1
        return str(network.network_address) if single else str(network)


class ExpiryReport(Model):
    """What an expiry run did."""

    checked: int = 0
    expired: list[str] = Field(default_factory=list)
    remaining: int = 0
    failed: dict[str, str] = Field(default_factory=dict)


def waf_block_id(set_name: str, cidr: str) -> str:
    return f"waf#{set_name}#{cidr}"


def nacl_block_id(nacl_id: str, cidr: str) -> str:
    return f"nacl#{nacl_id}#{cidr}"


def archived_block_id(block: Block) -> str:
    """The id a lifted block keeps in the history once the same block is applied again."""
    return f"{block.block_id}@{block.created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class IpSets(Protocol):
    """The WAF IP sets, as mitigate and expire change them: by asking the WAF writer."""

    def set_name(self, ip_version: int) -> str: ...

    def add(self, ip_version: int, cidr: str) -> object: ...

    def remove(self, ip_version: int, cidr: str) -> object: ...


class NetworkAcls(Protocol):
    def for_subnets(self, subnet_ids: list[str]) -> dict[str, str]: ...

    def entries(self, nacl_id: str) -> list[NaclEntry]: ...

    def create_deny(self, nacl_id: str, rule_number: int, cidr: str) -> None: ...

    def delete_deny(self, nacl_id: str, rule_number: int, cidr: str) -> bool: ...


class BlockStore(Protocol):
    def get(self, block_id: str) -> Block | None: ...

    def put_new(self, block: Block) -> bool: ...

    def renew(self, block_id: str, expires_at: datetime, set_by: str, at: datetime) -> bool: ...

    def archive(self, block: Block) -> None: ...

    def active(self, nacl_id: str | None = None) -> list[Block]: ...

    def all(self) -> list[Block]: ...

    def mark_removed(
        self,
        block_id: str,
        reason: RemovedReason,
        at: datetime,
        by: str | None = None,
        note: str | None = None,
    ) -> bool: ...

    def discard(self, block: Block) -> bool: ...


class KnowledgeBase(Protocol):
    def mark_blocked(self, kind: IndicatorKind, value: str, until: datetime) -> bool: ...

    def mark_expired(self, kind: IndicatorKind, value: str, at: datetime) -> bool: ...


class MemberAccounts(Protocol):
    """The other accounts of the organization, reached through the member role in each."""

    def own_account(self) -> str: ...

    def network_acls(self, account_id: str, session_name: str) -> NetworkAcls: ...

    def clients(self, account_id: str, session_name: str) -> catalogue.Clients: ...


@dataclass(frozen=True)
class Ports:
    """The adapters and settings the actions work with."""

    ip_sets: IpSets
    network_acls: NetworkAcls
    blocks: BlockStore
    knowledge: KnowledgeBase
    rule_range: RuleRange
    default_ttl_seconds: int
    # AWS's quota of entries per direction in one network ACL.
    nacl_entry_limit: int = DEFAULT_ENTRY_LIMIT
    # The response catalogue's records, and the AWS clients its actions build adapters on.
    records: catalogue.RecordStore | None = None
    clients: catalogue.Clients | None = None
    # The member accounts; without them every finding is acted on in this account.
    members: MemberAccounts | None = None


def member_account(account_id: str, ports: Ports) -> str | None:
    """The account to act in for a finding of `account_id`: None when it is our own."""
    if ports.members is None or account_id == ports.members.own_account():
        return None
    return account_id


def in_account(ports: Ports, account_id: str | None, incident_id: str) -> Ports:
    """The ports acting in a member account: its network ACLs and clients, our tables and sets.

    Raises MemberRoleError when the member role cannot be assumed there.
    """
    if account_id is None or ports.members is None:
        return ports
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise MitigationError(f"account {account_id!r} is not an AWS account id (12 digits)")
    session_name = naming.member_session_name(incident_id)
    return dataclasses.replace(
        ports,
        network_acls=ports.members.network_acls(account_id, session_name),
        clients=ports.members.clients(account_id, session_name),
    )


@dataclass(frozen=True)
class _Run:
    """One planned action being applied."""

    finding: Finding
    action: PlannedAction
    incident_id: str
    now: datetime
    expires_at: datetime
    ports: Ports
    # The member account the action acts in (blocks in WAF never do); None for our own.
    account_id: str | None = None

    @property
    def update(self) -> str:
        """The finding update this run is for: the retries of one execution share it."""
        return f"{self.finding.id}@{self.finding.updated_at.isoformat()}"

    def result(
        self,
        status: ActionStatus,
        detail: str,
        block_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> ActionResult:
        return ActionResult(
            action_id=self.action.id,
            kind=self.action.kind,
            target=self.action.target,
            status=status,
            detail=detail,
            block_id=block_id,
            expires_at=expires_at,
            at=self.now,
        )

    def block(self, block_id: str, network: Network, **where: object) -> Block:
        return Block(
            block_id=block_id,
            kind=self.action.kind,
            target=self.action.target,
            cidr=str(network),
            ip_version=network.version,
            incident_id=self.incident_id,
            finding_id=self.finding.id,
            action_id=self.action.id,
            created_at=self.now,
            expires_at=self.expires_at,
            expiry_set_by=self.update,
            account_id=self.account_id,
            **where,
        )


def apply_actions(
    finding: Finding,
    decision: Decision,
    incident_id: str,
    dry_run: bool,
    now: datetime,
    ports: Ports,
) -> list[ActionResult]:
    """Apply each planned action and say what became of it.

    A failing action does not stop the others; a transient AWS error does, so the state machine
    retries the whole step, which is safe because applying a block twice changes nothing. A block
    in force asked for again by a later finding update, or by another finding, has its expiry
    renewed; one lifted since is applied anew. A NACL block yields one result per network ACL of
    the resource's subnets.
    """
    results: list[ActionResult] = []
    # A finding of a member account is acted on there, except in the WAF IP sets, which are ours.
    account = None
    if not dry_run and any(a.kind is not ActionKind.WAF_BLOCK for a in decision.actions):
        account = member_account(finding.account_id, ports)
    for action in decision.actions:
        ttl = action.ttl_seconds or ports.default_ttl_seconds
        where = None if action.kind is ActionKind.WAF_BLOCK else account
        run = _Run(finding, action, incident_id, now, now + timedelta(seconds=ttl), ports, where)
        done = _apply(run, dry_run)
        if action.kind is ActionKind.NACL_BLOCK and not dry_run:
            done += _waf_fallback(run, done, decision)
        for result in done:
            logger.info(
                "action done",
                extra={
                    "action_id": result.action_id,
                    "action": result.kind.value,
                    "target": result.target,
                    "status": result.status.value,
                    "block_id": result.block_id,
                },
            )
            results.append(result)
    return results


def expire_blocks(now: datetime, ports: Ports) -> ExpiryReport:
    """Lift every active block whose expiry has passed, and mark it removed."""
    active = ports.blocks.active()
    due = sorted((block for block in active if block.expires_at <= now), key=_expiry_order)
    report = ExpiryReport(checked=len(active), remaining=len(active) - len(due))

    for block in due:
        # One block that cannot be lifted must not keep the others in place; the next run
        # tries it again since it stays active.
        try:
            _lift(block, now, in_account(ports, block.account_id, block.incident_id))
        except Exception as exc:
            logger.exception("block expiry failed", extra={"block_id": block.block_id})
            report.failed[block.block_id] = f"{type(exc).__name__}: {exc}"
        else:
            report.expired.append(block.block_id)

    if ports.records is not None and ports.clients is not None:
        report.failed.update(
            catalogue.expire_records(
                ports.records, ports.clients, now, clients_for=partial(_clients_of, ports)
            )
        )

    logger.info(
        "expiry done",
        extra={
            "checked": report.checked,
            "expired": len(report.expired),
            "remaining": report.remaining,
            "failed": len(report.failed),
        },
    )
    return report


def _clients_of(ports: Ports, record: catalogue.ActionRecord) -> catalogue.Clients:
    """The clients acting in the account a catalogue record was applied in."""
    clients = in_account(ports, record.account_id, record.incident_id).clients
    assert clients is not None  # expire_records runs only with clients
    return clients


def list_blocks(ports: Ports, active_only: bool = True) -> list[Block]:
    """The recorded blocks, oldest first."""
    blocks = ports.blocks.active() if active_only else ports.blocks.all()
    return sorted(blocks, key=lambda block: (block.created_at, block.block_id))


def _apply(run: _Run, dry_run: bool) -> list[ActionResult]:
    if not dry_run and run.account_id is not None:
        try:
            run = dataclasses.replace(
                run, ports=in_account(run.ports, run.account_id, run.incident_id)
            )
        except MitigationError as exc:
            logger.warning(
                "member role failed", extra={"action_id": run.action.id, "error": str(exc)}
            )
            return [run.result(ActionStatus.FAILED, str(exc))]
    if run.action.kind not in (ActionKind.WAF_BLOCK, ActionKind.NACL_BLOCK):
        return [_apply_from_catalogue(run, dry_run)]
    try:
        network = _network(run.action.target)
    except MitigationError as exc:
        return [run.result(ActionStatus.FAILED, str(exc))]

    if dry_run:
        return [_plan(run, network)]
    if run.action.kind is ActionKind.WAF_BLOCK:
        return _guarded(run, lambda: [_block_in_waf(run, network)])
    return _guarded(run, lambda: _block_in_nacls(run, network))


def _waf_fallback(run: _Run, results: list[ActionResult], decision: Decision) -> list[ActionResult]:
    """A WAF block in place of network ACL blocks that a full network ACL refused.

    Nothing is added when the decision blocks the address in WAF already.
    """
    full = [r for r in results if r.status is ActionStatus.FAILED and NACL_FULL in r.detail]
    asked = any(
        a.kind is ActionKind.WAF_BLOCK and a.target == run.action.target for a in decision.actions
    )
    if not full or asked:
        return []
    fallback = PlannedAction(
        id=f"{ActionKind.WAF_BLOCK.value}:{run.action.target}",
        kind=ActionKind.WAF_BLOCK,
        target=run.action.target,
        ttl_seconds=run.action.ttl_seconds,
    )
    results = _apply(dataclasses.replace(run, action=fallback, account_id=None), dry_run=False)
    return [
        r.model_copy(update={"detail": f"in place of the full network ACL: {r.detail}"})
        for r in results
    ]


def _apply_from_catalogue(run: _Run, dry_run: bool) -> ActionResult:
    ports = run.ports
    if ports.records is None or ports.clients is None:
        return run.result(ActionStatus.UNAVAILABLE, f"{run.action.kind.value}: not configured")
    action = catalogue.catalogue().get(run.action.kind)
    expires = action is not None and action.expires
    unit = catalogue.ActionRun(
        finding=run.finding,
        action=run.action,
        incident_id=run.incident_id,
        now=run.now,
        expires_at=run.expires_at if expires else None,
        clients=ports.clients,
        account_id=run.account_id,
    )
    return catalogue.run_action(unit, ports.records, dry_run)


def _guarded(run: _Run, apply: Callable[[], list[ActionResult]]) -> list[ActionResult]:
    """Turn a permanent failure into the action's result; transient errors go up."""
    try:
        return apply()
    except TargetNotFoundError as exc:
        return [run.result(ActionStatus.NOT_FOUND, str(exc))]
    except (MitigationError, NaclRangeFullError) as exc:
        logger.warning("action failed", extra={"action_id": run.action.id, "error": str(exc)})
        return [run.result(ActionStatus.FAILED, str(exc))]


def _network(target: str) -> Network:
    try:
        network = ipaddress.ip_network(target.strip())
    except ValueError as exc:
        raise MitigationError(f"target {target!r} is not an IP address or network") from exc
    if network.prefixlen < MIN_PREFIX_LENGTH[network.version]:
        raise MitigationError(
            f"target {target} is wider than /{MIN_PREFIX_LENGTH[network.version]}; "
            "only addresses and small networks are blocked"
        )
    return network


def _plan(run: _Run, network: Network) -> ActionResult:
    if run.action.kind is ActionKind.WAF_BLOCK:
        set_name = run.ports.ip_sets.set_name(network.version)
        return run.result(
            ActionStatus.PLANNED,
            f"dry run: would add {network} to WAF IP set {set_name}",
            block_id=waf_block_id(set_name, str(network)),
            expires_at=run.expires_at,
        )
    subnets = ", ".join(run.finding.resource.subnet_ids) or "none named by the finding"
    return run.result(
        ActionStatus.PLANNED,
        f"dry run: would deny {network} inbound in the network ACLs of subnets {subnets}",
        expires_at=run.expires_at,
    )


def _block_in_waf(run: _Run, network: Network) -> ActionResult:
    ports, cidr = run.ports, str(network)
    set_name = ports.ip_sets.set_name(network.version)
    block_id = waf_block_id(set_name, cidr)
    in_force = _in_force(run, block_id)
    if in_force is not None:
        if in_force.status is ActionStatus.QUEUED:
            # The attempt that recorded it may have failed before asking the writer; asked
            # twice, the writer adds the address once.
            ports.ip_sets.add(network.version, cidr)
        return in_force

    # Recorded first, then asked of the writer: an address asked for and never recorded would
    # stay in the set with no expiry to lift it, whereas a record is found again by a retry.
    block = run.block(block_id, network, ip_set=set_name)
    if not _record(run, block):
        return _already_active(run, block)
    try:
        ports.ip_sets.add(network.version, cidr)
    except Exception:
        _discard(run, block)
        raise
    detail = f"asked the WAF writer to add {cidr} to WAF IP set {set_name}"
    return run.result(ActionStatus.QUEUED, detail, block_id, block.expires_at)


def _discard(run: _Run, block: Block) -> None:
    """Forget a block the writer was never asked for, so that no report shows it in force."""
    # TODO(waf-writer): the knowledge base keeps the "blocked" _record gave it until the retry
    # or the next delivery; a run that gives up leaves it saying so until that expiry.
    try:
        run.ports.blocks.discard(block)
    except Exception:  # the error that made the discard necessary is the one to report
        logger.exception("block discard failed", extra={"block_id": block.block_id})


def _block_in_nacls(run: _Run, network: Network) -> list[ActionResult]:
    resource = run.finding.resource
    if not resource.subnet_ids:
        what = resource.instance_id or resource.kind
        detail = f"the finding names no subnet for {what}, so no network ACL to write"
        return [run.result(ActionStatus.NOT_FOUND, detail)]

    nacl_of = run.ports.network_acls.for_subnets(resource.subnet_ids)
    results = [
        run.result(
            ActionStatus.NOT_FOUND,
            f"subnet {subnet_id} not found: no network ACL is associated with it",
        )
        for subnet_id in resource.subnet_ids
        if subnet_id not in nacl_of
    ]

    subnets_of: dict[str, list[str]] = {}
    for subnet_id, nacl_id in nacl_of.items():
        subnets_of.setdefault(nacl_id, []).append(subnet_id)
    for nacl_id, subnet_ids in sorted(subnets_of.items()):
        # Each network ACL stands alone: one that fails leaves the others blocked.
        apply = partial(_as_list, _block_in_nacl, run, network, nacl_id, sorted(subnet_ids))
        results.extend(_guarded(run, apply))
    return results


def _as_list(apply: Callable[..., ActionResult], *args: object) -> list[ActionResult]:
    return [apply(*args)]


def _block_in_nacl(
    run: _Run, network: Network, nacl_id: str, subnet_ids: list[str]
) -> ActionResult:
    ports, cidr = run.ports, str(network)
    block_id = nacl_block_id(nacl_id, cidr)
    in_force = _in_force(run, block_id)
    if in_force is not None:
        return in_force

    for _ in range(NACL_ALLOCATION_ATTEMPTS):
        entries = inbound(ports.network_acls.entries(nacl_id))
        present = next((entry for entry in entries if entry.denies(cidr)), None)
        if present is not None:
            return _adopt(run, network, nacl_id, subnet_ids, present)

        allocation = allocate_rule_number(
            ports.rule_range,
            [entry.rule_number for entry in entries],
            _ours(ports, nacl_id, entries),
            ports.nacl_entry_limit,
        )
        if allocation.evicted is not None:
            _evict(run, nacl_id, allocation.evicted.block_id)
        try:
            ports.network_acls.create_deny(nacl_id, allocation.rule_number, cidr)
        except RuleNumberTakenError:
            # Another execution wrote that number between our read and our write: read again.
            logger.info(
                "rule number taken", extra={"nacl_id": nacl_id, "rule": allocation.rule_number}
            )
            continue
        break
    else:
        raise TransientAwsError(f"the inbound rule numbers of {nacl_id} kept changing")

    block = run.block(
        block_id,
        network,
        nacl_id=nacl_id,
        subnet_ids=subnet_ids,
        rule_number=allocation.rule_number,
    )
    if not _record(run, block):
        return _already_active(run, block)
    detail = f"denied {cidr} inbound in {nacl_id} with rule {allocation.rule_number}"
    if allocation.evicted is not None:
        detail += f"; evicted the oldest block {allocation.evicted.block_id} to free the number"
    return run.result(
        ActionStatus.APPLIED,
        detail + _shadow_note(entries, cidr, allocation.rule_number),
        block_id,
        block.expires_at,
    )


def _adopt(
    run: _Run, network: Network, nacl_id: str, subnet_ids: list[str], entry: NaclEntry
) -> ActionResult:
    """Account for a deny entry of that CIDR the network ACL already holds."""
    cidr = str(network)
    if entry.rule_number not in run.ports.rule_range:
        detail = f"{cidr} is already denied in {nacl_id} by rule {entry.rule_number}, not ours"
        return run.result(ActionStatus.ALREADY_APPLIED, detail)

    # Inside our range it is ours, left by an attempt that failed before recording it.
    block_id = nacl_block_id(nacl_id, cidr)
    block = run.block(
        block_id, network, nacl_id=nacl_id, subnet_ids=subnet_ids, rule_number=entry.rule_number
    )
    if not _record(run, block):
        return _already_active(run, block)
    detail = f"{cidr} was already denied in {nacl_id} by rule {entry.rule_number}; recorded"
    return run.result(ActionStatus.ALREADY_APPLIED, detail, block_id, block.expires_at)


def _ours(ports: Ports, nacl_id: str, entries: list[NaclEntry]) -> list[OurRule]:
    """Our active blocks in that network ACL whose entry is still there to evict."""
    by_number = {entry.rule_number: entry for entry in entries}
    ours = []
    for block in ports.blocks.active(nacl_id=nacl_id):
        entry = by_number.get(block.rule_number)
        if entry is not None and entry.denies(block.cidr):
            ours.append(
                OurRule(block.block_id, entry.rule_number, block.created_at, block.expires_at)
            )
    return ours


def _evict(run: _Run, nacl_id: str, block_id: str) -> None:
    ports = run.ports
    block = ports.blocks.get(block_id)
    if block is None or block.rule_number is None:
        raise MitigationError(f"block {block_id} to evict is no longer recorded")
    ports.network_acls.delete_deny(nacl_id, block.rule_number, block.cidr)
    ports.blocks.mark_removed(block_id, "evicted", run.now)

    # While another block of the address holds (WAF, another subnet), the knowledge base stays
    # "active" and the expiry of that block settles it; without one, nothing else would.
    if not any(other.target == block.target for other in ports.blocks.active()):
        ports.knowledge.mark_expired(block.indicator_kind, block.indicator_value, block.expires_at)
    logger.warning(
        "block evicted",
        extra={"block_id": block_id, "nacl_id": nacl_id, "rule": block.rule_number},
    )


def _in_force(run: _Run, block_id: str) -> ActionResult | None:
    """The result for a block already in force, renewed when asked again; None to apply it.

    A lifted block's record is kept under another id, so the one applied anew takes its place
    and `blocks list --all` still shows each time the address was blocked.
    """
    blocks = run.ports.blocks
    block = blocks.get(block_id)
    if block is not None and block.status is BlockStatus.ACTIVE:
        result = _renew(run, block)
        if result is not None:
            return result
        block = blocks.get(block_id)
    if block is not None and block.status is BlockStatus.REMOVED:
        blocks.archive(block)
    return None


def _renew(run: _Run, block: Block) -> ActionResult | None:
    """Move an active block's expiry to this run's, never earlier; None when it was lifted."""
    if block.expiry_set_by == run.update or run.expires_at <= block.expires_at:
        # A retry of the execution that set the expiry, or a request that would shorten it.
        return _already_active(run, block)

    # The knowledge base first, as _record does: its expiry only ever moves later, so a retry
    # after a failure in between repeats nothing wrong.
    ports = run.ports
    ports.knowledge.mark_blocked(block.indicator_kind, block.indicator_value, run.expires_at)
    # TODO(expiry-race): an expiry run that read this block as due just before this renewal
    # still lifts it and marks it removed after it; only the next delivery applies it anew.
    if not ports.blocks.renew(block.block_id, run.expires_at, run.update, run.now):
        current = ports.blocks.get(block.block_id)
        if current is None or current.status is not BlockStatus.ACTIVE:
            return None
        # Another execution renewed it meanwhile, as far as this one or further.
        return _already_active(run, current)

    renewed = block.model_copy(
        update={"expires_at": run.expires_at, "expiry_set_by": run.update, "renewed_at": run.now}
    )
    logger.info(
        "block renewed",
        extra={"block_id": block.block_id, "expires_at": run.expires_at.isoformat()},
    )
    return _already_active(run, renewed)


def _record(run: _Run, block: Block) -> bool:
    """Note the block in the knowledge base, then record it; False when it was recorded first."""
    run.ports.knowledge.mark_blocked(block.indicator_kind, block.indicator_value, block.expires_at)
    return run.ports.blocks.put_new(block)


def _already_active(run: _Run, block: Block) -> ActionResult:
    until = block.expires_at.isoformat()
    renewed = block.renewed_at is not None and block.expiry_set_by == run.update
    if block.kind is ActionKind.WAF_BLOCK and block.written_at is None:
        # Recorded, not written yet: the WAF writer has it in its queue.
        detail = f"{block.cidr} is already asked of the WAF writer ({block.block_id})"
        detail += f"; expiry renewed to {until}" if renewed else f" until {until}"
        return run.result(ActionStatus.QUEUED, detail, block.block_id, block.expires_at)
    if renewed:
        detail = f"{block.cidr} is in force ({block.block_id}); expiry renewed to {until}"
    else:
        detail = f"{block.cidr} is already blocked ({block.block_id}) until {until}"
    return run.result(ActionStatus.ALREADY_APPLIED, detail, block.block_id, block.expires_at)


def _shadow_note(entries: list[NaclEntry], cidr: str, rule_number: int) -> str:
    shadowing = shadowing_allows(entries, cidr, rule_number)
    if not shadowing:
        return ""
    numbers = ", ".join(str(number) for number in shadowing)
    return f"; inbound allow rule(s) {numbers} come first and may still let it in"


def _lift(block: Block, now: datetime, ports: Ports) -> None:
    _remove_entry(block, ports)
    ports.knowledge.mark_expired(block.indicator_kind, block.indicator_value, now)
    ports.blocks.mark_removed(block.block_id, "expired", now)
    logger.info("block expired", extra={"block_id": block.block_id})


def lift_block(
    block: Block,
    now: datetime,
    ports: Ports,
    reason: RemovedReason,
    by: str | None = None,
    note: str | None = None,
) -> bool:
    """Lift a block before its expiry and mark it removed; False when it was no longer active."""
    _remove_entry(block, ports)

    # Lifted early, the address is no longer blocked once no other block of it holds; while one
    # does, the knowledge base stays "active" and that block's own lift settles it.
    others = [
        other
        for other in ports.blocks.active()
        if other.target == block.target and other.block_id != block.block_id
    ]
    if not others:
        until = max(now, block.expires_at)
        ports.knowledge.mark_expired(block.indicator_kind, block.indicator_value, until)
    removed = ports.blocks.mark_removed(block.block_id, reason, now, by=by, note=note)
    logger.info("block lifted", extra={"block_id": block.block_id, "reason": reason})
    return removed


def _remove_entry(block: Block, ports: Ports) -> None:
    try:
        if block.kind is ActionKind.WAF_BLOCK:
            ports.ip_sets.remove(block.ip_version, block.cidr)
        elif block.nacl_id is not None and block.rule_number is not None:
            ports.network_acls.delete_deny(block.nacl_id, block.rule_number, block.cidr)
    except TargetNotFoundError as exc:
        # The IP set or network ACL is gone, and the block with it.
        logger.warning("block target gone", extra={"block_id": block.block_id, "error": str(exc)})


def _expiry_order(block: Block) -> tuple[datetime, str]:
    return block.expires_at, block.block_id
