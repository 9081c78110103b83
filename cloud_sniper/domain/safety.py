"""Safety rules: what Cloud Sniper never acts on, whatever the policy asks, and why."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from fnmatch import fnmatchcase
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import Direction, Finding, Indicator, IndicatorRole, Resource

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

SAMPLE_REASON = "GuardDuty sample finding: never acted on"
ARCHIVED_REASON = "archived finding: never acted on"
ROOT_REASON = "root credentials: a person acts on them, never Cloud Sniper"

# Finding types whose outbound remote is the attacker's infrastructure (command and control, a
# mining pool, a drop point, a threat-listed host, a Tor entry), not a victim of the resource.
# The remote of any other outbound finding (spam, floods, scans, brute force sent by the
# resource) may be a victim and is never blocked.
C2_TYPE_PATTERNS = (
    "Backdoor:*/C&CActivity*",
    "CryptoCurrency:*",
    "Trojan:*",
    "Impact:*/BitcoinDomainRequest*",
    "Impact:*/MaliciousDomainRequest*",
    "Impact:*/CryptoMinerExecuted",
    "UnauthorizedAccess:*/MaliciousIPCaller*",
    "UnauthorizedAccess:*/TorClient",
    "UnauthorizedAccess:*/MetadataDNSRebind",
    "Backdoor:*/Beaconing*",
)

# The special-purpose blocks of the IANA registries, written out rather than read from
# ipaddress's is_private / is_global, whose answers changed between Python patch releases
# (3.11.10 and 3.12.4 rewrote them): a refusal must not depend on the runtime's version.
_SPECIAL: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), label)
    for cidr, label in (
        ("0.0.0.0/32", "unspecified address"),
        ("0.0.0.0/8", "'this network' address (0.0.0.0/8)"),
        ("10.0.0.0/8", "private address (RFC 1918)"),
        ("100.64.0.0/10", "shared address space, carrier-grade NAT (100.64.0.0/10)"),
        ("127.0.0.0/8", "loopback address"),
        ("169.254.0.0/16", "link-local address"),
        ("172.16.0.0/12", "private address (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignment (192.0.0.0/24)"),
        ("192.0.2.0/24", "documentation address (TEST-NET-1)"),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast (192.88.99.0/24)"),
        ("192.168.0.0/16", "private address (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking address (198.18.0.0/15)"),
        ("198.51.100.0/24", "documentation address (TEST-NET-2)"),
        ("203.0.113.0/24", "documentation address (TEST-NET-3)"),
        ("224.0.0.0/4", "multicast address"),
        ("255.255.255.255/32", "limited broadcast address"),
        ("240.0.0.0/4", "reserved address (240.0.0.0/4)"),
        ("::/128", "unspecified address"),
        ("::1/128", "loopback address"),
        ("::ffff:0:0/96", "IPv4-mapped IPv6 address"),
        ("64:ff9b::/96", "IPv4/IPv6 translation address (64:ff9b::/96)"),
        ("64:ff9b:1::/48", "IPv4/IPv6 translation address (64:ff9b:1::/48)"),
        ("100::/64", "discard-only address (100::/64)"),
        ("2001::/23", "IETF protocol assignment (2001::/23)"),
        ("2001:db8::/32", "documentation address (2001:db8::/32)"),
        ("3fff::/20", "documentation address (3fff::/20)"),
        ("fc00::/7", "unique local address (fc00::/7)"),
        ("fe80::/10", "link-local address"),
        ("ff00::/8", "multicast address"),
    )
)


def parse_address(value: str) -> IPAddress | None:
    """Read an IP address, or None when the value is not one."""
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def as_cidr(address: IPAddress) -> str:
    """Write one address as a single-host CIDR, /32 or /128."""
    return f"{address}/{address.max_prefixlen}"


def refuse_finding(finding: Finding) -> str | None:
    """Say why nothing at all may be done about this finding, or None."""
    if finding.sample:
        return SAMPLE_REASON
    if finding.archived:
        return ARCHIVED_REASON
    return None


def refuse_resource(resource: Resource) -> str | None:
    """Say why the affected resource is exempt from any action, or None."""
    value = resource.tags.get(naming.EXEMPT_TAG)
    # Lenient on purpose: an owner who wrote "True" or "TRUE" meant it, and reading the tag too
    # widely only ever means doing less.
    if value is not None and value.strip().lower() == "true":
        return f"resource tagged {naming.EXEMPT_TAG}={value}"
    return None


def refuse_role(indicator: Indicator) -> str | None:
    """Say why this indicator is not an attacker to block, or None."""
    if indicator.direction == Direction.OUTBOUND or indicator.role == IndicatorRole.TARGET:
        return (
            "outbound finding: the affected resource contacted this address, "
            "which may be its victim, not the attacker"
        )
    if indicator.role != IndicatorRole.ATTACKER:
        return "the finding does not name this address as the attacker"
    return None


def is_c2_type(finding_type: str) -> bool:
    """Tell whether the finding type names its outbound remote as attacker infrastructure."""
    return any(fnmatchcase(finding_type, pattern) for pattern in C2_TYPE_PATTERNS)


def refuse_c2_target(indicator: Indicator, finding: Finding) -> str | None:
    """Say why this indicator is not command-and-control infrastructure to cut, or None."""
    if not is_c2_type(finding.type):
        return (
            f"{finding.type} does not name its remote as command and control: "
            "an outbound remote may be the resource's victim"
        )
    if indicator.is_address and indicator.direction == Direction.INBOUND:
        return "an inbound attacker, not a destination the resource reaches out to"
    return None


def refuse_credentials(resource: Resource) -> str | None:
    """Say why the finding's credentials must not be revoked automatically, or None."""
    if resource.user_type == "Root" or (resource.principal or "").lower() == "root":
        return ROOT_REASON
    return None


def refuse_special(address: IPAddress) -> str | None:
    """Say why this address is not a public unicast address anyone could attack from, or None."""
    for network, label in _SPECIAL:
        if address.version == network.version and address in network:
            return label
    if not address.is_global:
        return "not a globally routable address"
    return None


def refuse_allowlisted(address: IPAddress, allowlist: Iterable[IPNetwork]) -> str | None:
    """Say which allowlist entry protects this address, or None."""
    for network in allowlist:
        if address.version == network.version and address in network:
            return f"allowlisted by the policy ({network})"
    return None


def refuse_estate(address: IPAddress, estate_addresses: Iterable[str]) -> str | None:
    """Say why this address belongs to the estate (Elastic IP, NAT gateway), or None."""
    if address in _addresses(estate_addresses):
        return "one of the estate's own public addresses (Elastic IP or NAT gateway)"
    return None


def refuse_resource_address(address: IPAddress, resource: Resource) -> str | None:
    """Say why this address is the affected resource's own, or None."""
    if address in _addresses([*resource.public_ips, *resource.private_ips]):
        return "the affected resource's own address"
    return None


def refuse_address(
    indicator: Indicator,
    *,
    allowlist: Iterable[IPNetwork],
    estate_addresses: Iterable[str],
    resource: Resource,
) -> str | None:
    """Say why the address this indicator names must not be blocked, or None: the first rule."""
    return refuse_role(indicator) or refuse_blocking(
        indicator, allowlist=allowlist, estate_addresses=estate_addresses, resource=resource
    )


def refuse_blocking(
    indicator: Indicator,
    *,
    allowlist: Iterable[IPNetwork],
    estate_addresses: Iterable[str],
    resource: Resource,
) -> str | None:
    """Say why this address must not be blocked in any direction, or None: the first rule."""
    address = parse_address(indicator.value)
    if address is None:
        return "not an IP address"
    # The most specific reason first: "our own NAT gateway" says more than "reserved address".
    return (
        refuse_estate(address, estate_addresses)
        or refuse_resource_address(address, resource)
        or refuse_allowlisted(address, allowlist)
        or refuse_special(address)
    )


def _addresses(values: Iterable[str]) -> set[IPAddress]:
    parsed = (parse_address(value) for value in values)
    return {address for address in parsed if address is not None}
