"""The response policy: ordered rules that turn a finding into a decision, and how to read one."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cloud_sniper.domain import safety
from cloud_sniper.domain.models import (
    ActionKind,
    Decision,
    Direction,
    Enrichment,
    Finding,
    Indicator,
    IndicatorKind,
    Mode,
    Model,
    OnApprovalTimeout,
    PlannedAction,
    Priority,
    Refusal,
)
from cloud_sniper.domain.safeguards import Safeguards

NO_RULE_REASON = "no policy rule matched"

# The actions this version can carry out; any other is planned, reported and never run. An
# action can still be unavailable where it runs (DNS Firewall in the local emulation): mitigate
# reports that.
AVAILABLE_ACTIONS = frozenset(ActionKind)
NOT_YET_AVAILABLE = "not yet available in this version of Cloud Sniper"

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
_UNITS = {"d": DAY, "h": HOUR, "m": MINUTE, "s": 1}
_DURATION = re.compile(r"(?:\d+[dhms])+")
_DURATION_PART = re.compile(r"(\d+)([dhms])")


class PolicyError(ValueError):
    """A policy file cannot be read; the message names the file and the field."""


def parse_duration(value: Any) -> Any:
    """Read a duration, "90s", "15m", "24h", "7d" or "1h30m", or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30m, 24h, 7d")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            return int(text)
        if _DURATION.fullmatch(text):
            return sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    raise ValueError(f"{value!r} is not a duration: use seconds or a string like 30m, 24h, 7d")


def format_duration(seconds: int) -> str:
    """Write a number of seconds the way a policy would: 24h, 90m, 7d."""
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        # Days only from two on: "24h" reads better than "1d" next to a block's TTL.
        if seconds % size == 0 and (unit != "d" or seconds >= 2 * DAY):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# A block shorter than a minute is over before anyone reads the report; one longer than a year is
# a standing rule, better written into the WAF and network ACLs by hand than expired by us.
BlockTtl = Annotated[int, BeforeValidator(parse_duration), Field(ge=MINUTE, le=366 * DAY)]
# An approval nobody answers within a week is better asked again from a fresh finding; the wait
# also holds an execution open, and Step Functions ends any execution after a year.
ApprovalTimeout = Annotated[int, BeforeValidator(parse_duration), Field(ge=MINUTE, le=7 * DAY)]
Severity = Annotated[float, Field(ge=0, le=10)]


def _cidr(entry: str) -> str:
    try:
        return str(ipaddress.ip_network(entry.strip()))
    except ValueError as exc:
        raise ValueError(f"{entry!r} is not a CIDR: {exc}") from exc


Cidr = Annotated[str, AfterValidator(_cidr)]


class Defaults(Model):
    """Values a rule inherits unless it sets its own."""

    block_ttl: BlockTtl = DAY
    approval_timeout: ApprovalTimeout = HOUR
    # deny: an unanswered approval is denied; escalate: asked once more, of the escalation
    # topic, for another approval_timeout, then denied.
    on_approval_timeout: OnApprovalTimeout = OnApprovalTimeout.DENY


class Match(Model):
    """What a finding must be for a rule to apply: every condition given must hold."""

    types: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = ["*"]
    min_severity: Severity | None = None
    max_severity: Severity | None = None
    resource_kinds: list[str] | None = None
    resource_tags: dict[str, str] = Field(default_factory=dict)
    directions: list[Direction] | None = None
    # The product that found it, as Security Hub names products: GuardDuty, Inspector, Macie...
    products: list[Annotated[str, Field(min_length=1)]] | None = None

    @model_validator(mode="after")
    def _severity_range(self) -> Match:
        low, high = self.min_severity, self.max_severity
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_severity {low} is above max_severity {high}")
        return self


class Rule(Model):
    """One policy rule: a match, a mode and the actions to plan."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str = ""
    match: Match = Field(default_factory=Match)
    mode: Mode
    priority: Priority = Priority.NORMAL
    actions: list[ActionKind] = Field(default_factory=list)
    block_ttl: BlockTtl | None = None
    approval_timeout: ApprovalTimeout | None = None
    on_approval_timeout: OnApprovalTimeout | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        acting = self.mode in (Mode.AUTO, Mode.APPROVAL)
        if acting and not self.actions:
            raise ValueError(f"mode {self.mode} needs at least one action")
        if not acting and self.actions:
            raise ValueError(f"mode {self.mode} takes no actions")
        if len(set(self.actions)) != len(self.actions):
            raise ValueError("an action is listed twice")
        if self.block_ttl is not None and not acting:
            raise ValueError(f"block_ttl has no effect in mode {self.mode}")
        if self.approval_timeout is not None and self.mode != Mode.APPROVAL:
            raise ValueError("approval_timeout only applies to mode approval")
        if self.on_approval_timeout is not None and self.mode != Mode.APPROVAL:
            raise ValueError("on_approval_timeout only applies to mode approval")
        return self


class Policy(Model):
    """A whole policy: version 1, defaults, an allowlist and rules, the first match wins."""

    version: Literal[1]
    defaults: Defaults = Field(default_factory=Defaults)
    allowlist: list[Cidr] = Field(default_factory=list)
    safeguards: Safeguards = Field(default_factory=Safeguards)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}")
            seen.add(rule.name)
        return rules

    def networks(self) -> list[safety.IPNetwork]:
        """The allowlist as networks."""
        return [ipaddress.ip_network(entry) for entry in self.allowlist]

    def rule_for(self, finding: Finding) -> Rule | None:
        """The first rule whose match the finding meets, or None."""
        return next((rule for rule in self.rules if matches(rule.match, finding)), None)


def finding_directions(finding: Finding) -> set[Direction]:
    """The directions the finding's indicators name; unknown when none does."""
    directions = {i.direction for i in finding.indicators if i.direction is not None}
    return directions or {Direction.UNKNOWN}


def matches(match: Match, finding: Finding) -> bool:
    """Tell whether a finding meets every condition of a match."""
    if not any(fnmatchcase(finding.type, pattern) for pattern in match.types):
        return False
    if match.min_severity is not None and finding.severity < match.min_severity:
        return False
    if match.max_severity is not None and finding.severity > match.max_severity:
        return False
    if match.resource_kinds is not None and finding.resource.kind not in match.resource_kinds:
        return False
    tags = finding.resource.tags
    if any(tags.get(key) != value for key, value in match.resource_tags.items()):
        return False
    if match.products is not None and not any(
        fnmatchcase(finding.product, pattern) for pattern in match.products
    ):
        return False
    return match.directions is None or bool(set(match.directions) & finding_directions(finding))


def evaluate(
    policy: Policy,
    finding: Finding,
    enrichment: Enrichment,
    estate_addresses: Iterable[str],
) -> Decision:
    """Decide what to do about a finding: the policy's rule, narrowed by the safety rules."""
    refused = safety.refuse_finding(finding)
    if refused:
        return Decision(mode=Mode.IGNORE, reason=refused)

    rule = policy.rule_for(finding)
    if rule is None:
        return Decision(mode=Mode.NOTIFY, reason=NO_RULE_REASON)
    reason = _matched(rule, enrichment)
    if rule.mode in (Mode.NOTIFY, Mode.IGNORE):
        return Decision(mode=rule.mode, reason=reason, rule=rule.name, priority=rule.priority)

    exempt = safety.refuse_resource(finding.resource)
    if exempt:
        refusals = [
            Refusal(target=target, kind=kind.value, reason=exempt)
            for kind in rule.actions
            for target in _candidates(kind, finding)
        ]
        return Decision(
            mode=Mode.NOTIFY,
            reason=f"{exempt}: rule {rule.name!r} asks for {rule.mode}, no action taken",
            rule=rule.name,
            priority=rule.priority,
            refusals=refusals,
        )

    planned, refusals = _plan(policy, rule, finding, set(estate_addresses))
    actions = [action for action in planned if action.kind in AVAILABLE_ACTIONS]
    unavailable = [action for action in planned if action.kind not in AVAILABLE_ACTIONS]
    if not actions:
        return Decision(
            mode=Mode.NOTIFY,
            reason=_nothing_to_act_on(rule, refusals, unavailable),
            rule=rule.name,
            priority=rule.priority,
            refusals=refusals,
            unavailable=unavailable,
        )
    timeout = rule.approval_timeout or policy.defaults.approval_timeout
    on_timeout = rule.on_approval_timeout or policy.defaults.on_approval_timeout
    asking = rule.mode == Mode.APPROVAL
    return Decision(
        mode=rule.mode,
        reason=reason,
        rule=rule.name,
        priority=rule.priority,
        actions=actions,
        refusals=refusals,
        unavailable=unavailable,
        approval_timeout_seconds=timeout if asking else None,
        on_approval_timeout=on_timeout if asking else None,
    )


def _plan(
    policy: Policy, rule: Rule, finding: Finding, estate_addresses: set[str]
) -> tuple[list[PlannedAction], list[Refusal]]:
    allowlist = policy.networks()
    ttl = rule.block_ttl or policy.defaults.block_ttl
    actions: list[PlannedAction] = []
    refusals: list[Refusal] = []

    def plan(kind: ActionKind, target: str, indicators: list[Indicator], why: str = "") -> None:
        reason = _refuse_kind(kind, finding) or _refuse_target(
            kind, indicators, allowlist, estate_addresses, finding
        )
        if reason:
            refusals.append(Refusal(target=target, kind=kind.value, reason=why + reason))
            return
        actions.append(
            PlannedAction(
                id=f"{kind.value}:{target}",
                kind=kind,
                target=target,
                params=_params(kind, target, finding),
                ttl_seconds=ttl if kind in _EXPIRING else None,
            )
        )

    for kind in rule.actions:
        for target, indicators in _candidates(kind, finding).items():
            plan(kind, target, indicators)
    isolating = ActionKind.ISOLATE_INSTANCE in AVAILABLE_ACTIONS and any(
        action.kind is ActionKind.ISOLATE_INSTANCE for action in actions
    )
    if isolating:
        denied = {a.target for a in actions if a.kind in _NETWORK_ACL_DENIES}
        for kind, target, indicators in _connection_cuts(finding):
            if target not in denied:
                plan(kind, target, indicators, why=CONNECTION_CUT_REFUSED)
    # Grouped by target, as a person reads a plan: every action on one address together, in the
    # rule's order of actions, targets in the order the finding names them.
    order = {target: n for n, target in enumerate(dict.fromkeys(a.target for a in actions))}
    actions.sort(key=lambda action: order[action.target])
    return actions, refusals


# Either deny in the subnet's network ACL ends a connection with the address, once the
# instance is isolated: no packet of it passes one way.
_NETWORK_ACL_DENIES = frozenset({ActionKind.NACL_BLOCK, ActionKind.C2_BLOCK})
CONNECTION_CUT_REFUSED = "not denied to cut the isolated instance's connections: "


def _connection_cuts(finding: Finding) -> list[tuple[ActionKind, str, list[Indicator]]]:
    """The network ACL denies that end the connections an isolation leaves open.

    A security group change does not cut a connection already tracked, so an isolated instance
    would keep talking to the remotes the finding names. Each is denied the way it connects: an
    outbound address (command and control) by an outbound deny, any other by an inbound one.
    The safety rules apply to these as to any block: a victim is never denied, nor a private or
    allowlisted address.
    """
    cuts = []
    for target, indicators in _targets(finding.addresses()).items():
        outbound = any(indicator.direction is Direction.OUTBOUND for indicator in indicators)
        cuts.append(
            (ActionKind.C2_BLOCK if outbound else ActionKind.NACL_BLOCK, target, indicators)
        )
    return cuts


# Blocks expire; isolation and revocation end only by an explicit release or undo.
_EXPIRING = frozenset({ActionKind.WAF_BLOCK, ActionKind.NACL_BLOCK, ActionKind.C2_BLOCK})


def _candidates(kind: ActionKind, finding: Finding) -> dict[str, list[Indicator]]:
    """What an action of this kind would act on, by target, with the indicators naming it."""
    resource = finding.resource
    if kind in (ActionKind.WAF_BLOCK, ActionKind.NACL_BLOCK):
        return _targets(finding.addresses())
    if kind == ActionKind.C2_BLOCK:
        destinations = [
            indicator
            for indicator in finding.indicators
            if indicator.is_address or indicator.kind == IndicatorKind.DOMAIN
        ]
        return _targets(destinations)
    if kind == ActionKind.ISOLATE_INSTANCE:
        return {resource.instance_id: []} if resource.instance_id else {}
    if kind == ActionKind.REVOKE_CREDENTIALS:
        return {resource.access_key_id: []} if resource.access_key_id else {}
    return {name: [] for name in resource.bucket_names}


def _targets(indicators: list[Indicator]) -> dict[str, list[Indicator]]:
    """Group indicators by what they would be blocked as (a CIDR, a domain), in order."""
    grouped: dict[str, list[Indicator]] = {}
    for indicator in indicators:
        address = safety.parse_address(indicator.value) if indicator.is_address else None
        target = safety.as_cidr(address) if address is not None else indicator.value
        grouped.setdefault(target, []).append(indicator)
    return grouped


def _refuse_target(
    kind: ActionKind,
    indicators: list[Indicator],
    allowlist: list[safety.IPNetwork],
    estate_addresses: set[str],
    finding: Finding,
) -> str | None:
    # An address named twice is refused if any mention refuses it: an address the resource
    # both received traffic from and reached out to may be a victim.
    for indicator in indicators:
        if kind == ActionKind.C2_BLOCK:
            reason = safety.refuse_c2_target(indicator, finding)
            if not reason and indicator.is_address:
                reason = safety.refuse_blocking(
                    indicator,
                    allowlist=allowlist,
                    estate_addresses=estate_addresses,
                    resource=finding.resource,
                )
        else:
            reason = safety.refuse_address(
                indicator,
                allowlist=allowlist,
                estate_addresses=estate_addresses,
                resource=finding.resource,
            )
        if reason:
            return reason
    return None


def _refuse_kind(kind: ActionKind, finding: Finding) -> str | None:
    resource = finding.resource
    if kind == ActionKind.NACL_BLOCK and not (resource.vpc_id and resource.subnet_ids):
        return "the affected resource names no VPC and subnet for a network ACL"
    if kind == ActionKind.REVOKE_CREDENTIALS:
        return safety.refuse_credentials(resource)
    return None


def _params(kind: ActionKind, target: str, finding: Finding) -> dict[str, Any]:
    resource = finding.resource
    if kind == ActionKind.WAF_BLOCK:
        return {"ip_version": ipaddress.ip_network(target).version}
    if kind == ActionKind.NACL_BLOCK:
        return {
            "subnet_ids": list(dict.fromkeys(resource.subnet_ids)),
            "vpc_id": resource.vpc_id,
            "direction": Direction.INBOUND.value,
        }
    if kind == ActionKind.C2_BLOCK:
        return {"vpc_id": resource.vpc_id, "subnet_ids": list(resource.subnet_ids)}
    if kind == ActionKind.REVOKE_CREDENTIALS:
        return {
            "principal": resource.principal,
            "principal_id": resource.principal_id,
            "user_type": resource.user_type,
        }
    return {}


def _matched(rule: Rule, enrichment: Enrichment) -> str:
    reason = f"rule {rule.name!r} matched"
    if rule.description:
        reason += f": {rule.description}"
    known, total = enrichment.known_indicators, len(enrichment.indicators)
    if known:
        reason += f" ({known} of {total} indicators seen before)"
    return reason


def _nothing_to_act_on(
    rule: Rule, refusals: list[Refusal], unavailable: list[PlannedAction]
) -> str:
    asked = f"rule {rule.name!r} asks for {rule.mode}"
    reasons = "; ".join(dict.fromkeys(f"{r.target} ({r.kind}): {r.reason}" for r in refusals))
    if unavailable:
        planned = ", ".join(f"{action.kind.value} {action.target}" for action in unavailable)
        text = f"{asked}; planned {planned}: {NOT_YET_AVAILABLE}"
        return f"{text}; refused {reasons}" if refusals else text
    if not refusals:
        return f"{asked} but the finding names nothing to act on"
    return f"{asked} but every action was refused: {reasons}"


def parse_policy(document: Any, source: str = "policy") -> Policy:
    """Validate a policy document; errors name the source and the field."""
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: a policy is a mapping with version, defaults and rules")
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_location(error['loc'], document)}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise PolicyError(f"{source}: invalid policy: {problems}") from exc


def load_policy(path: str | Path) -> Policy:
    """Read a policy from a YAML (.yaml, .yml) or JSON (.json) file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise PolicyError(f"{path}: unknown policy format, expected .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: no such policy file") from exc
    return parse_policy(
        _read_json(path, text) if suffix == ".json" else _read_yaml(path, text), str(path)
    )


def policy_as_json(path: str | Path) -> str:
    """Validate a policy file and write it as the JSON the Lambda bundle ships."""
    policy = load_policy(path)
    return json.dumps(policy.model_dump(mode="json"), indent=2) + "\n"


def _read_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def _read_yaml(path: Path, text: str) -> Any:
    # Imported here: the Lambda bundle has no pyyaml and only ever reads the JSON policy.
    try:
        import yaml
    except ImportError as exc:
        raise PolicyError(f"{path}: reading YAML needs pyyaml; ship the policy as JSON") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc


def _location(loc: tuple[Any, ...], document: Any) -> str:
    """Write a validation error's location as rules[2] (name).match.types[0]."""
    text = ""
    node = document
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                text += f" ({node['name']})"
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return text or "policy"


# --- checking and explaining a policy -------------------------------------------------------

NOT_A_MAPPING = "a policy is a mapping with version, defaults and rules"

# Every condition of a Match, in the order explain_match checks them.
MATCH_CONDITIONS = (
    "types",
    "min_severity",
    "max_severity",
    "resource_kinds",
    "resource_tags",
    "products",
    "directions",
)


class PolicyProblem(Model):
    """One reason a policy document is invalid: its validation location, field path and reason."""

    loc: tuple[str | int, ...]
    path: str
    reason: str


class ConditionCheck(Model):
    """One condition of a rule's match held against one finding, with both values."""

    condition: str
    held: bool
    rule_value: Any
    finding_value: Any
    text: str


def policy_problems(document: Any) -> tuple[Policy | None, list[PolicyProblem]]:
    """Validate a policy document: the policy, or None and each problem as parse_policy words it."""
    if not isinstance(document, dict):
        return None, [PolicyProblem(loc=(), path="policy", reason=NOT_A_MAPPING)]
    try:
        return Policy.model_validate(document), []
    except ValidationError as exc:
        problems = [
            PolicyProblem(
                loc=tuple(error["loc"]),
                path=_location(error["loc"], document),
                reason=error["msg"].removeprefix("Value error, "),
            )
            for error in exc.errors()
        ]
        return None, problems


def explain_match(match: Match, finding: Finding) -> list[ConditionCheck]:
    """Check each condition a match gives, as matches() does, saying what it compared."""
    checks = [_types_check(match.types, finding.type)]
    severity = finding.severity
    if match.min_severity is not None:
        held = not severity < match.min_severity
        sign = ">=" if held else "<"
        checks.append(
            ConditionCheck(
                condition="min_severity",
                held=held,
                rule_value=match.min_severity,
                finding_value=severity,
                text=f"severity {severity} {sign} min_severity {match.min_severity:g}",
            )
        )
    if match.max_severity is not None:
        held = not severity > match.max_severity
        sign = "<=" if held else ">"
        checks.append(
            ConditionCheck(
                condition="max_severity",
                held=held,
                rule_value=match.max_severity,
                finding_value=severity,
                text=f"severity {severity} {sign} max_severity {match.max_severity:g}",
            )
        )
    if match.resource_kinds is not None:
        kind = finding.resource.kind
        held = kind in match.resource_kinds
        checks.append(
            ConditionCheck(
                condition="resource_kinds",
                held=held,
                rule_value=list(match.resource_kinds),
                finding_value=kind,
                text=f"resource kind {kind} {'in' if held else 'not in'} "
                f"[{', '.join(match.resource_kinds)}]",
            )
        )
    checks += [
        _tag_check(key, value, finding.resource.tags) for key, value in match.resource_tags.items()
    ]
    if match.products is not None:
        hit = next((p for p in match.products if fnmatchcase(finding.product, p)), None)
        checks.append(
            ConditionCheck(
                condition="products",
                held=hit is not None,
                rule_value=list(match.products),
                finding_value=finding.product,
                text=f"product {finding.product} matches {hit}"
                if hit is not None
                else f"product {finding.product} matches none of [{', '.join(match.products)}]",
            )
        )
    if match.directions is not None:
        has = finding_directions(finding)
        wants = [str(direction) for direction in match.directions]
        checks.append(
            ConditionCheck(
                condition="directions",
                held=bool(set(match.directions) & has),
                rule_value=wants,
                finding_value=sorted(str(direction) for direction in has),
                text=f"directions: finding has {{{', '.join(sorted(has))}}}, "
                f"rule wants [{', '.join(wants)}]",
            )
        )
    return checks


def _types_check(patterns: list[str], finding_type: str) -> ConditionCheck:
    hit = next((pattern for pattern in patterns if fnmatchcase(finding_type, pattern)), None)
    if hit is not None:
        text = f"type {finding_type} matches {hit}"
    else:
        text = f"type {finding_type} matches none of [{', '.join(patterns)}]"
    return ConditionCheck(
        condition="types",
        held=hit is not None,
        rule_value=list(patterns),
        finding_value=finding_type,
        text=text,
    )


def _tag_check(key: str, wanted: str, tags: dict[str, str]) -> ConditionCheck:
    value = tags.get(key)
    if value is None:
        text = f"tag {key}={wanted}: the resource has no tag {key}"
    else:
        text = f"tag {key}={wanted}: the resource has {key}={value}"
    return ConditionCheck(
        condition="resource_tags",
        held=value == wanted,
        rule_value={key: wanted},
        finding_value={key: value} if value is not None else {},
        text=text,
    )


def field_path(loc: tuple[Any, ...], document: Any) -> str:
    """Write a location in a policy document as its errors do: rules[2] (name).match.types[0]."""
    return _location(loc, document)
