"""Read findings from every shape they are delivered in and normalize them to Finding.

GuardDuty's own findings are read here; Security Hub's (ASFF) findings by cloud_sniper.domain.asff.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cloud_sniper.domain import asff, naming
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import (
    Activity,
    ApiCall,
    Container,
    DatabaseLogin,
    Direction,
    Finding,
    Indicator,
    IndicatorKind,
    IndicatorRole,
    KubernetesCall,
    Process,
    RelatedResource,
    Resource,
    Signal,
    Threat,
    severity_label,
)
from cloud_sniper.domain.readers import (
    address as _address,
)
from cloud_sniper.domain.readers import (
    as_bool as _bool,
)
from cloud_sniper.domain.readers import (
    as_dict as _dict,
)
from cloud_sniper.domain.readers import (
    as_int as _int,
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

GUARDDUTY_SOURCE = "aws.guardduty"

# The GetFindings API names members in PascalCase; the finding's own JSON (EventBridge, S3 export)
# uses the model's wire names. Most are the PascalCase name with a lower first letter; these are
# the exceptions in the GuardDuty API model (botocore guardduty service-2.json, locationName).
_IRREGULAR_KEYS = {
    "SourceIps": "sourceIPs",
    "Latitude": "lat",
    "Longitude": "lon",
    "Code": "productCodeId",
    "ProductType": "productCodeType",
    "KubernetesResourcesTypes": "type",
    "TaskCreatedAt": "createdAt",
}

# Members whose value is a map: its keys are data (a profile or an API name), not member names.
# The number is how many nested map levels hold data keys before member names start again.
_DATA_MAPS = {"affectedResources": 1, "profiles": 2, "behavior": 2}

_GZIP_MAGIC = b"\x1f\x8b"
_SHA256 = re.compile(r"^[0-9A-Fa-f]{64}$")
_ACCESS_KEY = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")

# What a connection's direction makes of its remote party.
_ROLES = {
    "INBOUND": (IndicatorRole.ATTACKER, Direction.INBOUND),
    "OUTBOUND": (IndicatorRole.TARGET, Direction.OUTBOUND),
}
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")

# Where each Finding field comes from, to name the field of the input in an error.
_FIELD_PATHS = {
    "id": "finding.id",
    "type": "finding.type",
    "title": "finding.title",
    "description": "finding.description",
    "severity": "finding.severity",
    "account_id": "finding.accountId",
    "region": "finding.region",
    "partition": "finding.partition",
    "created_at": "finding.createdAt",
    "updated_at": "finding.updatedAt",
    "first_seen": "finding.service.eventFirstSeen",
    "last_seen": "finding.service.eventLastSeen",
    "count": "finding.service.count",
    "resource": "finding.resource",
    "indicators": "finding.service.action",
    "sample": "finding.service.additionalInfo.sample",
    "archived": "finding.service.archived",
}


def camel_keys(value: Any) -> Any:
    """Rename the members of a GuardDuty finding from the API's PascalCase to its wire camelCase.

    Only member names change: values (tag keys and values, addresses, names) are data and are
    kept as they are. A document already in camelCase comes back equal.
    """
    return _camel(value, 0)


def peel_replay(document: Any) -> tuple[dict, bool]:
    """Take the delivery out of a "Cloud Sniper Replay" event, with its dry-run flag.

    Any other document is returned as it is, with dry_run False.
    """
    document = _object(document, "finding")
    if document.get("detail-type") != naming.REPLAY_DETAIL_TYPE:
        return document, False

    detail = _object(document.get("detail"), "event.detail")
    delivery = _object(detail.get("finding"), "event.detail.finding")
    dry_run = detail.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidFindingError(f"event.detail.dry_run: not a boolean ({_json_type(dry_run)})")
    return delivery, dry_run


def unwrap(document: Any) -> tuple[dict, bool]:
    """Find the finding in one delivery (replay, EventBridge event or bare finding) and dry_run."""
    delivery, dry_run = peel_replay(document)
    return _finding_document(delivery), dry_run


def finding_source(document: Any) -> str:
    """Tell who produced a finding: GuardDuty ("aws.guardduty") or a project detector.

    A project detector publishes on the project bus with the project's source, or names the
    project as the finding's service; a Security Hub finding is GuardDuty's when GuardDuty
    produced it, else Security Hub's ("aws.securityhub"); everything else is GuardDuty's.
    """
    delivery, _ = peel_replay(document)
    found = _finding_document(delivery)
    if asff.is_event(delivery) or asff.is_finding(found):
        return asff.source(found)
    return _source(delivery, camel_keys(found))


def normalize(document: Any) -> Finding:
    """Normalize one delivery of a finding (any shape unwrap reads) into a Finding.

    Raises InvalidFindingError naming the field of the input that is missing or invalid.
    """
    delivery, _ = peel_replay(document)
    found = _finding_document(delivery)
    if asff.is_event(delivery) or asff.is_finding(found):
        return asff.normalize(found)
    finding = camel_keys(found)
    service = _dict(finding.get("service"))
    additional_info = _additional_info(service)

    # Checked in this order so that the first error names the most basic missing field.
    finding_id = _required(finding, "id")
    finding_type = _required(finding, "type")
    severity = _severity(finding.get("severity"))
    account_id = _account_id(_required(finding, "accountId"))
    region = _region(_required(finding, "region"))
    updated_at = _timestamp(_required(finding, "updatedAt"), "finding.updatedAt")
    created = finding.get("createdAt")
    fields = {
        "id": finding_id,
        "type": finding_type,
        "source": _source(delivery, finding),
        "title": finding.get("title") or "",
        "description": finding.get("description") or "",
        "severity": severity,
        "severity_label": severity_label(severity),
        "account_id": account_id,
        "region": region,
        "partition": finding.get("partition") or "aws",
        "created_at": _timestamp(created, "finding.createdAt") if created else updated_at,
        "updated_at": updated_at,
        "first_seen": _optional_timestamp(service, "eventFirstSeen"),
        "last_seen": _optional_timestamp(service, "eventLastSeen"),
        "count": 1 if service.get("count") is None else service["count"],
        "resource": _resource(finding.get("resource"), service),
        "indicators": _indicators(finding, service, additional_info),
        "activity": _activity(service),
        "sample": _is_true(additional_info.get("sample")),
        "archived": _is_true(service.get("archived")),
    }
    try:
        return Finding(**fields)
    except ValidationError as exc:
        raise _invalid_from(exc) from exc


def iter_findings(
    raw: bytes | str, source_name: str
) -> Iterator[tuple[str, dict | InvalidFindingError]]:
    """Read the finding deliveries in a file's content, one record at a time.

    Reads a JSON document (an event, a bare finding, a GetFindings response or a list of those)
    or JSON lines, gzipped or not; GuardDuty's or Security Hub's, whose events of several
    findings make a record per finding. Yields (locator, document) per record, where the locator is
    "<source_name>#<n>" with n counting records from 1, or (locator, error) for a record that
    cannot be read, so that one bad record never stops the others.
    """
    try:
        text = _text(raw)
    except InvalidFindingError as exc:
        yield f"{source_name}#1", exc
        return

    for number, record in enumerate(_records(text), start=1):
        locator = f"{source_name}#{number}"
        if isinstance(record, InvalidFindingError | dict):
            yield locator, record
        else:
            yield locator, InvalidFindingError(f"record: not a JSON object ({_json_type(record)})")


def _source(delivery: dict, finding: dict) -> str:
    service_name = _dict(finding.get("service")).get("serviceName")
    if delivery.get("source") == naming.EVENT_SOURCE or service_name == naming.EVENT_SOURCE:
        return naming.EVENT_SOURCE
    return GUARDDUTY_SOURCE


# --- key conversion -------------------------------------------------------------------------


def _camel(value: Any, data_levels: int) -> Any:
    if isinstance(value, list):
        return [_camel(item, data_levels) for item in value]
    if not isinstance(value, dict):
        return value
    if data_levels:
        return {key: _camel(item, data_levels - 1) for key, item in value.items()}

    converted = {}
    for key, item in value.items():
        name = _camel_key(key)
        converted[name] = _camel(item, _DATA_MAPS.get(name, 0))
    return converted


def _camel_key(key: Any) -> Any:
    if not isinstance(key, str) or not key[:1].isupper():
        return key
    return _IRREGULAR_KEYS.get(key) or key[0].lower() + key[1:]


# --- delivery shapes ------------------------------------------------------------------------


def _finding_document(delivery: dict) -> dict:
    if "detail-type" not in delivery:
        if _findings_list(delivery) is not None:
            raise InvalidFindingError(
                "finding: a GetFindings response holds several findings; read it with iter_findings"
            )
        return delivery

    detail_type = delivery.get("detail-type")
    if asff.is_event(delivery):
        return asff.event_finding(delivery)
    if detail_type == naming.FINDING_DETAIL_TYPE:
        return _object(delivery.get("detail"), "event.detail")
    if detail_type == naming.REPLAY_DETAIL_TYPE:
        raise InvalidFindingError("event.detail-type: a replay cannot replay another replay")
    shown = str(detail_type)[:80]
    raise InvalidFindingError(f"event.detail-type: unsupported {shown!r}")


def _findings_list(document: dict) -> Any | None:
    """The findings of a GetFindings response (boto3's "Findings" or the wire's "findings")."""
    if "id" in document or "Id" in document or "detail-type" in document:
        return None
    for key in ("Findings", "findings"):
        if key in document:
            return document[key]
    return None


def _text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidFindingError(f"file: not readable gzip ({exc})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidFindingError(f"file: not UTF-8 text ({exc.reason})") from exc


def _records(text: str) -> Iterator[Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as whole_error:
        yield from _json_lines(text, whole_error)
        return
    yield from _expand(document)


def _json_lines(text: str, whole_error: json.JSONDecodeError) -> Iterator[Any]:
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        yield InvalidFindingError("file: empty")
        return
    try:
        first = json.loads(lines[0][1])
    except json.JSONDecodeError:
        # Not even the first line is JSON: the file is one broken document, not JSON lines.
        yield InvalidFindingError(f"file: not JSON ({_describe(whole_error)})")
        return

    yield from _expand(first)
    for number, line in lines[1:]:
        try:
            document = json.loads(line)
        except json.JSONDecodeError as exc:
            yield InvalidFindingError(
                f"record: not JSON ({exc.msg} at line {number} column {exc.colno})"
            )
            continue
        yield from _expand(document)


def _expand(document: Any) -> Iterable[Any]:
    if isinstance(document, list):
        for item in document:
            yield from _expand_response(item)
    else:
        yield from _expand_response(document)


def _expand_response(document: Any) -> Iterable[Any]:
    if asff.is_event(document):
        # One record per finding of a Security Hub event, each an event of its own.
        try:
            yield from asff.split(document)
        except InvalidFindingError as exc:
            yield exc
        return
    findings = _findings_list(document) if isinstance(document, dict) else None
    if findings is None:
        yield document
    elif isinstance(findings, list):
        yield from findings
    else:
        yield InvalidFindingError(f"Findings: not a JSON array ({_json_type(findings)})")


def _describe(error: json.JSONDecodeError) -> str:
    return f"{error.msg} at line {error.lineno} column {error.colno}"


# --- fields -----------------------------------------------------------------------------------


def _required(finding: dict, name: str) -> Any:
    value = finding.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidFindingError(f"finding.{name}: missing")
    return value


def _severity(value: Any) -> float:
    if value is None or value == "":
        raise InvalidFindingError("finding.severity: missing")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidFindingError(f"finding.severity: not a number ({_json_type(value)})")
    try:
        score = float(value)
    except ValueError as exc:
        raise InvalidFindingError(f"finding.severity: not a number ({str(value)[:40]!r})") from exc
    if math.isnan(score) or not 0 <= score <= 10:
        raise InvalidFindingError(f"finding.severity: {score} is outside 0-10")
    return score


def _account_id(value: Any) -> str:
    if not isinstance(value, str) or not _ACCOUNT_ID.match(value):
        raise InvalidFindingError(f"finding.accountId: not a 12-digit account id ({value!r:.40})")
    return value


def _region(value: Any) -> str:
    if not isinstance(value, str) or not _REGION.match(value):
        raise InvalidFindingError(f"finding.region: not an AWS region ({value!r:.40})")
    return value


def _optional_timestamp(service: dict, name: str) -> datetime | None:
    value = service.get(name)
    return _timestamp(value, f"finding.service.{name}") if value else None


def _additional_info(service: dict) -> dict:
    """service.additionalInfo, whether inline or, as GuardDuty now writes it, a JSON "value"."""
    info = _dict(service.get("additionalInfo"))
    value = info.get("value")
    if not isinstance(value, str):
        return info
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError:
        return info
    return {**info, **decoded} if isinstance(decoded, dict) else info


def _invalid_from(error: ValidationError) -> InvalidFindingError:
    first = error.errors()[0]
    field, *rest = [str(part) for part in first["loc"]] or ["finding"]
    path = ".".join([_FIELD_PATHS.get(field, f"finding.{field}"), *rest])
    return InvalidFindingError(f"{path}: {first['msg']}")


# --- resource ---------------------------------------------------------------------------------


def _resource(value: Any, service: dict) -> Resource:
    resource = _object(value, "finding.resource")
    kind = resource.get("resourceType")
    if not isinstance(kind, str) or not kind.strip():
        raise InvalidFindingError("finding.resource.resourceType: missing")

    instance = _dict(resource.get("instanceDetails"))
    interfaces = [_dict(item) for item in _list(instance.get("networkInterfaces"))]
    access_key = _dict(resource.get("accessKeyDetails"))
    buckets = [_dict(item) for item in _list(resource.get("s3BucketDetails"))]
    eks = _dict(resource.get("eksClusterDetails"))
    ecs = _dict(resource.get("ecsClusterDetails"))
    task = _dict(ecs.get("taskDetails"))
    function = _dict(resource.get("lambdaDetails"))
    vpc_config = _dict(function.get("vpcConfig"))
    database = _dict(resource.get("rdsDbInstanceDetails"))
    limitless = _dict(resource.get("rdsLimitlessDbDetails"))
    kubernetes = _dict(resource.get("kubernetesDetails"))
    kubernetes_user = _dict(kubernetes.get("kubernetesUserDetails"))
    workload = _dict(kubernetes.get("kubernetesWorkloadDetails"))
    volumes = _dict(resource.get("ebsVolumeDetails"))
    sequence = _dict(_dict(service.get("detection")).get("sequence"))

    private_ips = [_str(item.get("privateIpAddress")) for item in interfaces]
    for item in interfaces:
        private_ips += [
            _str(_dict(extra).get("privateIpAddress"))
            for extra in _list(item.get("privateIpAddresses"))
        ]
    # IPv6 addresses of an instance are globally routable: they are public addresses of the estate.
    public_ips = [_str(item.get("publicIp")) for item in interfaces]
    for item in interfaces:
        public_ips += [_str(address) for address in _list(item.get("ipv6Addresses"))]
    security_groups = [
        _str(_dict(group).get("groupId"))
        for item in interfaces + [vpc_config]
        for group in _list(item.get("securityGroups"))
    ]
    objects = [
        f"{_str(bucket.get('name')) or '?'}/{_str(_dict(item).get('key'))}"
        for bucket in buckets
        for item in _list(bucket.get("s3ObjectDetails"))
        if _str(_dict(item).get("key"))
    ]

    tag_sources = [instance, eks, ecs, task, function, database, limitless, *buckets]
    return Resource(
        kind=kind,
        arns=_unique(
            [_str(bucket.get("arn")) for bucket in buckets]
            + [
                _str(part.get(name))
                for part, name in (
                    (eks, "arn"),
                    (ecs, "arn"),
                    (function, "functionArn"),
                    (database, "dbInstanceArn"),
                    (limitless, "dbShardGroupArn"),
                )
            ]
        ),
        instance_id=_str(instance.get("instanceId")),
        instance_profile_arn=_str(_dict(instance.get("iamInstanceProfile")).get("arn")),
        vpc_id=_first(
            *[_str(item.get("vpcId")) for item in interfaces],
            _str(eks.get("vpcId")),
            _str(vpc_config.get("vpcId")),
        ),
        subnet_ids=_unique(
            [_str(item.get("subnetId")) for item in interfaces]
            + [_str(subnet) for subnet in _list(vpc_config.get("subnetIds"))]
        ),
        security_group_ids=_unique(security_groups),
        public_ips=_unique(public_ips),
        private_ips=_unique(private_ips),
        access_key_id=_str(access_key.get("accessKeyId")),
        principal=_first(
            _str(access_key.get("userName")),
            _str(access_key.get("principalId")),
            _str(kubernetes_user.get("username")),
        ),
        principal_id=_str(access_key.get("principalId")),
        user_type=_str(access_key.get("userType")),
        bucket_names=_unique([_str(bucket.get("name")) for bucket in buckets]),
        object_keys=_unique(objects),
        cluster=_first(_str(eks.get("name")), _str(ecs.get("name"))),
        task_arn=_str(task.get("arn")),
        workload=_workload(workload),
        namespace=_str(workload.get("namespace")),
        kubernetes_user=_str(kubernetes_user.get("username")),
        containers=_containers(resource, workload, task),
        function_name=_str(function.get("functionName")),
        db_instance_id=_str(database.get("dbInstanceIdentifier")),
        db_cluster_id=_first(
            _str(database.get("dbClusterIdentifier")), _str(limitless.get("dbClusterIdentifier"))
        ),
        db_shard_group_id=_str(limitless.get("dbShardGroupIdentifier")),
        db_user=_str(_dict(resource.get("rdsDbUserDetails")).get("user")),
        volume_arns=_unique(
            [
                _str(_dict(item).get("volumeArn"))
                for item in _list(volumes.get("scannedVolumeDetails"))
            ]
            + _scanned_volumes(service)
        ),
        snapshot_arn=_str(_dict(resource.get("ebsSnapshotDetails")).get("snapshotArn")),
        image_arn=_str(_dict(resource.get("ec2ImageDetails")).get("imageArn")),
        recovery_point_arn=_str(
            _dict(resource.get("recoveryPointDetails")).get("recoveryPointArn")
        ),
        related=_related(sequence),
        tags=_tags(tag_sources),
    )


def _scanned_volumes(service: dict) -> list[str | None]:
    """The volumes a malware scan found files on."""
    detections = _dict(_dict(service.get("ebsVolumeScanDetails")).get("scanDetections"))
    names = _list(_dict(detections.get("threatDetectedByName")).get("threatNames"))
    return [
        _str(_dict(path).get("volumeArn"))
        for name in names
        for path in _list(_dict(name).get("filePaths"))
    ]


def _workload(workload: dict) -> str | None:
    name = _str(workload.get("name"))
    if not name:
        return None
    return "/".join(
        part for part in (_str(workload.get("namespace")), _str(workload.get("type")), name) if part
    )


def _containers(resource: dict, workload: dict, task: dict) -> list[Container]:
    found = [_dict(resource.get("containerDetails"))]
    found += [_dict(item) for item in _list(workload.get("containers"))]
    found += [_dict(item) for item in _list(task.get("containers"))]
    containers: dict[tuple, Container] = {}
    for item in found:
        container = Container(
            id=_str(item.get("id")),
            name=_str(item.get("name")),
            image=_str(item.get("image")),
            privileged=_bool(_dict(item.get("securityContext")).get("privileged")),
        )
        key = (container.id, container.name, container.image)
        if any(key):
            containers.setdefault(key, container)
    return list(containers.values())


def _related(sequence: dict) -> list[RelatedResource]:
    related = []
    for item in _list(sequence.get("resources")):
        entry = _dict(item)
        uid = _str(entry.get("uid"))
        if uid:
            related.append(
                RelatedResource(
                    uid=uid, kind=_str(entry.get("resourceType")), name=_str(entry.get("name"))
                )
            )
    return related


def _tags(sources: list[dict]) -> dict[str, str]:
    """Tags of the resource's parts as one mapping; the first part naming a key wins."""
    tags: dict[str, str] = {}
    for source in sources:
        for item in _list(source.get("tags")):
            tag = _dict(item)
            key, value = tag.get("key"), tag.get("value")
            if isinstance(key, str) and key and key not in tags:
                tags[key] = value if isinstance(value, str) else ""
    return tags


# --- activity ---------------------------------------------------------------------------------

# Runtime Monitoring context members kept as text: what the behaviour touched or used.
_RUNTIME_CONTEXT = (
    "toolName",
    "toolCategory",
    "commandLineExample",
    "scriptPath",
    "libraryPath",
    "ldPreloadValue",
    "socketPath",
    "runcBinaryPath",
    "releaseAgentPath",
    "mountSource",
    "mountTarget",
    "fileSystemType",
    "moduleName",
    "moduleFilePath",
    "shellHistoryFilePath",
    "threatFilePath",
    "filePath",
    "fileOperation",
    "serviceName",
    "addressFamily",
)


def _activity(service: dict) -> Activity:
    action = _dict(service.get("action"))
    runtime = _dict(service.get("runtimeDetails"))
    context = _dict(runtime.get("context"))
    sequence = _dict(_dict(service.get("detection")).get("sequence"))
    scan = _dict(service.get("ebsVolumeScanDetails")) or _dict(service.get("malwareScanDetails"))
    rds = _dict(action.get("rdsLoginAttemptAction"))
    logins = _list(rds.get("LoginAttributes")) or _list(rds.get("loginAttributes"))

    return Activity(
        action_type=_str(action.get("actionType")),
        api_call=_api_call_activity(_dict(action.get("awsApiCallAction"))),
        kubernetes_call=_kubernetes_activity(_dict(action.get("kubernetesApiCallAction"))),
        database_logins=[
            DatabaseLogin(
                user=_str(login.get("user")),
                application=_str(login.get("application")),
                failed_attempts=_int(login.get("failedLoginAttempts")) or 0,
                successful_attempts=_int(login.get("successfulLoginAttempts")) or 0,
            )
            for login in map(_dict, logins)
        ],
        process=_process(_dict(runtime.get("process"))),
        runtime_context={
            name: str(context[name])
            for name in _RUNTIME_CONTEXT
            if isinstance(context.get(name), str | int) and str(context[name]).strip()
        },
        threats=_threats(service),
        scan_id=_str(scan.get("scanId")),
        signals=[_signal(_dict(item)) for item in _list(sequence.get("signals"))],
        sequence=_str(sequence.get("description")),
        sequence_indicators={
            key: values
            for entry in map(_dict, _list(sequence.get("sequenceIndicators")))
            if (key := _str(entry.get("key")))
            and (values := _unique(_str(v) for v in _list(entry.get("values"))))
        },
    )


def _api_call_activity(action: dict) -> ApiCall | None:
    if not action:
        return None
    return ApiCall(
        service=_str(action.get("serviceName")),
        name=_str(action.get("api")),
        caller_type=_str(action.get("callerType")),
        user_agent=_str(action.get("userAgent")),
        error_code=_str(action.get("errorCode")),
        remote_account_id=_str(_dict(action.get("remoteAccountDetails")).get("accountId")),
    )


def _kubernetes_activity(action: dict) -> KubernetesCall | None:
    if not action:
        return None
    return KubernetesCall(
        verb=_str(action.get("verb")),
        request_uri=_str(action.get("requestUri")),
        resource=_str(action.get("resource")),
        namespace=_str(action.get("namespace")),
        resource_name=_str(action.get("resourceName")),
        user_agent=_str(action.get("userAgent")),
        status_code=_int(action.get("statusCode")),
    )


def _process(process: dict) -> Process | None:
    if not process:
        return None
    return Process(
        name=_str(process.get("name")),
        executable_path=_str(process.get("executablePath")),
        executable_sha256=_str(process.get("executableSha256")),
        pid=_int(process.get("pid")),
        user=_str(process.get("user")),
        lineage=_unique(_str(_dict(item).get("name")) for item in _list(process.get("lineage"))),
    )


def _threats(service: dict) -> list[Threat]:
    """Malware a scan found: EBS volume scans (EC2) and S3 or backup scans."""
    threats: list[Threat] = []
    detections = _dict(_dict(service.get("ebsVolumeScanDetails")).get("scanDetections"))
    by_name = _dict(detections.get("threatDetectedByName"))
    for item in map(_dict, _list(by_name.get("threatNames"))):
        paths = [_dict(path) for path in _list(item.get("filePaths"))]
        threats.append(
            Threat(
                name=_str(item.get("name")) or "unnamed",
                severity=_str(item.get("severity")),
                file_paths=_unique(_str(path.get("filePath")) for path in paths),
                hashes=_unique(_str(path.get("hash")) for path in paths),
            )
        )
    for item in map(_dict, _list(_dict(service.get("malwareScanDetails")).get("threats"))):
        paths = [_dict(path) for path in _list(item.get("itemPaths"))]
        details = [_dict(detail) for detail in _list(item.get("itemDetails"))]
        threats.append(
            Threat(
                name=_str(item.get("name")) or "unnamed",
                file_paths=_unique(
                    [_str(path.get("nestedItemPath")) for path in paths]
                    + [_str(detail.get("itemPath")) for detail in details]
                ),
                hashes=_unique(
                    [_str(item.get("hash"))]
                    + [_str(path.get("hash")) for path in paths]
                    + [_str(detail.get("hash")) for detail in details]
                ),
            )
        )
    return threats


def _signal(signal: dict) -> Signal:
    severity = signal.get("severity")
    return Signal(
        uid=_str(signal.get("uid")),
        type=_str(signal.get("type")),
        name=_str(signal.get("name")),
        description=_str(signal.get("description")),
        severity=float(severity)
        if isinstance(severity, int | float) and not isinstance(severity, bool)
        else None,
        count=_int(signal.get("count")),
        first_seen=_lenient_timestamp(signal.get("firstSeenAt")),
        last_seen=_lenient_timestamp(signal.get("lastSeenAt")),
    )


def _lenient_timestamp(value: Any) -> datetime | None:
    """A timestamp of secondary detail: unreadable is unknown, never a rejected finding."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # Epoch seconds or, as the sequence signals write them, milliseconds.
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        return _timestamp(value, "")
    except InvalidFindingError:
        return None


# --- indicators -------------------------------------------------------------------------------


def _indicators(finding: dict, service: dict, additional_info: dict) -> list[Indicator]:
    action = _dict(service.get("action"))
    resource = _dict(finding.get("resource"))
    threat_lists = _threat_lists(service, additional_info)

    found: list[Indicator] = []
    found += _network_connection(_dict(action.get("networkConnectionAction")))
    found += _port_probe(_dict(action.get("portProbeAction")))
    found += _dns_request(_dict(action.get("dnsRequestAction")))
    found += _api_call(_dict(action.get("awsApiCallAction")), resource)
    found += _kubernetes_api_call(_dict(action.get("kubernetesApiCallAction")))
    found += _attackers(_dict(_dict(action.get("rdsLoginAttemptAction")).get("remoteIpDetails")))
    found += _sequence_indicators(_dict(_dict(service.get("detection")).get("sequence")))
    found += [Indicator(kind=IndicatorKind.FILE_HASH, value=value) for value in _hashes(service)]

    unique: dict[tuple[IndicatorKind, str, IndicatorRole], Indicator] = {}
    for indicator in found:
        if indicator.is_address or indicator.kind is IndicatorKind.DOMAIN:
            # The threat lists name the remote party, never the key or principal it used.
            indicator.threat_lists = list(threat_lists)
        unique.setdefault((indicator.kind, indicator.value, indicator.role), indicator)
    return list(unique.values())


def _hashes(service: dict) -> list[str]:
    """The SHA-256 hashes of files and executables the finding names: runtime, malware, evidence."""
    runtime = _dict(service.get("runtimeDetails"))
    context = _dict(runtime.get("context"))
    found = [_str(_dict(runtime.get("process")).get("executableSha256"))]
    for name in ("modifyingProcess", "targetProcess"):
        found.append(_str(_dict(context.get(name)).get("executableSha256")))
    found.append(_str(context.get("moduleSha256")))
    for detail in _list(_dict(service.get("evidence")).get("threatIntelligenceDetails")):
        found.append(_str(_dict(detail).get("threatFileSha256")))
    found += [hash_ for threat in _threats(service) for hash_ in threat.hashes]
    for actor in _list(_dict(_dict(service.get("detection")).get("sequence")).get("actors")):
        found.append(_str(_dict(_dict(actor).get("process")).get("sha256")))
    return _unique(value.lower() for value in found if value and _SHA256.match(value))


def _sequence_indicators(sequence: dict) -> list[Indicator]:
    """The endpoints and actors an attack sequence names."""
    found: list[Indicator] = []
    for item in _list(sequence.get("endpoints")):
        endpoint = _dict(item)
        direction = str(_dict(endpoint.get("connection")).get("direction") or "").upper()
        role, flow = _ROLES.get(direction, (IndicatorRole.OBSERVED, Direction.UNKNOWN))
        address = _address(endpoint.get("ip"))
        if address:
            port = endpoint.get("port")
            found.append(
                Indicator(
                    kind=address[0],
                    value=address[1],
                    role=role,
                    direction=flow,
                    remote_port=port if _is_port(port) else None,
                )
            )
        domain = _str(endpoint.get("domain"))
        if domain:
            found.append(Indicator(kind=IndicatorKind.DOMAIN, value=domain.rstrip(".").lower()))
    for item in _list(sequence.get("actors")):
        user = _dict(_dict(item).get("user"))
        credential = _str(user.get("credentialUid"))
        if credential and _ACCESS_KEY.match(credential):
            found.append(Indicator(kind=IndicatorKind.ACCESS_KEY, value=credential))
        name = _str(user.get("name"))
        if name:
            found.append(Indicator(kind=IndicatorKind.PRINCIPAL, value=name))
    return found


def _network_connection(action: dict) -> list[Indicator]:
    if not action:
        return []
    direction = str(action.get("connectionDirection") or "").upper()
    role, flow = _ROLES.get(direction, (IndicatorRole.OBSERVED, Direction.UNKNOWN))
    return [
        Indicator(
            kind=kind,
            value=value,
            role=role,
            direction=flow,
            local_port=_port(action.get("localPortDetails")),
            remote_port=_port(action.get("remotePortDetails")),
            protocol=_str(action.get("protocol")),
        )
        for kind, value in _addresses(_dict(action.get("remoteIpDetails")))
    ]


def _port_probe(action: dict) -> list[Indicator]:
    found = []
    for item in _list(action.get("portProbeDetails")):
        probe = _dict(item)
        found += [
            Indicator(
                kind=kind,
                value=value,
                role=IndicatorRole.ATTACKER,
                direction=Direction.INBOUND,
                local_port=_port(probe.get("localPortDetails")),
            )
            for kind, value in _addresses(_dict(probe.get("remoteIpDetails")))
        ]
    return found


def _dns_request(action: dict) -> list[Indicator]:
    found = []
    domain = _str(action.get("domain"))
    if domain:
        found.append(
            Indicator(
                kind=IndicatorKind.DOMAIN,
                value=domain.rstrip(".").lower(),
                direction=Direction.OUTBOUND,
                protocol=_str(action.get("protocol")),
            )
        )
    # The address a name resolved to says nothing of who acted: it is observed, not an attacker.
    found += [
        Indicator(kind=kind, value=value, direction=Direction.OUTBOUND)
        for kind, value in _addresses(_dict(action.get("remoteIpDetails")))
    ]
    return found


def _api_call(action: dict, resource: dict) -> list[Indicator]:
    if not action:
        return []
    found = _attackers(_dict(action.get("remoteIpDetails")))
    caller_domain = _str(_dict(action.get("domainDetails")).get("domain"))
    if caller_domain:
        found.append(Indicator(kind=IndicatorKind.DOMAIN, value=caller_domain.rstrip(".").lower()))
    access_key = _dict(resource.get("accessKeyDetails"))
    key_id = _str(access_key.get("accessKeyId"))
    if key_id:
        found.append(Indicator(kind=IndicatorKind.ACCESS_KEY, value=key_id))
    principal = _first(_str(access_key.get("userName")), _str(access_key.get("principalId")))
    if principal:
        found.append(Indicator(kind=IndicatorKind.PRINCIPAL, value=principal))
    return found


def _kubernetes_api_call(action: dict) -> list[Indicator]:
    addresses = [_address(source_ip) for source_ip in _list(action.get("sourceIPs"))]
    attackers = [
        Indicator(kind=kind, value=value, role=IndicatorRole.ATTACKER, direction=Direction.INBOUND)
        for kind, value in filter(None, addresses)
    ]
    return attackers + _attackers(_dict(action.get("remoteIpDetails")))


def _attackers(remote_ip_details: dict) -> list[Indicator]:
    return [
        Indicator(kind=kind, value=value, role=IndicatorRole.ATTACKER, direction=Direction.INBOUND)
        for kind, value in _addresses(remote_ip_details)
    ]


def _addresses(details: dict) -> list[tuple[IndicatorKind, str]]:
    """The parseable addresses of remoteIpDetails, in canonical form.

    An address that does not parse cannot be blocked or looked up, so it makes no indicator;
    the finding's raw document keeps it for the report.
    """
    found = [_address(details.get(field)) for field in ("ipAddressV4", "ipAddressV6")]
    return list(dict.fromkeys(address for address in found if address))


def _port(details: Any) -> int | None:
    port = _dict(details).get("port")
    return port if _is_port(port) else None


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535


def _threat_lists(service: dict, additional_info: dict) -> list[str]:
    names = [_str(additional_info.get("threatListName"))]
    evidence = _dict(service.get("evidence"))
    for detail in _list(evidence.get("threatIntelligenceDetails")):
        names.append(_str(_dict(detail).get("threatListName")))
    return _unique(names)


# --- small readers ----------------------------------------------------------------------------


def _object(value: Any, path: str) -> dict:
    if isinstance(value, dict):
        return value
    if value is None:
        raise InvalidFindingError(f"{path}: missing")
    raise InvalidFindingError(f"{path}: not a JSON object ({_json_type(value)})")
