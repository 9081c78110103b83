"""Route 53 Resolver DNS Firewall: the domain list, rule group and association we block with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.mitigate.adapters._aws import catalogue_error, error_code
from services.mitigate.catalogue import (
    ActionTargetNotFoundError,
    ActionUnavailableError,
)

UNAVAILABLE = "DNS Firewall is not available in this account / the local emulation"
NOT_FOUND = "ResourceNotFoundException"
# Lists and groups shared with this account by another are not ours to write.
SHARED_WITH_ME = "SHARED_WITH_ME"


@dataclass(frozen=True)
class FirewallRule:
    """One rule of a rule group, as ListFirewallRules describes it."""

    name: str
    priority: int
    action: str
    domain_list_id: str | None = None
    block_response: str | None = None


@dataclass(frozen=True)
class Association:
    """A rule group associated with a VPC, as ListFirewallRuleGroupAssociations describes it."""

    id: str
    rule_group_id: str
    vpc_id: str
    priority: int
    status: str


class DnsFirewall:
    """Reads and writes DNS Firewall through a boto3 route53resolver client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def domain_list_id(self, name: str) -> str | None:
        """The id of our domain list of that name, the same one every time; None when missing."""
        lists = [
            item
            for item in self._pages("list_firewall_domain_lists", "FirewallDomainLists")
            if item.get("Name") == name and not item.get("ManagedOwnerName")
        ]
        return _first(lists)

    def create_domain_list(self, name: str, request_id: str) -> str:
        response = self._call("create_firewall_domain_list", CreatorRequestId=request_id, Name=name)
        return response["FirewallDomainList"]["Id"]

    def domains(self, list_id: str) -> list[str]:
        """Every domain of a domain list."""
        pages = self._pages("list_firewall_domains", "Domains", FirewallDomainListId=list_id)
        return list(pages)

    def add_domains(self, list_id: str, domains: list[str]) -> str:
        """Add domains to a list; the list's status after the update (UPDATING, COMPLETE)."""
        response = self._call(
            "update_firewall_domains",
            FirewallDomainListId=list_id,
            Operation="ADD",
            Domains=domains,
        )
        return response.get("Status", "")

    def remove_domains(self, list_id: str, domains: list[str]) -> bool:
        """Remove domains from a list; False when the list itself is gone."""
        try:
            self._call(
                "update_firewall_domains",
                FirewallDomainListId=list_id,
                Operation="REMOVE",
                Domains=domains,
            )
        except ActionTargetNotFoundError:
            return False
        return True

    def rule_group_id(self, name: str) -> str | None:
        """The id of our rule group of that name, the same one every time; None when missing."""
        groups = [
            item
            for item in self._pages("list_firewall_rule_groups", "FirewallRuleGroups")
            if item.get("Name") == name and item.get("ShareStatus") != SHARED_WITH_ME
        ]
        return _first(groups)

    def create_rule_group(self, name: str, request_id: str) -> str:
        response = self._call("create_firewall_rule_group", CreatorRequestId=request_id, Name=name)
        return response["FirewallRuleGroup"]["Id"]

    def rules(self, rule_group_id: str) -> list[FirewallRule]:
        pages = self._pages(
            "list_firewall_rules", "FirewallRules", FirewallRuleGroupId=rule_group_id
        )
        return [
            FirewallRule(
                name=rule.get("Name", ""),
                priority=int(rule["Priority"]),
                action=rule.get("Action", ""),
                domain_list_id=rule.get("FirewallDomainListId"),
                block_response=rule.get("BlockResponse"),
            )
            for rule in pages
        ]

    def create_block_rule(
        self, rule_group_id: str, list_id: str, priority: int, name: str, request_id: str
    ) -> None:
        """Answer NXDOMAIN to every query for a domain of the list."""
        self._call(
            "create_firewall_rule",
            CreatorRequestId=request_id,
            FirewallRuleGroupId=rule_group_id,
            FirewallDomainListId=list_id,
            Priority=priority,
            Action="BLOCK",
            BlockResponse="NXDOMAIN",
            Name=name,
        )

    def associations(self, vpc_id: str) -> list[Association]:
        """Every rule group association of a VPC, ours and others'."""
        pages = self._pages(
            "list_firewall_rule_group_associations",
            "FirewallRuleGroupAssociations",
            VpcId=vpc_id,
        )
        return [_association(item) for item in pages]

    def associate(
        self, rule_group_id: str, vpc_id: str, priority: int, name: str, request_id: str
    ) -> Association:
        response = self._call(
            "associate_firewall_rule_group",
            CreatorRequestId=request_id,
            FirewallRuleGroupId=rule_group_id,
            VpcId=vpc_id,
            Priority=priority,
            Name=name,
        )
        return _association(response["FirewallRuleGroupAssociation"])

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            return getattr(self._client, operation)(**params)
        except (ClientError, BotoCoreError, NotImplementedError) as exc:
            raise _error(exc, _doing(operation, params)) from exc

    def _pages(self, operation: str, key: str, **params: Any) -> Iterator[Any]:
        pages = self._client.get_paginator(operation).paginate(**params)
        try:
            for page in pages:
                yield from page.get(key, [])
        except (ClientError, BotoCoreError, NotImplementedError) as exc:
            raise _error(exc, _doing(operation, params)) from exc


def _error(exc: ClientError | BotoCoreError | NotImplementedError, doing: str) -> Exception:
    """The catalogue's error for a failed call: unavailable, not found, transient or failed."""
    if isinstance(exc, NotImplementedError):
        # What moto raises, in process, for an operation it does not emulate: every DNS
        # Firewall operation as of moto 5.
        return ActionUnavailableError(UNAVAILABLE)
    if isinstance(exc, ClientError) and error_code(exc) == NOT_FOUND:
        return ActionTargetNotFoundError(f"{doing}: {exc.response['Error'].get('Message', '')}")
    return catalogue_error(exc, doing)


def _doing(operation: str, params: dict[str, Any]) -> str:
    name = "".join(part.capitalize() for part in operation.split("_"))
    what = params.get("FirewallDomainListId") or params.get("FirewallRuleGroupId")
    return f"{name} {what}" if what else name


def _first(items: list[dict[str, Any]]) -> str | None:
    # Names are not unique: two executions creating the list at once may leave two of one name,
    # and every later one must pick the same. The list calls give no creation time, so: by id.
    return min((item["Id"] for item in items), default=None)


def _association(item: dict[str, Any]) -> Association:
    return Association(
        id=item["Id"],
        rule_group_id=item.get("FirewallRuleGroupId", ""),
        vpc_id=item.get("VpcId", ""),
        priority=int(item.get("Priority", 0)),
        status=item.get("Status", ""),
    )
