"""The WAFv2 IP sets blocked addresses go into, one per IP version, and the queue of their changes.

Only the WAF writer updates the sets (`WafIpSets`); mitigate and expire ask it to, through the
queue (`WafChangeQueue`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from services.mitigate.actions import TargetNotFoundError, waf_block_id
from services.mitigate.adapters._aws import aws_error, error_code
from services.mitigate.waf_writer import IP_SET_ADDRESS_LIMIT, IpSetChange, Merge, merge_addresses

logger = Logger(child=True)

# WAF rejects an update made with a stale lock token; each attempt reads the set afresh.
MAX_UPDATE_ATTEMPTS = 5
LIST_PAGE_SIZE = 100


class WafChangeQueue:
    """Asks the WAF writer for a change of an IP set: one message on its queue per change."""

    def __init__(
        self,
        client: Any,
        names: Mapping[int, str],
        queue_url: str | None = None,
        queue_name: str = naming.WAF_CHANGES_QUEUE,
    ) -> None:
        self._client = client
        self._names = dict(names)
        self._queue_url = queue_url
        self._queue = queue_url.rstrip("/").rsplit("/", 1)[-1] if queue_url else queue_name

    def set_name(self, ip_version: int) -> str:
        """The name of the IP set for that IP version."""
        return self._names[ip_version]

    def add(self, ip_version: int, cidr: str) -> None:
        """Ask for a CIDR to be added to its set."""
        self._send("add", ip_version, cidr)

    def remove(self, ip_version: int, cidr: str) -> None:
        """Ask for a CIDR to be removed from its set."""
        self._send("remove", ip_version, cidr)

    def _send(self, op: str, ip_version: int, cidr: str) -> None:
        change = IpSetChange.model_validate(
            {
                "op": op,
                "ip_version": ip_version,
                "cidr": cidr,
                "block_id": waf_block_id(self.set_name(ip_version), cidr),
            }
        )
        try:
            self._client.send_message(QueueUrl=self._url(), MessageBody=change.model_dump_json())
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"SendMessage {self._queue}") from exc

    def _url(self) -> str:
        if self._queue_url is None:
            try:
                self._queue_url = self._client.get_queue_url(QueueName=self._queue)["QueueUrl"]
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(exc, f"GetQueueUrl {self._queue}") from exc
        return self._queue_url


class WafIpSets:
    """Applies a batch of changes to the IP sets named by the settings: the WAF writer's side."""

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

    def apply_changes(
        self,
        ip_version: int,
        adds: Sequence[str],
        removes: Sequence[str],
        limit: int = IP_SET_ADDRESS_LIMIT,
    ) -> Merge:
        """Remove then add CIDRs in one GetIPSet and at most one UpdateIPSet.

        No update is made when the set already holds the result. A lock conflict (another
        writer came first) is met by a fresh read and a new merge.
        """
        name = self.set_name(ip_version)
        for attempt in range(1, self._max_attempts + 1):
            ip_set, lock_token = self._get(name)
            merge = merge_addresses(ip_set.get("Addresses", []), adds, removes, limit)
            if not merge.changed:
                return merge
            try:
                self._put(ip_set, merge.addresses, lock_token)
            except ClientError as exc:
                if error_code(exc) != "WAFOptimisticLockException":
                    raise self._error(exc, name) from exc
                logger.info("ip set changed meanwhile", extra={"ip_set": name, "attempt": attempt})
                continue
            except BotoCoreError as exc:
                raise aws_error(exc, f"UpdateIPSet {name}") from exc
            return merge

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
