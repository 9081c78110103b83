"""Who may answer approvals: the IAM users of the approvers group, and roles named by pattern.

IAM groups hold users only. A person signed in through a role (IAM Identity Center, a
federation) calls as an assumed-role session; the role is an approver when its ARN matches
one of the approver role patterns of the deployment.
"""

from __future__ import annotations

import re
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Protocol

from cloud_sniper.domain.models import Model

# A role ARN pattern: `*` and `?` match as in the shell, across the role's path too.
ROLE_PATTERN = re.compile(r"^arn:[a-z*?-]+:iam::(\d{12}|[*?]+):role/\S+$")

_USER = re.compile(
    r"^arn:(?P<partition>[a-z-]+):iam::(?P<account>\d{12}):user/(?:\S+/)?(?P<name>[^/\s]+)$"
)
_ASSUMED_ROLE = re.compile(
    r"^arn:(?P<partition>[a-z-]+):sts::(?P<account>\d{12}):assumed-role/(?P<name>[^/\s]+)/\S+$"
)
_ACCOUNT = re.compile(r"^arn:[a-z-]+:[a-z]+::(?P<account>\d{12}):")


class AccessDeniedError(Exception):
    """The caller may not answer approvals; the message says who and how to become one."""


class CallerKind(StrEnum):
    USER = "user"
    ASSUMED_ROLE = "assumed_role"
    OTHER = "other"  # the root user, a federated user, a service


class Caller(Model):
    """The principal that signed a request, as IAM authorization names it."""

    arn: str
    kind: CallerKind
    account_id: str | None = None
    # The IAM user's name, or the name of the role a session was assumed from.
    name: str | None = None


class Directory(Protocol):
    """What IAM says of the approvers."""

    @property
    def group(self) -> str: ...

    def group_members(self) -> frozenset[str]:
        """The ARNs of the users in the approvers group."""
        ...

    def role_arn(self, role_name: str) -> str | None:
        """The role's ARN, path included; None when no such role exists."""
        ...


def check_role_pattern(pattern: str) -> str:
    """A role ARN pattern as given, or ValueError saying what it should look like."""
    if not ROLE_PATTERN.match(pattern):
        raise ValueError(
            f"{pattern!r} is not a role ARN pattern: arn:aws:iam::ACCOUNT:role/NAME, "
            "with * or ? for any part of the path and name"
        )
    return pattern


def caller_of(user_arn: str | None) -> Caller:
    """The caller named by the request's IAM identity (requestContext.identity.userArn)."""
    if not user_arn:
        raise AccessDeniedError("the request carries no IAM identity: sign it with SigV4")
    for kind, pattern in ((CallerKind.USER, _USER), (CallerKind.ASSUMED_ROLE, _ASSUMED_ROLE)):
        match = pattern.match(user_arn)
        if match:
            return Caller(arn=user_arn, kind=kind, account_id=match["account"], name=match["name"])
    account = _ACCOUNT.match(user_arn)
    return Caller(
        arn=user_arn, kind=CallerKind.OTHER, account_id=account["account"] if account else None
    )


def authorize(
    caller: Caller, directory: Directory, account_id: str, role_patterns: tuple[str, ...]
) -> None:
    """Let an approver through; anyone else is refused with the reason and the remedy."""
    if caller.account_id != account_id:
        raise AccessDeniedError(
            f"{caller.arn} is not of account {account_id}, where the approvals are kept"
        )
    if caller.kind is CallerKind.USER:
        if caller.arn not in directory.group_members():
            raise AccessDeniedError(
                f"{caller.arn} is not an approver: an administrator adds the user to the IAM "
                f"group {directory.group}"
            )
        return
    if caller.kind is CallerKind.ASSUMED_ROLE and caller.name:
        if not role_patterns:
            raise AccessDeniedError(
                f"{caller.arn} is not an approver: no role is, unless the deployment names it "
                "in the approver_role_arns setting"
            )
        role_arn = directory.role_arn(caller.name)
        if role_arn is None or not role_matches(role_arn, role_patterns):
            raise AccessDeniedError(
                f"{caller.arn} is not an approver: its role {role_arn or caller.name} matches "
                "none of the approver_role_arns patterns"
            )
        return
    raise AccessDeniedError(
        f"{caller.arn} is not an approver: approvals are answered by the IAM users of the group "
        f"{directory.group} and by the roles the approver_role_arns setting names"
    )


def role_matches(role_arn: str, patterns: tuple[str, ...]) -> bool:
    """Whether a role's ARN, path included, matches one of the patterns."""
    return any(fnmatchcase(role_arn, pattern) for pattern in patterns)
