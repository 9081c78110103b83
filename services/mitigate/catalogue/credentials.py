"""Revoke a leaked credential: deactivate a user's access key, or a role's active sessions.

Nothing is deleted. A user's long-term key is switched to Inactive; a role's temporary keys
cannot be switched off one by one, so the role gets an inline policy denying everything to the
sessions issued before now, as the IAM console's "Revoke active sessions" does. New sessions of
the role, issued after the revocation, work as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from cloud_sniper.domain import naming, safety
from cloud_sniper.domain.models import ActionKind
from services.mitigate.adapters.iam_credentials import IamCredentials
from services.mitigate.catalogue import (
    ActionFailedError,
    ActionRecord,
    ActionRun,
    ActionTargetNotFoundError,
    Applied,
    Clients,
    Permission,
    Verification,
    register,
)

ACTIVE = "Active"
INACTIVE = "Inactive"

# AKIA: a long-term key of a user (or of root); ASIA: temporary credentials from STS.
_LONG_TERM_KEY = re.compile(r"AKIA[A-Z0-9]{12,124}")
_SESSION_KEY = re.compile(r"ASIA[A-Z0-9]{12,124}")
_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}")
# A role's unique id (AROA...) names no role a call can take; the account id is root's.
_ROLE_ID = re.compile(r"AROA[A-Z0-9]{12,}")
_ACCOUNT_ID = re.compile(r"\d{12}")
_ARN = re.compile(r"arn:[\w-]+:(?:sts|iam)::\d{12}:(assumed-role|role)/(.+)")
_POLICY_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]+")


class Approach(StrEnum):
    DEACTIVATE_KEY = "deactivate_key"  # an IAM user's long-term access key
    REVOKE_SESSIONS = "revoke_sessions"  # every session of a role issued before now


@dataclass(frozen=True)
class Holder:
    """Who holds the access key, as the finding tells."""

    principal: str | None = None
    principal_id: str | None = None
    user_type: str | None = None


@dataclass(frozen=True)
class Revocation:
    """How one access key is revoked."""

    approach: Approach
    key_id: str
    role: str | None = None


def revocation(key_id: str, holder: Holder) -> Revocation:
    """Choose how to revoke a key; ActionFailedError when a person must do it instead."""
    if (
        holder.user_type == "Root"
        or (holder.principal or "").lower() == "root"
        or _ACCOUNT_ID.fullmatch(holder.principal_id or "")
    ):
        raise ActionFailedError(f"{key_id}: {safety.ROOT_REASON}; a person must act")

    if _LONG_TERM_KEY.fullmatch(key_id):
        if holder.user_type != "IAMUser":
            raise _cannot_tell(key_id, f"a long-term key held by user type {holder.user_type}")
        if holder.principal_id and not holder.principal_id.startswith("AIDA"):
            raise _cannot_tell(key_id, f"an IAM user with principal id {holder.principal_id}")
        return Revocation(Approach.DEACTIVATE_KEY, key_id)

    if _SESSION_KEY.fullmatch(key_id):
        # TODO(revoke-user-sessions): sessions of an IAM user (GetSessionToken) or a federated
        # user would take a deny on the user; only role sessions are revoked for now.
        if holder.user_type != "AssumedRole":
            raise _cannot_tell(key_id, f"temporary credentials of user type {holder.user_type}")
        if holder.principal_id and not holder.principal_id.startswith("AROA"):
            raise _cannot_tell(key_id, f"a role session with principal id {holder.principal_id}")
        role = role_name(holder.principal)
        if role is None:
            raise _cannot_tell(key_id, f"a role session of principal {holder.principal}")
        return Revocation(Approach.REVOKE_SESSIONS, key_id, role=role)

    raise ActionFailedError(f"{key_id!r} is not an access key id (AKIA... or ASIA...)")


def role_name(principal: str | None) -> str | None:
    """The role a session belongs to, from the finding's principal; None when it cannot tell."""
    if not principal:
        return None
    arn = _ARN.fullmatch(principal)
    if arn:
        kind, path = arn.groups()
        # assumed-role/<role>/<session>; role/<path>/<role>
        name = path.split("/")[0] if kind == "assumed-role" else path.split("/")[-1]
    else:
        # "<role>", "<role>/<session>" or "<role>:<session>"
        name = re.split(r"[/:]", principal, maxsplit=1)[0]
    if _ROLE_ID.fullmatch(name) or not _ROLE_NAME.fullmatch(name):
        return None
    return name


def policy_name(incident_id: str) -> str:
    """The name of our inline deny policy on the role: one per incident."""
    safe = _POLICY_NAME_UNSAFE.sub("-", incident_id)
    return f"{naming.PREFIX}-revoke-{safe}"[:128]


def issue_time(now: datetime) -> str:
    """The aws:TokenIssueTime bound: ISO 8601 in UTC to the second, as the IAM console writes."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deny_older_sessions(issued_before: str) -> dict[str, Any]:
    """The inline policy denying everything to sessions issued before a time."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": issued_before}},
            }
        ],
    }


def denies_older_sessions(document: dict[str, Any], issued_before: str) -> bool:
    """Whether a policy holds our deny of every session issued before that time."""
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    return any(
        statement.get("Effect") == "Deny"
        and _only_star(statement.get("Action"))
        and _only_star(statement.get("Resource"))
        and set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        and statement.get("Condition") == {"DateLessThan": {"aws:TokenIssueTime": issued_before}}
        for statement in statements
    )


@register
class RevokeCredentials:
    """Cut off a leaked access key, without deleting it."""

    kind: ClassVar[ActionKind] = ActionKind.REVOKE_CREDENTIALS
    summary: ClassVar[str] = (
        "deactivate an IAM user's access key, or deny a role's sessions issued before now"
    )
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission(
            actions=["iam:GetAccessKeyLastUsed", "iam:ListAccessKeys", "iam:UpdateAccessKey"],
            resources=["arn:{partition}:iam::{account}:user/*"],
            reason="the user holding the key is named by the finding, known only at run time; "
            "the key's status is switched, never the key deleted",
        ),
        Permission(
            actions=["iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy"],
            resources=["arn:{partition}:iam::{account}:role/*"],
            reason="the role whose sessions leaked is named by the finding, known only at run "
            "time; only Cloud Sniper's own inline deny policy is written and deleted",
        ),
    )
    expires: ClassVar[bool] = False

    def plan(self, run: ActionRun) -> str:
        key_id, holder = run.action.target, _holder(run)
        try:
            chosen = revocation(key_id, holder)
        except ActionFailedError as exc:
            return f"refuse to revoke {exc}"
        if chosen.approach is Approach.DEACTIVATE_KEY:
            return f"deactivate access key {key_id} of IAM user {holder.principal}"
        return (
            f"deny every session of role {chosen.role} issued before {issue_time(run.now)} "
            f"(inline policy {policy_name(run.incident_id)}), as {key_id} is one of them"
        )

    def apply(self, run: ActionRun) -> Applied:
        chosen = revocation(run.action.target, _holder(run))
        iam = IamCredentials(run.clients("iam"))
        if chosen.approach is Approach.DEACTIVATE_KEY:
            return _deactivate(iam, chosen.key_id, _holder(run))
        return _revoke_sessions(iam, chosen, run)

    def verify(self, record: ActionRecord, clients: Clients) -> Verification:
        iam = IamCredentials(clients("iam"))
        state = record.state
        if _approach(record) is Approach.DEACTIVATE_KEY:
            status = iam.key_status(state["user"], record.target)
            if status is None:
                return Verification(ok=True, detail=f"access key {record.target} no longer exists")
            return Verification(
                ok=status == INACTIVE, detail=f"access key {record.target} is {status.lower()}"
            )

        role, name = state["role"], state["policy_name"]
        document = iam.role_policy(role, name)
        if document is None:
            return Verification(ok=False, detail=f"role {role} has no inline policy {name}")
        if not denies_older_sessions(document, state["issued_before"]):
            return Verification(ok=False, detail=f"inline policy {name} of role {role} was changed")
        return Verification(
            ok=True,
            detail=f"role {role} denies its sessions issued before {state['issued_before']}",
        )

    def undo(self, record: ActionRecord, clients: Clients) -> str:
        iam = IamCredentials(clients("iam"))
        state = record.state
        if _approach(record) is Approach.DEACTIVATE_KEY:
            if state.get("previous_status") != ACTIVE:
                return f"access key {record.target} was inactive before; left inactive"
            if not iam.set_key_status(state["user"], record.target, ACTIVE):
                return f"access key {record.target} no longer exists; nothing to reactivate"
            return f"reactivated access key {record.target} of IAM user {state['user']}"

        role, name = state["role"], state["policy_name"]
        if not iam.delete_role_policy(role, name):
            return f"inline policy {name} was already gone from role {role}"
        return f"deleted inline policy {name} from role {role}; its older sessions work again"


def _deactivate(iam: IamCredentials, key_id: str, holder: Holder) -> Applied:
    # IAM's word on the owner, not the finding's: the key is what was used.
    user = iam.key_owner(key_id)
    status = iam.key_status(user, key_id)
    if status is None:
        raise _not_found(key_id, user)
    state = {"approach": Approach.DEACTIVATE_KEY.value, "user": user, "previous_status": status}
    named = (
        f" (the finding named {holder.principal})" if holder.principal not in (None, user) else ""
    )

    # Already inactive, by a person or by a run that crashed before recording: recorded as
    # found, so the undo leaves it inactive rather than enabling a key nobody vouched for.
    if status != ACTIVE:
        return Applied(
            detail=f"access key {key_id} of IAM user {user}{named} was already {status.lower()}",
            state=state,
        )
    if not iam.set_key_status(user, key_id, INACTIVE):
        raise _not_found(key_id, user)
    return Applied(
        detail=f"deactivated access key {key_id} of IAM user {user}{named} (not deleted)",
        state=state,
    )


def _revoke_sessions(iam: IamCredentials, chosen: Revocation, run: ActionRun) -> Applied:
    # Written whole every time: a retry after a crash replaces the policy with a later bound,
    # which denies the same leaked session and leaves nothing else behind.
    role = chosen.role or ""
    name = policy_name(run.incident_id)
    issued_before = issue_time(run.now)
    iam.put_role_policy(role, name, deny_older_sessions(issued_before))
    return Applied(
        detail=f"denied every session of role {role} issued before {issued_before}, "
        f"{chosen.key_id} among them (inline policy {name}); new sessions work",
        state={
            "approach": Approach.REVOKE_SESSIONS.value,
            "role": role,
            "policy_name": name,
            "issued_before": issued_before,
        },
    )


def _holder(run: ActionRun) -> Holder:
    # The decision's parameters first; the finding for a decision made before they were added.
    params, resource = run.action.params, run.finding.resource
    return Holder(
        **{
            field: params.get(field) or getattr(resource, field)
            for field in ("principal", "principal_id", "user_type")
        }
    )


def _approach(record: ActionRecord) -> Approach:
    try:
        return Approach(record.state.get("approach"))
    except ValueError as exc:
        raise ActionFailedError(
            f"record {record.record_id}: state names no revocation approach"
        ) from exc


def _only_star(value: Any) -> bool:
    return value == "*" or value == ["*"]


def _cannot_tell(key_id: str, what: str) -> ActionFailedError:
    return ActionFailedError(f"{key_id}: cannot tell how to revoke {what}; a person must act")


def _not_found(key_id: str, user: str) -> ActionTargetNotFoundError:
    return ActionTargetNotFoundError(f"access key {key_id} of IAM user {user} not found")
