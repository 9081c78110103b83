"""Read AWS Security Finding Format (ASFF) findings, as Security Hub delivers them, into Finding."""

from __future__ import annotations

import copy
import functools
import ipaddress
import math
import re
from datetime import datetime
from importlib import resources
from typing import Any

from pydantic import ValidationError

from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import (
    Activity,
    ApiCall,
    Container,
    Direction,
    Finding,
    Indicator,
    IndicatorKind,
    IndicatorRole,
    Resource,
    Threat,
    severity_label,
)
from cloud_sniper.domain.readers import (
    address as _address,
)
from cloud_sniper.domain.readers import (
    as_dict as _dict,
)
from cloud_sniper.domain.readers import (
    as_list as _list,
)
from cloud_sniper.domain.readers import (
    first as _first,
)
from cloud_sniper.domain.readers import (
    is_true as _is_true,
)
from cloud_sniper.domain.readers import (
    json_type as _json_type,
)
from cloud_sniper.domain.readers import (
    text as _str,
)
from cloud_sniper.domain.readers import (
    timestamp as _timestamp,
)
from cloud_sniper.domain.readers import (
    unique as _unique,
)

SCHEMA_VERSION = "2018-10-08"
SECURITY_HUB_SOURCE = "aws.securityhub"
GUARDDUTY_SOURCE = "aws.guardduty"
IMPORTED_DETAIL_TYPE = "Security Hub Findings - Imported"

# Security Hub's documented mapping of a severity label to its normalized score (0-100).
LABEL_SCORES = {"INFORMATIONAL": 0, "LOW": 1, "MEDIUM": 40, "HIGH": 70, "CRITICAL": 90}
_LABEL_BANDS = {
    "INFORMATIONAL": (0, 0),
    "LOW": (1, 39),
    "MEDIUM": (40, 69),
    "HIGH": (70, 89),
    "CRITICAL": (90, 100),
}

# Workflow statuses and record states Cloud Sniper never acts on: a person or the product
# closed the finding.
CLOSED_WORKFLOW = frozenset({"RESOLVED", "SUPPRESSED"})
CLOSED_RECORD = frozenset({"ARCHIVED"})

# ASFF resource types under the names GuardDuty gives them, so one policy reads both.
RESOURCE_KINDS = {
    "AwsEc2Instance": "Instance",
    "AwsIamAccessKey": "AccessKey",
    "AwsS3Bucket": "S3Bucket",
    "AwsS3Object": "S3Object",
    "AwsEksCluster": "EKSCluster",
    "AwsEcsCluster": "ECSCluster",
    "Container": "Container",
    "AwsLambdaFunction": "Lambda",
    "AwsRdsDbInstance": "RDSDBInstance",
    "AwsEc2Volume": "EBSVolume",
}
# When a finding names several resources, the kind is the first of these it names: an access
# key is what acted on the bucket or cluster, not what was affected.
_KIND_ORDER = [kind for kind in RESOURCE_KINDS if kind != "AwsIamAccessKey"] + ["AwsIamAccessKey"]

# AWS products by the name their ProductArn gives them ("product/aws/<name>").
PRODUCT_NAMES = {
    "guardduty": "GuardDuty",
    "inspector": "Inspector",
    "macie": "Macie",
    "access-analyzer": "IAM Access Analyzer",
    "securityhub": "Security Hub",
    "config": "Config",
    "firewall-manager": "Firewall Manager",
    "health": "Health",
    "ssm-patch-manager": "Systems Manager Patch Manager",
}

_GUARDDUTY_ID = re.compile(
    r"^arn:aws[a-z-]*:guardduty:[a-z0-9-]+:\d{12}:detector/[^/]+/finding/(?P<id>[^/]+)$"
)
_PRODUCT_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):securityhub:(?P<region>[a-z0-9-]*):\d{0,12}:?"
    r"product/(?P<company>[^/]+)/(?P<product>[^/]+)$"
)
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_SHA256 = re.compile(r"^[0-9A-Fa-f]{64}$")
_ACCESS_KEY = re.compile(r"(AKIA|ASIA)[A-Z0-9]{12,124}$")
_GUARDDUTY_FIELDS = "aws/guardduty/service/"
# An instance's addresses inside a VPC; ASFF lists them with its public ones.
_PRIVATE = [
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
]

_INBOUND = (IndicatorRole.ATTACKER, Direction.INBOUND)
_OUTBOUND = (IndicatorRole.TARGET, Direction.OUTBOUND)
_ROLES = {"INBOUND": _INBOUND, "IN": _INBOUND, "OUTBOUND": _OUTBOUND, "OUT": _OUTBOUND}


# --- delivery shapes --------------------------------------------------------------------------


def is_finding(document: Any) -> bool:
    """Tell an ASFF finding from a GuardDuty one: ASFF has its schema version and ProductArn."""
    return (
        isinstance(document, dict)
        and document.get("SchemaVersion") == SCHEMA_VERSION
        and "ProductArn" in document
    )


def is_event(document: Any) -> bool:
    """Tell whether a delivery is a "Security Hub Findings - Imported" event."""
    return isinstance(document, dict) and document.get("detail-type") == IMPORTED_DETAIL_TYPE


def event_findings(event: dict) -> list[Any]:
    """The findings of a Security Hub event, checked to be a non-empty array."""
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise InvalidFindingError(f"event.detail: {_not_object(detail)}")
    findings = detail.get("findings")
    if findings is None:
        raise InvalidFindingError("event.detail.findings: missing")
    if not isinstance(findings, list):
        raise InvalidFindingError(
            f"event.detail.findings: not a JSON array ({_json_type(findings)})"
        )
    if not findings:
        raise InvalidFindingError("event.detail.findings: empty")
    return findings


def split(delivery: dict) -> list[dict]:
    """One delivery per finding: a Security Hub event of N findings makes N events of one.

    Each keeps the event's envelope, so that it reads as Security Hub sent it. Any other
    delivery comes back alone.
    """
    if not is_event(delivery):
        return [delivery]
    findings = event_findings(delivery)
    if len(findings) == 1:
        return [delivery]
    envelope = {key: value for key, value in delivery.items() if key != "detail"}
    detail = {key: value for key, value in delivery["detail"].items() if key != "findings"}
    return [
        {
            **copy.deepcopy(envelope),
            "resources": _resources_of(envelope.get("resources"), finding),
            "detail": {**copy.deepcopy(detail), "findings": [finding]},
        }
        for finding in findings
    ]


def _resources_of(resources_: Any, finding: Any) -> Any:
    """The event's resources naming this finding (Security Hub's id ends with its Id)."""
    finding_id = _str(_dict(finding).get("Id"))
    if not isinstance(resources_, list) or not finding_id:
        return copy.deepcopy(resources_)
    own = [item for item in resources_ if isinstance(item, str) and item.endswith(finding_id)]
    return own or copy.deepcopy(resources_)


def event_finding(event: dict) -> dict:
    """The one finding of a Security Hub event; an event of several must be split first."""
    findings = event_findings(event)
    if len(findings) > 1:
        raise InvalidFindingError(
            f"event.detail.findings: {len(findings)} findings; split the event into one per finding"
        )
    finding = findings[0]
    if not isinstance(finding, dict):
        raise InvalidFindingError(f"event.detail.findings[0]: {_not_object(finding)}")
    return finding


def closed(finding: dict) -> str | None:
    """Why the pipeline leaves an ASFF finding alone (resolved, suppressed, archived), if so."""
    status = _str(_dict(finding.get("Workflow")).get("Status"))
    if status and status.upper() in CLOSED_WORKFLOW:
        return f"finding.Workflow.Status: {status.upper()}"
    state = _str(finding.get("RecordState"))
    if state and state.upper() in CLOSED_RECORD:
        return f"finding.RecordState: {state.upper()}"
    return None


def produced_by_guardduty(finding: dict) -> bool:
    """Tell whether GuardDuty produced the finding, whatever Security Hub's own fields say."""
    return _product_slug(finding) == ("aws", "guardduty") or _product(finding) == "GuardDuty"


def source(finding: dict) -> str:
    """Who produced the finding, as the incident is named: GuardDuty or Security Hub."""
    if produced_by_guardduty(finding) and _guardduty_id(finding):
        return GUARDDUTY_SOURCE
    return SECURITY_HUB_SOURCE


# --- the finding ------------------------------------------------------------------------------


def normalize(finding: Any) -> Finding:
    """Normalize one ASFF finding into a Finding.

    A finding GuardDuty produced gets GuardDuty's finding id, type, severity and source, so it
    is the same incident, and the same execution, as GuardDuty's own delivery of that update.
    Raises InvalidFindingError naming the ASFF field that is missing or invalid.
    """
    if not isinstance(finding, dict):
        raise InvalidFindingError(f"finding: {_not_object(finding)}")
    guardduty = produced_by_guardduty(finding)
    product_fields = {
        key: value
        for key, value in _dict(finding.get("ProductFields")).items()
        if isinstance(key, str) and isinstance(value, str)
    }

    # Checked in this order so that the first error names the most basic missing field.
    asff_id = _required(finding, "Id")
    finding_id = (_guardduty_id(finding) if guardduty else None) or asff_id
    finding_type = _type(finding, guardduty)
    severity = _severity(finding, guardduty)
    account_id = _required(finding, "AwsAccountId")
    if not isinstance(account_id, str) or not _ACCOUNT_ID.match(account_id):
        raise InvalidFindingError(
            f"finding.AwsAccountId: not a 12-digit account id ({account_id!r:.40})"
        )
    region = _region(finding)
    updated_at = _timestamp(_required(finding, "UpdatedAt"), "finding.UpdatedAt")
    created = finding.get("CreatedAt")
    resources_ = _resources(finding)
    action = _action(finding, product_fields if guardduty else {})
    fields = {
        "id": finding_id,
        "type": finding_type,
        "source": source(finding),
        "title": _str(finding.get("Title")) or "",
        "description": _str(finding.get("Description")) or "",
        "severity": severity,
        "severity_label": severity_label(severity),
        "account_id": account_id,
        "region": region,
        "partition": _partition(finding, resources_),
        "created_at": _timestamp(created, "finding.CreatedAt") if created else updated_at,
        "updated_at": updated_at,
        "first_seen": _optional_timestamp(finding, "FirstObservedAt"),
        "last_seen": _optional_timestamp(finding, "LastObservedAt"),
        "count": _count(product_fields),
        "resource": _resource(resources_),
        "indicators": _indicators(finding, action, resources_),
        "activity": _activity(finding, action),
        "product": _product(finding) or "Security Hub",
        "sample": _is_sample(finding, product_fields),
        "archived": closed(finding) is not None
        or _is_true(product_fields.get(_GUARDDUTY_FIELDS + "archived")),
    }
    try:
        return Finding(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"])
        raise InvalidFindingError(f"finding.{path}: {first['msg']}") from exc


def _guardduty_id(finding: dict) -> str | None:
    """GuardDuty's finding id: the last part of the ASFF Id, GuardDuty's finding ARN."""
    match = _GUARDDUTY_ID.match(_str(finding.get("Id")) or "")
    return match.group("id") if match else None


def _product(finding: dict) -> str | None:
    fields = _dict(finding.get("ProductFields"))
    named = _first(
        _str(finding.get("ProductName")), _str(fields.get("aws/securityhub/ProductName"))
    )
    if named:
        return named
    slug = _product_slug(finding)
    if slug is None:
        return None
    company, product = slug
    if company == "aws":
        return PRODUCT_NAMES.get(product, product)
    return f"{company}/{product}"


def _product_slug(finding: dict) -> tuple[str, str] | None:
    match = _PRODUCT_ARN.match(_str(finding.get("ProductArn")) or "")
    return (match.group("company"), match.group("product")) if match else None


# --- type and severity ------------------------------------------------------------------------


def _type(finding: dict, guardduty: bool) -> str:
    # The provider's types first: a person may change Types, never FindingProviderFields.
    provided = _dict(finding.get("FindingProviderFields")).get("Types")
    types = [t for t in (_list(provided) or _list(finding.get("Types"))) if _str(t)]
    if not types:
        if finding.get("Types") is None and provided is None:
            raise InvalidFindingError("finding.Types: missing")
        raise InvalidFindingError("finding.Types: not a non-empty array of strings")
    if guardduty:
        for asff_type in types:
            found = guardduty_type(asff_type)
            if found:
                return found
    return types[0].strip()


def guardduty_type(asff_type: str) -> str | None:
    """GuardDuty's finding type from the ASFF type it is published as, when it can be told.

    ASFF writes "UnauthorizedAccess:EC2/SSHBruteForce" as "TTPs/Initial
    Access/UnauthorizedAccess:EC2-SSHBruteForce"; a few types differ more (GuardDuty's
    documented table), so the type is looked up among GuardDuty's documented types by its
    letters, with the ASFF category standing in for the threat purpose where ASFF drops it.
    """
    parts = [part.strip() for part in asff_type.split("/") if part.strip()]
    if len(parts) < 2:
        return None
    by_letters, by_purpose = _known_types()
    # The classifier is the last part; a few types keep GuardDuty's slash in it.
    for classifier in ("/".join(parts[-2:]), parts[-1]):
        found = by_letters.get(_letters(classifier))
        if found:
            return found
    for category in parts[1:-1]:
        found = by_purpose.get((_letters(category), _letters(parts[-1])))
        if found:
            return found
    # Not documented yet: undo ASFF's usual spelling, "Purpose:Resource-Family" to a slash.
    classifier = parts[-1]
    purpose, colon, rest = classifier.partition(":")
    if colon and "-" in rest and "/" not in rest:
        return f"{purpose}:{rest.replace('-', '/', 1)}"
    return None


@functools.cache
def _known_types() -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    table = resources.files("cloud_sniper") / "data" / "guardduty-finding-types.tsv"
    rows = table.read_text(encoding="utf-8").splitlines()[1:]
    types = [row.split("\t", 1)[0] for row in rows if row.strip()]
    by_letters = {_letters(name): name for name in types}
    by_purpose = {}
    for name in types:
        purpose, _, rest = name.partition(":")
        by_purpose[(_letters(purpose), _letters(rest))] = name
    return by_letters, by_purpose


def _letters(text: str) -> str:
    return re.sub(r"[^a-z0-9!.&]", "", text.lower())


def _severity(finding: dict, guardduty: bool) -> float:
    """The severity on GuardDuty's 0-10 scale.

    GuardDuty's own score is Severity.Product; for other products the label is authoritative
    (Normalized is deprecated and may be stale): Normalized / 10 when it falls in the label's
    band, else the label's documented score / 10.
    """
    severity = finding.get("Severity")
    if severity is None:
        severity = _dict(finding.get("FindingProviderFields")).get("Severity")
    if severity is None:
        raise InvalidFindingError("finding.Severity: missing")
    if not isinstance(severity, dict):
        raise InvalidFindingError(f"finding.Severity: {_not_object(severity)}")

    product = _number(severity.get("Product"))
    if guardduty and product is not None and 0 <= product <= 10:
        return product

    normalized = severity.get("Normalized")
    if normalized is not None:
        score = _number(normalized)
        if score is None or not 0 <= score <= 100:
            raise InvalidFindingError(
                f"finding.Severity.Normalized: not a number from 0 to 100 ({normalized!r:.40})"
            )
    else:
        score = None

    label = severity.get("Label")
    if label is None:
        if score is None:
            raise InvalidFindingError("finding.Severity: neither Label nor Normalized")
        return score / 10
    if not isinstance(label, str) or label.strip().upper() not in LABEL_SCORES:
        raise InvalidFindingError(
            f"finding.Severity.Label: not one of {', '.join(LABEL_SCORES)} ({label!r:.40})"
        )
    label = label.strip().upper()
    low, high = _LABEL_BANDS[label]
    if score is not None and low <= score <= high:
        return score / 10
    return LABEL_SCORES[label] / 10


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _region(finding: dict) -> str:
    region = _str(finding.get("Region"))
    if region is None:
        match = _PRODUCT_ARN.match(_str(finding.get("ProductArn")) or "")
        region = match.group("region") if match else None
    if region is None:
        raise InvalidFindingError("finding.Region: missing")
    if not _REGION.match(region):
        raise InvalidFindingError(f"finding.Region: not an AWS region ({region!r:.40})")
    return region


def _partition(finding: dict, resources_: list[dict]) -> str:
    match = _PRODUCT_ARN.match(_str(finding.get("ProductArn")) or "")
    if match:
        return match.group("partition")
    return _first(*[_str(item.get("Partition")) for item in resources_]) or "aws"


def _count(product_fields: dict[str, str]) -> int:
    count = product_fields.get(_GUARDDUTY_FIELDS + "count", "")
    return int(count) if count.isdigit() and int(count) > 0 else 1


def _is_sample(finding: dict, product_fields: dict[str, str]) -> bool:
    return (
        finding.get("Sample") is True
        or _is_true(product_fields.get(_GUARDDUTY_FIELDS + "additionalInfo/sample"))
        or _is_true(product_fields.get("sample"))
    )


# --- resources --------------------------------------------------------------------------------


def _resources(finding: dict) -> list[dict]:
    value = finding.get("Resources")
    if value is None:
        raise InvalidFindingError("finding.Resources: missing")
    if not isinstance(value, list) or not value:
        raise InvalidFindingError("finding.Resources: not a non-empty array")
    for number, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidFindingError(f"finding.Resources[{number}]: {_not_object(item)}")
        if not _str(item.get("Type")):
            raise InvalidFindingError(f"finding.Resources[{number}].Type: missing")
    return value


def _resource(items: list[dict]) -> Resource:
    """The affected resource: what every resource the finding names tells of it."""
    types = [item["Type"].strip() for item in items]
    primary = next((kind for kind in _KIND_ORDER if kind in types), types[0])

    found: dict[str, list] = {
        "arns": [],
        "subnet_ids": [],
        "security_group_ids": [],
        "public_ips": [],
        "private_ips": [],
        "bucket_names": [],
        "object_keys": [],
        "volume_arns": [],
        "containers": [],
    }
    single: dict[str, str | None] = {}
    tags: dict[str, str] = {}
    for item in items:
        kind = item["Type"].strip()
        resource_id = _str(item.get("Id")) or ""
        details = _dict(_dict(item.get("Details")).get(kind))
        if resource_id.startswith("arn:"):
            found["arns"].append(resource_id)
        tags.update(
            {str(k): str(v) for k, v in _dict(item.get("Tags")).items() if isinstance(v, str)}
        )
        reader = _READERS.get(kind)
        if reader is not None:
            reader(resource_id, details, found, single)

    return Resource(
        kind=RESOURCE_KINDS.get(primary, primary),
        tags=tags,
        **{key: _unique(values) for key, values in found.items() if key != "containers"},
        containers=found["containers"],
        **{key: value for key, value in single.items() if value},
    )


def _set(single: dict[str, str | None], key: str, value: str | None) -> None:
    # The first resource naming a value wins: Resources lists the affected one first.
    if value and not single.get(key):
        single[key] = value


def _ec2_instance(resource_id: str, details: dict, found: dict, single: dict) -> None:
    _set(single, "instance_id", _str(details.get("InstanceId")) or _arn_name(resource_id))
    _set(single, "vpc_id", _str(details.get("VpcId")))
    _set(single, "instance_profile_arn", _str(details.get("IamInstanceProfileArn")))
    found["subnet_ids"].append(_str(details.get("SubnetId")))
    for raw in _list(details.get("IpV4Addresses")):
        address = _address(raw)
        if address:
            private = any(ipaddress.ip_address(address[1]) in net for net in _PRIVATE)
            found["private_ips" if private else "public_ips"].append(address[1])
    # IPv6 addresses of an instance are globally routable: they are public addresses of the estate.
    found["public_ips"] += [a[1] for a in map(_address, _list(details.get("IpV6Addresses"))) if a]


def _access_key(resource_id: str, details: dict, found: dict, single: dict) -> None:
    key_id = _str(details.get("AccessKeyId")) or resource_id.rsplit(":", 1)[-1]
    _set(single, "access_key_id", key_id if _ACCESS_KEY.match(key_id or "") else None)
    principal_id = _str(details.get("PrincipalId"))
    _set(
        single,
        "principal",
        _first(_str(details.get("PrincipalName")), _str(details.get("UserName")), principal_id),
    )
    _set(single, "principal_id", principal_id)
    _set(single, "user_type", _str(details.get("PrincipalType")))


def _s3_bucket(resource_id: str, details: dict, found: dict, single: dict) -> None:
    found["bucket_names"].append(_str(details.get("Name")) or _s3_path(resource_id))


def _s3_object(resource_id: str, details: dict, found: dict, single: dict) -> None:
    path = _s3_path(resource_id)
    if path and "/" in path:
        found["bucket_names"].append(path.split("/", 1)[0])
        found["object_keys"].append(path)


def _eks_cluster(resource_id: str, details: dict, found: dict, single: dict) -> None:
    _set(single, "cluster", _str(details.get("Name")) or _arn_name(resource_id))
    config = _dict(details.get("ResourcesVpcConfig"))
    found["subnet_ids"] += [_str(s) for s in _list(config.get("SubnetIds"))]
    found["security_group_ids"] += [_str(s) for s in _list(config.get("SecurityGroupIds"))]


def _ecs_cluster(resource_id: str, details: dict, found: dict, single: dict) -> None:
    _set(single, "cluster", _str(details.get("ClusterName")) or _arn_name(resource_id))


def _container(resource_id: str, details: dict, found: dict, single: dict) -> None:
    found["containers"].append(
        Container(
            name=_str(details.get("Name")),
            image=_str(details.get("ImageName")) or _str(details.get("ImageId")),
            privileged=details.get("Privileged")
            if isinstance(details.get("Privileged"), bool)
            else None,
        )
    )


def _lambda_function(resource_id: str, details: dict, found: dict, single: dict) -> None:
    _set(single, "function_name", _str(details.get("FunctionName")) or _arn_name(resource_id))
    config = _dict(details.get("VpcConfig"))
    _set(single, "vpc_id", _str(config.get("VpcId")))
    found["subnet_ids"] += [_str(s) for s in _list(config.get("SubnetIds"))]
    found["security_group_ids"] += [_str(s) for s in _list(config.get("SecurityGroupIds"))]


def _rds_instance(resource_id: str, details: dict, found: dict, single: dict) -> None:
    _set(
        single,
        "db_instance_id",
        _str(details.get("DBInstanceIdentifier")) or _arn_name(resource_id),
    )
    _set(single, "db_cluster_id", _str(details.get("DBClusterIdentifier")))


def _ec2_volume(resource_id: str, details: dict, found: dict, single: dict) -> None:
    if resource_id.startswith("arn:"):
        found["volume_arns"].append(resource_id)


_READERS = {
    "AwsEc2Instance": _ec2_instance,
    "AwsIamAccessKey": _access_key,
    "AwsS3Bucket": _s3_bucket,
    "AwsS3Object": _s3_object,
    "AwsEksCluster": _eks_cluster,
    "AwsEcsCluster": _ecs_cluster,
    "Container": _container,
    "AwsLambdaFunction": _lambda_function,
    "AwsRdsDbInstance": _rds_instance,
    "AwsEc2Volume": _ec2_volume,
}


def _arn_name(resource_id: str) -> str | None:
    """The name at the end of an ARN: "instance/i-0abc" or "db:orders" give i-0abc and orders."""
    if not resource_id.startswith("arn:"):
        return _str(resource_id)
    tail = resource_id.split(":", 5)[-1]
    return _str(re.split(r"[/:]", tail)[-1])


def _s3_path(resource_id: str) -> str | None:
    if resource_id.startswith("arn:"):
        return _str(resource_id.split(":::", 1)[-1])
    return _str(resource_id)


# --- indicators and activity ------------------------------------------------------------------


def _action(finding: dict, guardduty_fields: dict[str, str]) -> dict:
    """The finding's Action, or for an older GuardDuty finding the one its ProductFields spell."""
    action = _dict(finding.get("Action"))
    if action or not guardduty_fields:
        return action
    prefix = _GUARDDUTY_FIELDS + "action/"
    return _pascal(
        _unflatten(
            {
                key[len(prefix) :]: value
                for key, value in guardduty_fields.items()
                if key.startswith(prefix)
            }
        )
    )


def _indicators(finding: dict, action: dict, items: list[dict]) -> list[Indicator]:
    threat_lists = _unique(
        _str(_dict(item).get("Source")) for item in _list(finding.get("ThreatIntelIndicators"))
    )
    found: list[Indicator] = []
    found += _network_connection(_dict(action.get("NetworkConnectionAction")))
    found += _port_probe(_dict(action.get("PortProbeAction")))
    found += _dns_request(_dict(action.get("DnsRequestAction")))
    found += _api_call(_dict(action.get("AwsApiCallAction")), items)
    found += _network(_dict(finding.get("Network")))
    found += _threat_intel(finding)
    found += [Indicator(kind=IndicatorKind.FILE_HASH, value=h) for h in _hashes(finding)]

    unique: dict[tuple[IndicatorKind, str, IndicatorRole], Indicator] = {}
    for indicator in found:
        if indicator.is_address or indicator.kind is IndicatorKind.DOMAIN:
            indicator.threat_lists = list(threat_lists)
        unique.setdefault((indicator.kind, indicator.value, indicator.role), indicator)
    return list(unique.values())


def _network_connection(action: dict) -> list[Indicator]:
    if not action:
        return []
    direction = str(action.get("ConnectionDirection") or "").upper()
    role, flow = _ROLES.get(direction, (IndicatorRole.OBSERVED, Direction.UNKNOWN))
    return [
        Indicator(
            kind=kind,
            value=value,
            role=role,
            direction=flow,
            local_port=_port(_dict(action.get("LocalPortDetails")).get("Port")),
            remote_port=_port(_dict(action.get("RemotePortDetails")).get("Port")),
            protocol=_str(action.get("Protocol")),
        )
        for kind, value in _addresses(_dict(action.get("RemoteIpDetails")))
    ]


def _port_probe(action: dict) -> list[Indicator]:
    found = []
    for probe in map(_dict, _list(action.get("PortProbeDetails"))):
        found += [
            Indicator(
                kind=kind,
                value=value,
                role=IndicatorRole.ATTACKER,
                direction=Direction.INBOUND,
                local_port=_port(_dict(probe.get("LocalPortDetails")).get("Port")),
            )
            for kind, value in _addresses(_dict(probe.get("RemoteIpDetails")))
        ]
    return found


def _dns_request(action: dict) -> list[Indicator]:
    domain = _str(action.get("Domain"))
    if not domain:
        return []
    return [
        Indicator(
            kind=IndicatorKind.DOMAIN,
            value=domain.rstrip(".").lower(),
            direction=Direction.OUTBOUND,
            protocol=_str(action.get("Protocol")),
        )
    ]


def _api_call(action: dict, items: list[dict]) -> list[Indicator]:
    if not action:
        return []
    found = [
        Indicator(kind=kind, value=value, role=IndicatorRole.ATTACKER, direction=Direction.INBOUND)
        for kind, value in _addresses(_dict(action.get("RemoteIpDetails")))
    ]
    domain = _str(_dict(action.get("DomainDetails")).get("Domain"))
    if domain:
        found.append(Indicator(kind=IndicatorKind.DOMAIN, value=domain.rstrip(".").lower()))
    keys = [item for item in items if str(item.get("Type")).strip() == "AwsIamAccessKey"]
    for item in keys:
        single: dict[str, str | None] = {}
        _access_key(
            _str(item.get("Id")) or "",
            _dict(_dict(item.get("Details")).get("AwsIamAccessKey")),
            {},
            single,
        )
        if single.get("access_key_id"):
            found.append(Indicator(kind=IndicatorKind.ACCESS_KEY, value=single["access_key_id"]))
        if single.get("principal"):
            found.append(Indicator(kind=IndicatorKind.PRINCIPAL, value=single["principal"]))
    return found


def _network(network: dict) -> list[Indicator]:
    """The remote party of Network: the source of an inbound flow, the destination of outbound."""
    direction = str(network.get("Direction") or "").upper()
    if direction not in ("IN", "OUT"):
        # Without a direction neither end is known to be remote: the other may be our own.
        return []
    role, flow = _ROLES[direction]
    remote, local = ("Source", "Destination") if direction == "IN" else ("Destination", "Source")
    found = [
        Indicator(
            kind=kind,
            value=value,
            role=role,
            direction=flow,
            local_port=_port(network.get(f"{local}Port")),
            remote_port=_port(network.get(f"{remote}Port")),
            protocol=_str(network.get("Protocol")),
        )
        for kind, value in _addresses(
            {"V4": network.get(f"{remote}IpV4"), "V6": network.get(f"{remote}IpV6")}
        )
    ]
    domain = _str(network.get(f"{remote}Domain"))
    if domain:
        found.append(
            Indicator(kind=IndicatorKind.DOMAIN, value=domain.rstrip(".").lower(), direction=flow)
        )
    return found


def _threat_intel(finding: dict) -> list[Indicator]:
    """Threat intelligence indicators: named by the finding, without a role of their own."""
    found = []
    for item in map(_dict, _list(finding.get("ThreatIntelIndicators"))):
        kind = str(item.get("Type") or "").upper()
        value = _str(item.get("Value"))
        if not value:
            continue
        if kind in ("IPV4_ADDRESS", "IPV6_ADDRESS"):
            address = _address(value)
            if address:
                found.append(Indicator(kind=address[0], value=address[1]))
        elif kind == "DOMAIN":
            found.append(Indicator(kind=IndicatorKind.DOMAIN, value=value.rstrip(".").lower()))
    return found


def _hashes(finding: dict) -> list[str]:
    values = [_str(_dict(path).get("Hash")) for threat in _threats(finding) for path in threat]
    for item in map(_dict, _list(finding.get("ThreatIntelIndicators"))):
        if str(item.get("Type") or "").upper() == "HASH_SHA256":
            values.append(_str(item.get("Value")))
    return _unique(value.lower() for value in values if value and _SHA256.match(value))


def _threats(finding: dict) -> list[list[Any]]:
    return [_list(_dict(threat).get("FilePaths")) for threat in _list(finding.get("Threats"))]


def _activity(finding: dict, action: dict) -> Activity:
    api = _dict(action.get("AwsApiCallAction"))
    threats = []
    for item in map(_dict, _list(finding.get("Threats"))):
        paths = [_dict(path) for path in _list(item.get("FilePaths"))]
        threats.append(
            Threat(
                name=_str(item.get("Name")) or "unnamed",
                severity=_str(item.get("Severity")),
                file_paths=_unique(_str(path.get("FilePath")) for path in paths),
                hashes=_unique(_str(path.get("Hash")) for path in paths),
            )
        )
    return Activity(
        action_type=_str(action.get("ActionType")),
        api_call=ApiCall(
            service=_str(api.get("ServiceName")),
            name=_str(api.get("Api")),
            caller_type=_str(api.get("CallerType")),
        )
        if api
        else None,
        threats=threats,
    )


def _addresses(details: dict) -> list[tuple[IndicatorKind, str]]:
    found = [_address(value) for value in details.values() if isinstance(value, str)]
    return list(dict.fromkeys(address for address in found if address))


def _port(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return value
    return None


def _unflatten(flat: dict[str, str]) -> dict:
    """ProductFields' flattened paths ("a/b.0_/c") back into nested objects and arrays."""
    root: dict = {}
    for path, value in flat.items():
        node: Any = root
        parts = [part for part in re.split(r"/|\.(?=\d+_)", path) if part]
        for number, part in enumerate(parts):
            last = number == len(parts) - 1
            key: Any = int(part[:-1]) if re.fullmatch(r"\d+_", part) else part
            if isinstance(node, dict):
                node = node.setdefault(key, value if last else {})
            else:
                break
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(key, int) for key in node):
        return [_lists(node[key]) for key in sorted(node)]
    return {key: _lists(value) for key, value in node.items()}


def _pascal(node: Any) -> Any:
    if isinstance(node, list):
        return [_pascal(item) for item in node]
    if isinstance(node, dict):
        return {
            (key[:1].upper() + key[1:] if isinstance(key, str) else key): _pascal(value)
            for key, value in node.items()
        }
    return node


# --- small readers ----------------------------------------------------------------------------


def _required(finding: dict, name: str) -> Any:
    value = finding.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidFindingError(f"finding.{name}: missing")
    return value


def _optional_timestamp(finding: dict, name: str) -> datetime | None:
    value = finding.get(name)
    return _timestamp(value, f"finding.{name}") if value else None


def _not_object(value: Any) -> str:
    return "missing" if value is None else f"not a JSON object ({_json_type(value)})"
