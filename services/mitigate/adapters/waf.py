"""The WAFv2 IP sets blocked addresses go into, one per IP version."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from cloud_sniper.domain.errors import TransientAwsError
from services.mitigate.actions import TargetNotFoundError
from services.mitigate.adapters._aws import aws_error, error_code

logger = Logger(child=True)

# WAF rejects an update made with a stale lock token; each attempt reads the set afresh.
MAX_UPDATE_ATTEMPTS = 5
LIST_PAGE_SIZE = 100


class WafIpSets:
    """Adds and removes CIDRs in the IP sets named by the settings."""

    def __init__(
        self,
        client: Any,
        scope: str,
        names: Mapping[int, str],
        max_attempts: int = MAX_UPDATE_ATTEMPTS,
    ) -> None:
        self._client = client
        self._scope = scope
        self._names = dict(names)
        self._max_attempts = max_attempts
        # Set ids by name, found once per cold start.
        self._ids: dict[str, str] = {}

    def set_name(self, ip_version: int) -> str:
        """The name of the IP set for that IP version."""
        return self._names[ip_version]

    def add(self, ip_version: int, cidr: str) -> bool:
        """Add a CIDR to its set; False when it was already there."""
        return self._update(ip_version, cidr, add=True)

    def remove(self, ip_version: int, cidr: str) -> bool:
        """Remove a CIDR from its set; False when it was not there."""
        return self._update(ip_version, cidr, add=False)

    def _update(self, ip_version: int, cidr: str, add: bool) -> bool:
        name = self.set_name(ip_version)
        for attempt in range(1, self._max_attempts + 1):
            ip_set, lock_token = self._get(name)
            addresses = ip_set.get("Addresses", [])
            present = any(_same(address, cidr) for address in addresses)
            if present == add:
                return False

            if add:
                updated = [*addresses, cidr]
            else:
                updated = [address for address in addresses if not _same(address, cidr)]
            try:
                self._put(ip_set, updated, lock_token)
            except ClientError as exc:
                if error_code(exc) != "WAFOptimisticLockException":
                    raise self._error(exc, name) from exc
                logger.info("ip set changed meanwhile", extra={"ip_set": name, "attempt": attempt})
                continue
            except BotoCoreError as exc:
                raise aws_error(exc, f"UpdateIPSet {name}") from exc
            return True

        raise TransientAwsError(
            f"WAF IP set {name} changed under each of {self._max_attempts} updates"
        )

    def _get(self, name: str) -> tuple[dict[str, Any], str]:
        # A cached id goes stale when the set is recreated; look the name up once more.
        for fresh in (False, True):
            set_id = self._id(name, fresh)
            try:
                response = self._client.get_ip_set(Name=name, Scope=self._scope, Id=set_id)
            except ClientError as exc:
                if error_code(exc) == "WAFNonexistentItemException" and not fresh:
                    continue
                raise self._error(exc, name) from exc
            except BotoCoreError as exc:
                raise aws_error(exc, f"GetIPSet {name}") from exc
            return response["IPSet"], response["LockToken"]
        raise self._missing(name)

    def _put(self, ip_set: dict[str, Any], addresses: list[str], lock_token: str) -> None:
        params = {
            "Name": ip_set["Name"],
            "Scope": self._scope,
            "Id": ip_set["Id"],
            "Addresses": addresses,
            "LockToken": lock_token,
        }
        # UpdateIPSet replaces every mutable field: an omitted description would be erased.
        if ip_set.get("Description"):
            params["Description"] = ip_set["Description"]
        self._client.update_ip_set(**params)

    def _id(self, name: str, fresh: bool) -> str:
        if fresh or name not in self._ids:
            self._ids.pop(name, None)
            self._ids.update(self._list())
        if name not in self._ids:
            raise self._missing(name)
        return self._ids[name]

    def _list(self) -> dict[str, str]:
        ids: dict[str, str] = {}
        params: dict[str, Any] = {"Scope": self._scope, "Limit": LIST_PAGE_SIZE}
        while True:
            try:
                page = self._client.list_ip_sets(**params)
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(exc, "ListIPSets") from exc
            ids.update((summary["Name"], summary["Id"]) for summary in page.get("IPSets", []))
            marker = page.get("NextMarker")
            if not marker or not page.get("IPSets") or marker == params.get("NextMarker"):
                return ids
            params["NextMarker"] = marker

    def _error(self, exc: ClientError, name: str) -> Exception:
        if error_code(exc) == "WAFNonexistentItemException":
            self._ids.pop(name, None)
            return self._missing(name)
        return aws_error(exc, f"WAF IP set {name}")

    def _missing(self, name: str) -> TargetNotFoundError:
        return TargetNotFoundError(f"WAF IP set {name} not found in scope {self._scope}")


def _same(address: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_network(address, strict=False) == ipaddress.ip_network(cidr)
    except ValueError:
        return False
