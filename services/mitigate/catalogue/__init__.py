"""The response catalogue: actions beyond address blocks, each a unit that declares itself.

Every action here declares the parameters it reads from the decision, the IAM permissions it
needs (the stack grants exactly those), how it is applied, how it is verified once applied, and
how it is undone. Applying is idempotent: an action whose record is in force is verified and
reported `already_applied`, never applied twice. Each applied action is recorded, with what its
undo needs, in the actions table; isolation and revocation never expire, blocks do.

The WAF and network ACL blocks keep their own module (services.mitigate.actions) and table:
they predate this catalogue and share a rule-number allocator and the expiry run.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from pydantic import Field

from cloud_sniper.domain.models import (
    ActionKind,
    ActionResult,
    ActionStatus,
    Finding,
    Model,
    PlannedAction,
)


class ActionUnavailableError(Exception):
    """The action cannot be carried out where it runs (a service the account does not have)."""


class ActionTargetNotFoundError(Exception):
    """The action's target does not exist in the account."""


class ActionFailedError(Exception):
    """The action could not be applied, and retrying will not help."""


class Permission(Model):
    """IAM actions an action needs, on the resources it needs them on, and why if on '*'."""

    actions: list[str]
    resources: list[str] = Field(default_factory=lambda: ["*"])
    reason: str = ""


class RecordStatus(StrEnum):
    ACTIVE = "active"  # applied and in force
    UNDONE = "undone"  # rolled back or released by a person
    EXPIRED = "expired"  # lifted by the expiry run


class ActionRecord(Model):
    """An action applied by the catalogue, as the actions table records it."""

    record_id: str  # "<kind>#<target>": one record per target and kind in force at a time
    kind: ActionKind
    target: str
    incident_id: str
    finding_id: str
    action_id: str
    status: RecordStatus = RecordStatus.ACTIVE
    applied_at: datetime
    expires_at: datetime | None = None
    # What the undo needs and what the action changed, in the action's own terms.
    state: dict[str, Any] = Field(default_factory=dict)
    verified: bool | None = None
    verification: str = ""
    undone_at: datetime | None = None
    undone_by: str | None = None
    undo_reason: str | None = None
    # The member account it was applied in, through its member role; None for our own.
    account_id: str | None = None


class Applied(Model):
    """What an apply changed: a sentence for the report, and the state the undo needs."""

    detail: str
    state: dict[str, Any] = Field(default_factory=dict)


class Verification(Model):
    """Whether an applied action holds in the account, and what was checked."""

    ok: bool
    detail: str


class Clients(Protocol):
    def __call__(self, service_name: str) -> Any: ...


@dataclass(frozen=True)
class ActionRun:
    """One planned action of the catalogue being applied."""

    finding: Finding
    action: PlannedAction
    incident_id: str
    now: datetime
    expires_at: datetime | None
    clients: Clients
    # The member account the clients act in; None for our own.
    account_id: str | None = None

    def result(
        self, status: ActionStatus, detail: str, record: ActionRecord | None = None
    ) -> ActionResult:
        return ActionResult(
            action_id=self.action.id,
            kind=self.action.kind,
            target=self.action.target,
            status=status,
            detail=detail,
            block_id=record.record_id if record else None,
            expires_at=record.expires_at if record else self.expires_at,
            at=self.now,
        )


class ResponseAction(Protocol):
    """The contract of a catalogue action."""

    kind: ClassVar[ActionKind]
    # A sentence for the docs and the CLI: what it does to the target.
    summary: ClassVar[str]
    permissions: ClassVar[tuple[Permission, ...]]
    expires: ClassVar[bool]

    def plan(self, run: ActionRun) -> str:
        """What a dry run would do, in a sentence; reads nothing."""

    def apply(self, run: ActionRun) -> Applied:
        """Apply the action; raise ActionTargetNotFoundError, ActionFailedError or transient."""

    def verify(self, record: ActionRecord, clients: Clients) -> Verification:
        """Check the applied action holds in the account."""

    def undo(self, record: ActionRecord, clients: Clients) -> str:
        """Put back what the action changed; a sentence of what was done."""


class RecordStore(Protocol):
    def get(self, record_id: str) -> ActionRecord | None: ...

    def put_new(self, record: ActionRecord) -> bool: ...

    def save(self, record: ActionRecord) -> None: ...

    def by_incident(self, incident_id: str) -> list[ActionRecord]: ...

    def all(self) -> list[ActionRecord]: ...


_REGISTRY: dict[ActionKind, ResponseAction] = {}


def register(action: type) -> type:
    """Class decorator: one instance of the action serves every run."""
    _REGISTRY[action.kind] = action()
    return action


def catalogue() -> dict[ActionKind, ResponseAction]:
    """Every action of the catalogue, by kind, once their modules are imported."""
    _load()
    return dict(_REGISTRY)


def record_id(kind: ActionKind, target: str) -> str:
    return f"{kind.value}#{target}"


def run_action(run: ActionRun, records: RecordStore, dry_run: bool) -> ActionResult:
    """Apply one catalogue action, idempotently, record it and verify it."""
    action = catalogue().get(run.action.kind)
    if action is None:
        return run.result(ActionStatus.UNAVAILABLE, f"{run.action.kind.value}: not yet available")
    if dry_run:
        return run.result(ActionStatus.PLANNED, f"dry run: would {action.plan(run)}")

    key = record_id(run.action.kind, run.action.target)
    existing = records.get(key)
    if existing is not None and existing.status is RecordStatus.ACTIVE:
        check = action.verify(existing, run.clients)
        status = ActionStatus.ALREADY_APPLIED if check.ok else ActionStatus.FAILED
        detail = f"in force since {existing.applied_at.isoformat()} ({existing.incident_id}); "
        return run.result(status, detail + check.detail, existing)

    try:
        applied = action.apply(run)
    except ActionUnavailableError as exc:
        return run.result(ActionStatus.UNAVAILABLE, str(exc))
    except ActionTargetNotFoundError as exc:
        return run.result(ActionStatus.NOT_FOUND, str(exc))
    except ActionFailedError as exc:
        return run.result(ActionStatus.FAILED, str(exc))

    record = ActionRecord(
        record_id=key,
        kind=run.action.kind,
        target=run.action.target,
        incident_id=run.incident_id,
        finding_id=run.finding.id,
        action_id=run.action.id,
        applied_at=run.now,
        expires_at=run.expires_at if action.expires else None,
        state=applied.state,
        account_id=run.account_id,
    )
    check = action.verify(record, run.clients)
    record = record.model_copy(update={"verified": check.ok, "verification": check.detail})
    if existing is not None:
        # The same target acted on before and undone since: the new record takes its place,
        # and the old one stays in the incident that made it.
        records.save(record)
    elif not records.put_new(record):
        current = records.get(key)
        return run.result(
            ActionStatus.ALREADY_APPLIED, "applied by a concurrent execution", current
        )
    status = ActionStatus.APPLIED if check.ok else ActionStatus.FAILED
    return run.result(status, f"{applied.detail}; verified: {check.detail}", record)


def undo_action(
    record: ActionRecord, clients: Clients, who: str, reason: str, now: datetime
) -> ActionRecord:
    """Undo an action in force and record who undid it and why."""
    action = catalogue()[record.kind]
    detail = action.undo(record, clients)
    return record.model_copy(
        update={
            "status": RecordStatus.UNDONE,
            "undone_at": now,
            "undone_by": who,
            "undo_reason": reason,
            "verification": detail,
        }
    )


def expire_records(
    records: RecordStore,
    clients: Clients,
    now: datetime,
    clients_for: Callable[[ActionRecord], Clients] | None = None,
) -> dict[str, str]:
    """Undo every action in force whose expiry has passed; the failures, by record id.

    `clients_for` gives the clients of the account a record was applied in, when not `clients`.
    One that cannot be undone stays in force, and the next run tries it again.
    """
    failed: dict[str, str] = {}
    for record in records.all():
        due = record.expires_at is not None and record.expires_at <= now
        if record.status is not RecordStatus.ACTIVE or not due:
            continue
        try:
            in_account = clients_for(record) if clients_for is not None else clients
            detail = catalogue()[record.kind].undo(record, in_account)
        except Exception as exc:  # noqa: BLE001 - reported, retried by the next run
            failed[record.record_id] = f"{type(exc).__name__}: {exc}"
            continue
        records.save(
            record.model_copy(
                update={"status": RecordStatus.EXPIRED, "undone_at": now, "verification": detail}
            )
        )
    return failed


@functools.cache
def _load() -> None:
    # Each module of this package registers its action, and imports this one: imported here.
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
