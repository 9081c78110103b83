"""Cut command and control: deny the C2 address outbound, or block the C2 domain in DNS Firewall.

An address is denied by an outbound (egress) entry in the network ACL of each subnet of the
affected resource, at a rule number of NACL_RULE_RANGE that no outbound entry uses. Egress and
ingress entries number apart, so the inbound blocks never compete for these numbers. A domain is
added to the DNS Firewall domain list `cloud-sniper-blocked-domains`, which the rule group
`cloud-sniper-dns-firewall` blocks with NXDOMAIN in the affected VPC; the list, the group, its
rule and the association are made when missing and stay in place when the block is lifted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from aws_lambda_powertools import Logger

from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import ActionKind
from cloud_sniper.domain.nacl_rules import (
    NaclEntry,
    NaclRangeFullError,
    RuleRange,
    allocate_rule_number,
)
from services.mitigate.actions import (
    MIN_PREFIX_LENGTH,
    NACL_ALLOCATION_ATTEMPTS,
    MitigationError,
    RuleNumberTakenError,
    TargetNotFoundError,
)
from services.mitigate.adapters.dns_firewall import DnsFirewall, FirewallRule
from services.mitigate.adapters.nacl import Ec2NetworkAcls
from services.mitigate.catalogue import (
    ActionFailedError,
    ActionRecord,
    ActionRun,
    ActionTargetNotFoundError,
    ActionUnavailableError,
    Applied,
    Clients,
    Permission,
    Verification,
    register,
)
from services.mitigate.settings import load_settings

logger = Logger(child=True)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DOMAIN_LIST = "cloud-sniper-blocked-domains"
RULE_GROUP = "cloud-sniper-dns-firewall"
BLOCK_RULE = "cloud-sniper-block-domains"
# A rule group associated with a VPC takes a priority from 101 to 9900, lowest evaluated first:
# ours takes the lowest free one, so no other group's ALLOW answers the query before it.
ASSOCIATION_PRIORITIES = range(101, 9901)
FIRST_RULE_PRIORITY = 100

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

_NACL_ARN = "arn:{partition}:ec2:{region}:{account}:network-acl/*"
_RESOLVER_ARN = "arn:{partition}:route53resolver:{region}:{account}"


def parse_target(target: str) -> Network | str:
    """The address (a network) or the domain a C2 cut acts on; ActionFailedError if neither."""
    text = (target or "").strip()
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        return _domain(target, text)
    if network.prefixlen < MIN_PREFIX_LENGTH[network.version]:
        raise ActionFailedError(
            f"target {target} is wider than /{MIN_PREFIX_LENGTH[network.version]}; "
            "only addresses and small networks are cut"
        )
    return network


def normal_domain(domain: str) -> str:
    """A domain as compared: lowercase, without the root's trailing dot."""
    return domain.strip().rstrip(".").lower()


def denies_outbound(entry: NaclEntry, cidr: str) -> bool:
    """Tell whether an entry is an outbound all-protocol deny of exactly that CIDR."""
    if not entry.egress or entry.rule_action != "deny" or entry.protocol != "-1":
        return False
    if entry.cidr is None:
        return False
    try:
        return ipaddress.ip_network(entry.cidr) == ipaddress.ip_network(cidr)
    except ValueError:
        return False


def outbound(entries: Iterable[NaclEntry]) -> list[NaclEntry]:
    """The outbound entries (Egress true) in the order the network ACL evaluates them."""
    return sorted((entry for entry in entries if entry.egress), key=lambda e: e.rule_number)


def egress_rule_number(rule_range: RuleRange, entries: Iterable[NaclEntry], nacl_id: str) -> int:
    """The lowest rule number of the range no outbound entry uses; ActionFailedError if none.

    Our older outbound denies are never evicted to make room: the range full fails the cut.
    """
    used = [entry.rule_number for entry in outbound(entries)]
    try:
        return allocate_rule_number(rule_range, used, []).rule_number
    except NaclRangeFullError as exc:
        raise ActionFailedError(
            f"egress range full: every outbound rule number of {rule_range} in {nacl_id} is "
            "taken; widen NACL_RULE_RANGE or free a number"
        ) from exc


def shadowing_egress_allows(entries: Iterable[NaclEntry], cidr: str, rule_number: int) -> list[int]:
    """Outbound allow entries evaluated before `rule_number` that cover part of `cidr`."""
    network = ipaddress.ip_network(cidr)
    shadowing = []
    for entry in outbound(entries):
        if entry.rule_number >= rule_number:
            break
        if entry.rule_action != "allow" or entry.cidr is None:
            continue
        other = ipaddress.ip_network(entry.cidr)
        if other.version == network.version and other.overlaps(network):
            shadowing.append(entry.rule_number)
    return shadowing


def association_priority(used: Iterable[int]) -> int:
    """The lowest association priority no other rule group of the VPC holds."""
    taken = set(used)
    for priority in ASSOCIATION_PRIORITIES:
        if priority not in taken:
            return priority
    raise ActionFailedError("every DNS Firewall association priority of the VPC is taken")


def rule_priority(rules: Iterable[FirewallRule]) -> int:
    """A priority after every rule the group holds."""
    return max((rule.priority + 1 for rule in rules), default=FIRST_RULE_PRIORITY)


def blocks_list(rule: FirewallRule, list_id: str) -> bool:
    return rule.domain_list_id == list_id and rule.action == "BLOCK"


@register
class CutCommandAndControl:
    """Cut a C2 destination: its address outbound in network ACLs, its domain in DNS Firewall."""

    kind: ClassVar[ActionKind] = ActionKind.C2_BLOCK
    summary: ClassVar[str] = (
        "Deny the C2 address outbound in the network ACLs of the resource's subnets, or block "
        "the C2 domain (NXDOMAIN) with Route 53 Resolver DNS Firewall in its VPC."
    )
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission(
            actions=["ec2:DescribeNetworkAcls"],
            reason="DescribeNetworkAcls does not support resource-level permissions",
        ),
        Permission(
            actions=["ec2:CreateNetworkAclEntry", "ec2:DeleteNetworkAclEntry"],
            resources=[_NACL_ARN],
            reason="the network ACLs to write are those of the subnets a finding names",
        ),
        Permission(
            actions=[
                "route53resolver:ListFirewallDomainLists",
                "route53resolver:ListFirewallRuleGroups",
                "route53resolver:ListFirewallRuleGroupAssociations",
                # Required by AssociateFirewallRuleGroup, which looks the VPC up.
                "ec2:DescribeVpcs",
            ],
            reason="these list and describe calls do not support resource-level permissions",
        ),
        Permission(
            actions=[
                "route53resolver:CreateFirewallDomainList",
                "route53resolver:ListFirewallDomains",
                "route53resolver:UpdateFirewallDomains",
            ],
            resources=[f"{_RESOLVER_ARN}:firewall-domain-list/*"],
            reason="the domain list's id is assigned when it is created",
        ),
        Permission(
            actions=[
                "route53resolver:CreateFirewallRuleGroup",
                "route53resolver:CreateFirewallRule",
                "route53resolver:ListFirewallRules",
            ],
            resources=[f"{_RESOLVER_ARN}:firewall-rule-group/*"],
            reason="the rule group's id is assigned when it is created",
        ),
        Permission(
            actions=["route53resolver:AssociateFirewallRuleGroup"],
            resources=[f"{_RESOLVER_ARN}:firewall-rule-group-association/*"],
            reason="the association's id is assigned when it is created",
        ),
    )
    expires: ClassVar[bool] = True

    def plan(self, run: ActionRun) -> str:
        try:
            target = parse_target(run.action.target)
        except ActionFailedError as exc:
            return f"refuse the C2 cut: {exc}"
        if isinstance(target, str):
            vpc_id = _vpc_id(run) or "no VPC named by the finding"
            return (
                f"add {target} to DNS Firewall domain list {DOMAIN_LIST}, blocked (NXDOMAIN) by "
                f"rule group {RULE_GROUP} in {vpc_id}"
            )
        subnets = ", ".join(_subnet_ids(run)) or "none named by the finding"
        return f"deny {target} outbound in the network ACLs of subnets {subnets}"

    def apply(self, run: ActionRun) -> Applied:
        target = parse_target(run.action.target)
        if isinstance(target, str):
            return _block_domain(run, target)
        return _deny_address(run, target)

    def verify(self, record: ActionRecord, clients: Clients) -> Verification:
        try:
            if record.state.get("target_kind") == "domain":
                return _verify_domain(record.state, clients)
            return _verify_address(record.state, clients)
        except (ActionFailedError, ActionTargetNotFoundError, ActionUnavailableError) as exc:
            return Verification(ok=False, detail=str(exc))

    def undo(self, record: ActionRecord, clients: Clients) -> str:
        if record.state.get("target_kind") == "domain":
            return _unblock_domain(record.state, clients)
        return _lift_address(record.state, clients)


def _deny_address(run: ActionRun, network: Network) -> Applied:
    cidr = str(network)
    subnet_ids = _subnet_ids(run)
    if not subnet_ids:
        what = run.finding.resource.instance_id or run.finding.resource.kind
        raise ActionTargetNotFoundError(
            f"the finding names no subnet for {what}, so no network ACL to deny {cidr} in"
        )

    acls = Ec2NetworkAcls(run.clients("ec2"))
    with _catalogue_errors():
        nacl_of = acls.for_subnets(subnet_ids)
    missing = [subnet_id for subnet_id in subnet_ids if subnet_id not in nacl_of]
    if not nacl_of:
        raise ActionTargetNotFoundError(
            f"subnets {', '.join(missing)} not found: no network ACL is associated with them"
        )
    subnets_of: dict[str, list[str]] = {}
    for subnet_id, nacl_id in nacl_of.items():
        subnets_of.setdefault(nacl_id, []).append(subnet_id)

    # Read per apply, not per import: the expiry never needs it, and tests set it per case.
    rule_range = load_settings().nacl_rule_range
    entries: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    gone = 0
    for nacl_id, subnets in sorted(subnets_of.items()):
        # Each network ACL stands alone: one that fails leaves the others cut, and the record
        # keeps what was written so that it expires.
        try:
            entries.append(_deny_in(acls, nacl_id, sorted(subnets), cidr, rule_range))
        except ActionTargetNotFoundError as exc:
            failed[nacl_id], gone = str(exc), gone + 1
        except ActionFailedError as exc:
            failed[nacl_id] = str(exc)
    if not entries:
        reasons = "; ".join(failed.values())
        if gone == len(failed):
            raise ActionTargetNotFoundError(reasons)
        raise ActionFailedError(f"{cidr} not denied outbound in any network ACL: {reasons}")

    state = {
        "target_kind": "address",
        "cidr": cidr,
        "entries": entries,
        "failed": failed,
        "missing_subnets": missing,
    }
    return Applied(detail=_address_detail(cidr, entries, failed, missing), state=state)


def _deny_in(
    acls: Ec2NetworkAcls, nacl_id: str, subnet_ids: list[str], cidr: str, rule_range: RuleRange
) -> dict[str, Any]:
    """Deny a CIDR outbound in one network ACL; what the undo needs to lift it."""
    where = {"nacl_id": nacl_id, "subnet_ids": subnet_ids, "cidr": cidr}
    for _ in range(NACL_ALLOCATION_ATTEMPTS):
        with _catalogue_errors():
            entries = acls.entries(nacl_id)
        present = next((entry for entry in outbound(entries) if denies_outbound(entry, cidr)), None)
        if present is not None:
            # Inside our range it is ours, left by an attempt that failed before recording it;
            # outside, someone else's, which the undo leaves alone.
            ours = present.rule_number in rule_range
            return {**where, "rule_number": present.rule_number, "ours": ours, "created": False}

        rule_number = egress_rule_number(rule_range, entries, nacl_id)
        try:
            with _catalogue_errors():
                acls.create_deny(nacl_id, rule_number, cidr, egress=True)
        except RuleNumberTakenError:
            # Another execution wrote that number between our read and our write: read again.
            logger.info("rule number taken", extra={"nacl_id": nacl_id, "rule": rule_number})
            continue
        shadowing = shadowing_egress_allows(entries, cidr, rule_number)
        return {
            **where,
            "rule_number": rule_number,
            "ours": True,
            "created": True,
            "shadowed_by": shadowing,
        }
    raise TransientAwsError(f"the outbound rule numbers of {nacl_id} kept changing")


def _address_detail(
    cidr: str, entries: list[dict[str, Any]], failed: dict[str, str], missing: list[str]
) -> str:
    parts = []
    for entry in entries:
        where = f"{entry['nacl_id']} by rule {entry['rule_number']}"
        if entry["created"]:
            part = f"denied {cidr} outbound in {where}"
            if entry.get("shadowed_by"):
                numbers = ", ".join(str(number) for number in entry["shadowed_by"])
                part += f" (outbound allow rule(s) {numbers} come first and may let it out)"
        elif entry["ours"]:
            part = f"{cidr} was already denied outbound in {where}; recorded"
        else:
            part = f"{cidr} is already denied outbound in {where}, not ours"
        parts.append(part)
    parts += [f"not denied in {nacl_id}: {reason}" for nacl_id, reason in sorted(failed.items())]
    if missing:
        parts.append(f"subnets not found: {', '.join(missing)}")
    return "; ".join(parts)


def _verify_address(state: dict[str, Any], clients: Clients) -> Verification:
    acls = Ec2NetworkAcls(clients("ec2"))
    cidr = state["cidr"]
    held, problems = [], []
    for entry in state.get("entries", []):
        nacl_id, rule_number = entry["nacl_id"], entry["rule_number"]
        try:
            current = acls.entries(nacl_id)
        except TargetNotFoundError:
            problems.append(f"network ACL {nacl_id} is gone")
            continue
        except MitigationError as exc:
            problems.append(str(exc))
            continue
        if any(_holds(other, rule_number, cidr) for other in current):
            held.append(f"{nacl_id} rule {rule_number}")
        else:
            problems.append(f"rule {rule_number} of {nacl_id} no longer denies {cidr} outbound")
    problems += [f"{nacl_id} not cut: {why}" for nacl_id, why in state.get("failed", {}).items()]

    detail = f"{cidr} denied outbound in {', '.join(held)}" if held else f"{cidr} not denied"
    if problems:
        detail += "; " + "; ".join(problems)
    return Verification(ok=not problems, detail=detail)


def _lift_address(state: dict[str, Any], clients: Clients) -> str:
    acls = Ec2NetworkAcls(clients("ec2"))
    cidr = state["cidr"]
    done = []
    for entry in state.get("entries", []):
        nacl_id, rule_number = entry["nacl_id"], entry["rule_number"]
        if not entry.get("ours"):
            done.append(f"left rule {rule_number} of {nacl_id}: not ours")
            continue
        # The entry is read first: a rule number freed by hand may since hold someone else's rule.
        try:
            with _catalogue_errors():
                current = acls.entries(nacl_id)
        except ActionTargetNotFoundError:
            done.append(f"network ACL {nacl_id} is gone")
            continue
        if not any(_holds(other, rule_number, cidr) for other in current):
            done.append(f"rule {rule_number} of {nacl_id} no longer denied {cidr}; left as it is")
            continue
        with _catalogue_errors():
            removed = acls.delete_entry(nacl_id, rule_number, egress=True)
        done.append(
            f"removed outbound rule {rule_number} denying {cidr} from {nacl_id}"
            if removed
            else f"outbound rule {rule_number} of {nacl_id} was already gone"
        )
    return "; ".join(done) or f"nothing recorded to lift for {cidr}"


def _holds(entry: NaclEntry, rule_number: int, cidr: str) -> bool:
    return entry.rule_number == rule_number and denies_outbound(entry, cidr)


def _block_domain(run: ActionRun, domain: str) -> Applied:
    vpc_id = _vpc_id(run)
    if not vpc_id:
        what = run.finding.resource.instance_id or run.finding.resource.kind
        raise ActionTargetNotFoundError(
            f"the finding names no VPC for {what}, so no DNS Firewall association to block "
            f"{domain} in"
        )
    firewall = DnsFirewall(run.clients("route53resolver"))
    # One request id per planned action and resource: a retry of the same execution that
    # crashed after a create gets the same resource back instead of a second one.
    request = run.action.id[:200]

    list_id = firewall.domain_list_id(DOMAIN_LIST)
    created_list = list_id is None
    if list_id is None:
        list_id = firewall.create_domain_list(DOMAIN_LIST, f"{request}-domain-list")

    group_id = firewall.rule_group_id(RULE_GROUP)
    created_group = group_id is None
    if group_id is None:
        group_id = firewall.create_rule_group(RULE_GROUP, f"{request}-rule-group")
    rules = [] if created_group else firewall.rules(group_id)
    created_rule = not any(blocks_list(rule, list_id) for rule in rules)
    if created_rule:
        firewall.create_block_rule(
            group_id, list_id, rule_priority(rules), BLOCK_RULE, f"{request}-rule"
        )

    associations = firewall.associations(vpc_id)
    # An association being made or updated blocks once it completes; one being deleted won't.
    association = next(
        (a for a in associations if a.rule_group_id == group_id and a.status != "DELETING"), None
    )
    created_association = association is None
    if association is None:
        association = firewall.associate(
            group_id,
            vpc_id,
            association_priority(a.priority for a in associations if a.status != "DELETING"),
            f"cloud-sniper-{vpc_id}",
            f"{request}-association-{vpc_id}",
        )

    # The domain goes in last: a setup that fails leaves no domain behind unrecorded.
    present = not created_list and domain in {normal_domain(d) for d in firewall.domains(list_id)}
    list_status = "" if present else firewall.add_domains(list_id, [domain])

    state = {
        "target_kind": "domain",
        "domain": domain,
        "vpc_id": vpc_id,
        "domain_list_id": list_id,
        "rule_group_id": group_id,
        "association_id": association.id,
        "created_list": created_list,
        "created_rule_group": created_group,
        "created_rule": created_rule,
        "created_association": created_association,
        "added": not present,
    }
    made = [
        what
        for what, created in (
            (f"domain list {DOMAIN_LIST}", created_list),
            (f"rule group {RULE_GROUP}", created_group),
            ("its BLOCK rule", created_rule),
            (f"its association with {vpc_id}", created_association),
        )
        if created
    ]
    if present:
        detail = f"{domain} was already in DNS Firewall domain list {DOMAIN_LIST}; recorded"
    else:
        detail = f"added {domain} to DNS Firewall domain list {DOMAIN_LIST}"
        if list_status and list_status != "COMPLETE":
            detail += f" (list {list_status.lower()})"
    detail += f", blocked (NXDOMAIN) in {vpc_id} by {RULE_GROUP}"
    if association.status and association.status != "COMPLETE":
        detail += f" (association {association.status.lower()})"
    if made:
        detail += f"; created {', '.join(made)}"
    return Applied(detail=detail, state=state)


def _verify_domain(state: dict[str, Any], clients: Clients) -> Verification:
    firewall = DnsFirewall(clients("route53resolver"))
    domain, list_id = state["domain"], state["domain_list_id"]
    # TODO(dns-firewall-async): UpdateFirewallDomains completes asynchronously; a list still
    # UPDATING may not list the domain yet and reads as not verified until it has.
    if domain in {normal_domain(d) for d in firewall.domains(list_id)}:
        return Verification(ok=True, detail=f"{domain} is in DNS Firewall domain list {list_id}")
    return Verification(ok=False, detail=f"{domain} is not in DNS Firewall domain list {list_id}")


def _unblock_domain(state: dict[str, Any], clients: Clients) -> str:
    firewall = DnsFirewall(clients("route53resolver"))
    domain, list_id = state["domain"], state["domain_list_id"]
    if not firewall.remove_domains(list_id, [domain]):
        return f"DNS Firewall domain list {list_id} is gone, and {domain} with it"
    return f"removed {domain} from DNS Firewall domain list {list_id}"


def _domain(target: str, text: str) -> str:
    domain = normal_domain(text)
    labels = domain.split(".")
    if not domain or len(domain) > 253:
        raise ActionFailedError(f"target {target!r} is neither an IP address nor a domain name")
    if len(labels) < 2:
        # A single label would block a whole top-level domain.
        raise ActionFailedError(f"target {target!r} is a single label, not a C2 domain name")
    bad = next((label for label in labels if not _LABEL.match(label)), None)
    if bad is not None:
        raise ActionFailedError(
            f"target {target!r} is neither an IP address nor a domain name: label {bad!r} "
            "is not 1-63 letters, digits, hyphens or underscores"
        )
    return domain


def _subnet_ids(run: ActionRun) -> list[str]:
    subnet_ids = run.action.params.get("subnet_ids") or run.finding.resource.subnet_ids
    return list(dict.fromkeys(subnet_ids))


def _vpc_id(run: ActionRun) -> str | None:
    return run.action.params.get("vpc_id") or run.finding.resource.vpc_id


@contextmanager
def _catalogue_errors() -> Iterator[None]:
    """The network ACL adapter raises the address blocks' errors; the catalogue has its own."""
    try:
        yield
    except RuleNumberTakenError:
        raise
    except TargetNotFoundError as exc:
        raise ActionTargetNotFoundError(str(exc)) from exc
    except MitigationError as exc:
        raise ActionFailedError(str(exc)) from exc
