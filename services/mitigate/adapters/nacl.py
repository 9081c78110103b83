"""The network ACLs of the affected subnets, where inbound and outbound deny entries go."""

from __future__ import annotations

import ipaddress
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cloud_sniper.domain.nacl_rules import NaclEntry
from services.mitigate.actions import RuleNumberTakenError, TargetNotFoundError
from services.mitigate.adapters._aws import aws_error, error_code

NACL_NOT_FOUND = "InvalidNetworkAclID.NotFound"
ENTRY_NOT_FOUND = "InvalidNetworkAclEntry.NotFound"
ENTRY_EXISTS = "NetworkAclEntryAlreadyExists"


class Ec2NetworkAcls:
    """Reads network ACLs and writes our all-protocol deny entries, inbound and outbound."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def for_subnets(self, subnet_ids: list[str]) -> dict[str, str]:
        """The network ACL of each subnet; a subnet that does not exist is left out."""
        wanted = set(subnet_ids)
        nacl_of: dict[str, str] = {}
        paginator = self._client.get_paginator("describe_network_acls")
        pages = paginator.paginate(
            Filters=[{"Name": "association.subnet-id", "Values": sorted(wanted)}]
        )
        try:
            for page in pages:
                for nacl in page.get("NetworkAcls", []):
                    for association in nacl.get("Associations", []):
                        if association.get("SubnetId") in wanted:
                            nacl_of[association["SubnetId"]] = nacl["NetworkAclId"]
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, "DescribeNetworkAcls") from exc
        return nacl_of

    def entries(self, nacl_id: str) -> list[NaclEntry]:
        """Every entry of a network ACL, both directions."""
        try:
            response = self._client.describe_network_acls(NetworkAclIds=[nacl_id])
        except ClientError as exc:
            if error_code(exc) == NACL_NOT_FOUND:
                raise TargetNotFoundError(f"network ACL {nacl_id} not found") from exc
            raise aws_error(exc, f"DescribeNetworkAcls {nacl_id}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"DescribeNetworkAcls {nacl_id}") from exc
        return [
            _entry(entry)
            for nacl in response.get("NetworkAcls", [])
            for entry in nacl.get("Entries", [])
        ]

    def create_deny(
        self, nacl_id: str, rule_number: int, cidr: str, *, egress: bool = False
    ) -> None:
        """Deny every protocol from (inbound) or to (egress) a CIDR, at that rule number."""
        address_key = "CidrBlock" if ipaddress.ip_network(cidr).version == 4 else "Ipv6CidrBlock"
        direction = "outbound" if egress else "inbound"
        doing = f"CreateNetworkAclEntry {nacl_id} {direction} {rule_number}"
        try:
            self._client.create_network_acl_entry(
                NetworkAclId=nacl_id,
                RuleNumber=rule_number,
                Protocol="-1",
                RuleAction="deny",
                Egress=egress,
                **{address_key: cidr},
            )
        except ClientError as exc:
            code = error_code(exc)
            if code == ENTRY_EXISTS:
                raise RuleNumberTakenError(
                    f"network ACL {nacl_id} already has {direction} rule {rule_number}"
                ) from exc
            if code == NACL_NOT_FOUND:
                raise TargetNotFoundError(f"network ACL {nacl_id} not found") from exc
            raise aws_error(exc, doing) from exc
        except BotoCoreError as exc:
            raise aws_error(exc, doing) from exc

    def delete_deny(self, nacl_id: str, rule_number: int, cidr: str) -> bool:
        """Delete our inbound deny entry; False when that rule no longer denies that CIDR.

        The entry is read first: a rule number freed by hand may since hold someone else's rule.
        """
        try:
            entries = self.entries(nacl_id)
        except TargetNotFoundError:
            return False
        if not any(entry.rule_number == rule_number and entry.denies(cidr) for entry in entries):
            return False
        return self.delete_entry(nacl_id, rule_number, egress=False)

    def delete_entry(self, nacl_id: str, rule_number: int, *, egress: bool) -> bool:
        """Delete an entry by rule number; False when it or its network ACL is gone.

        The caller reads the entry first, to be sure the number still holds its own rule.
        """
        direction = "outbound" if egress else "inbound"
        doing = f"DeleteNetworkAclEntry {nacl_id} {direction} {rule_number}"
        try:
            self._client.delete_network_acl_entry(
                NetworkAclId=nacl_id, RuleNumber=rule_number, Egress=egress
            )
        except ClientError as exc:
            if error_code(exc) in (ENTRY_NOT_FOUND, NACL_NOT_FOUND):
                return False
            raise aws_error(exc, doing) from exc
        except BotoCoreError as exc:
            raise aws_error(exc, doing) from exc
        return True


def _entry(entry: dict[str, Any]) -> NaclEntry:
    return NaclEntry(
        rule_number=int(entry["RuleNumber"]),
        rule_action=entry.get("RuleAction", ""),
        egress=bool(entry.get("Egress")),
        protocol=str(entry.get("Protocol", "-1")),
        cidr=entry.get("CidrBlock") or entry.get("Ipv6CidrBlock"),
    )
