"""The member accounts of the organization, reached through the member role assumed in each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from cloud_sniper.domain import naming
from services.mitigate import catalogue
from services.mitigate.actions import MemberRoleError, NetworkAcls
from services.mitigate.adapters._aws import aws_error, error_code

# Credentials are renewed this long before they expire, so none runs out during an action.
RENEWAL_MARGIN = timedelta(minutes=5)

# What an assumed session is made into: the network ACL adapter and the catalogue's clients.
Adapters = Callable[[Any], tuple[NetworkAcls, catalogue.Clients]]


@dataclass(frozen=True)
class _Access:
    expires_at: datetime
    network_acls: NetworkAcls
    clients: catalogue.Clients


class StsMemberAccounts:
    """Our own account from STS, and the member role's adapters, cached per account."""

    def __init__(
        self,
        session: Any,
        adapters: Adapters,
        role_name: str = naming.MEMBER_ROLE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._session = session
        self._adapters = adapters
        self._role_name = role_name
        self._clock = clock
        self._sts: Any = None
        self._identity: tuple[str, str, str] | None = None  # (account, partition, caller)
        self._access: dict[str, _Access] = {}

    def own_account(self) -> str:
        return self._whoami()[0]

    def role_arn(self, account_id: str) -> str:
        return f"arn:{self._whoami()[1]}:iam::{account_id}:role/{self._role_name}"

    def network_acls(self, account_id: str, session_name: str) -> NetworkAcls:
        return self._open(account_id, session_name).network_acls

    def clients(self, account_id: str, session_name: str) -> catalogue.Clients:
        return self._open(account_id, session_name).clients

    def _client(self) -> Any:
        if self._sts is None:
            self._sts = self._session.client("sts")
        return self._sts

    def _whoami(self) -> tuple[str, str, str]:
        # Once per cold start: the account and partition of the caller, a function or a person.
        if self._identity is None:
            try:
                arn = self._client().get_caller_identity()["Arn"]
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(exc, "GetCallerIdentity") from exc
            _, partition, _, _, account, _ = arn.split(":", 5)
            self._identity = (account, partition, arn)
        return self._identity

    def _open(self, account_id: str, session_name: str) -> _Access:
        access = self._access.get(account_id)
        if access is None or self._clock() >= access.expires_at - RENEWAL_MARGIN:
            # A session made for an earlier incident serves the later ones until it is renewed.
            access = self._assume(account_id, session_name)
            self._access[account_id] = access
        return access

    def _assume(self, account_id: str, session_name: str) -> _Access:
        role_arn = self.role_arn(account_id)
        try:
            credentials = self._client().assume_role(
                RoleArn=role_arn, RoleSessionName=session_name
            )["Credentials"]
        except ClientError as exc:
            if error_code(exc) == "AccessDenied":
                own, _, caller = self._whoami()
                raise MemberRoleError(
                    f"cannot assume {role_arn}: the member role is missing in account "
                    f"{account_id} or does not trust {caller} (deploy the CloudSniper-MemberRole "
                    f"stack there with AdministratorAccountId {own}; a person's role goes in its "
                    f"ResponderPrincipalArns)"
                ) from exc
            raise aws_error(exc, f"AssumeRole {role_arn}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"AssumeRole {role_arn}") from exc
        session = boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=self._session.region_name,
        )
        network_acls, clients = self._adapters(session)
        return _Access(_aware(credentials["Expiration"]), network_acls, clients)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
