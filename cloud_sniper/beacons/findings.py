"""A beacon as a finding: GuardDuty's shape, so the pipeline's ingest reads it like any other.

The finding is about the instance (or the network interface) that calls home, with the
destination as an outbound remote; it is published on the project's bus with the project's
source and GuardDuty's detail type, as every project detector's findings are.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_sniper.beacons.models import PairScore
from cloud_sniper.domain import naming

FINDING_TYPE = "Backdoor:EC2/Beaconing.FlowLogs"
SCHEMA_VERSION = "2.0"
PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPV6"}
# GuardDuty's scale: 7.0 to 8.9 is High. A pair at the default threshold (0.7) is the top of
# Medium, a clockwork beacon near the top of High.
SEVERITY_BASE = 2.0
SEVERITY_PER_SCORE = 7.0
SEVERITY_MAX = 8.9


class BeaconSource(BaseModel):
    """What the estate knows of a beacon's source address: its interface, instance and tags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    interface_id: str | None = None
    instance_id: str | None = None
    subnet_id: str | None = None
    vpc_id: str | None = None
    availability_zone: str | None = None
    private_dns_name: str | None = None
    security_groups: dict[str, str] = Field(default_factory=dict)  # id: name
    instance_type: str | None = None
    image_id: str | None = None
    instance_profile_arn: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


def finding_id(account_id: str, region: str, pair: PairScore) -> str:
    """One finding per source, destination, port and protocol: later scans update it."""
    parts = (FINDING_TYPE, account_id, region, pair.src, pair.dst, pair.dst_port, pair.protocol)
    key = "|".join(str(part) for part in parts)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def severity(score: float) -> float:
    """GuardDuty's severity for a beacon score in [0, 1]."""
    return round(min(SEVERITY_MAX, SEVERITY_BASE + SEVERITY_PER_SCORE * score), 1)


def beacon_finding(
    pair: PairScore,
    *,
    account_id: str,
    region: str,
    detected_at: datetime,
    source: BeaconSource | None = None,
    partition: str = "aws",
) -> dict[str, Any]:
    """The finding (GuardDuty's camelCase document) of one reported pair."""
    source = source or BeaconSource(address=pair.src)
    identifier = finding_id(account_id, region, pair)
    protocol = PROTOCOLS.get(pair.protocol, str(pair.protocol))
    subject = f"EC2 instance {source.instance_id}" if source.instance_id else f"Host {pair.src}"
    period = _period(pair.period_seconds)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "accountId": account_id,
        "region": region,
        "partition": partition,
        "id": identifier,
        "arn": (
            f"arn:{partition}:guardduty:{region}:{account_id}:detector/{naming.PREFIX}/finding/"
            f"{identifier}"
        ),
        "type": FINDING_TYPE,
        "title": f"{subject} is calling {pair.dst} on a schedule{period}.",
        "description": (
            f"{subject} ({pair.src}) connected to {pair.dst} on {protocol} port {pair.dst_port} "
            f"{pair.connections} times between {_iso(pair.first_seen)} and "
            f"{_iso(pair.last_seen)}{period}, as command-and-control implants call home. "
            f"Beacon score {pair.score:.2f}: {pair.why.rstrip('.')}."
        ),
        "severity": severity(pair.score),
        "createdAt": _iso(detected_at),
        "updatedAt": _iso(detected_at),
        "resource": {"resourceType": "Instance", "instanceDetails": _instance(source)},
        "service": {
            "serviceName": naming.EVENT_SOURCE,
            "featureName": "FlowLogs",
            "resourceRole": "ACTOR",
            "archived": False,
            "count": pair.connections,
            "eventFirstSeen": _iso(pair.first_seen),
            "eventLastSeen": _iso(pair.last_seen),
            "action": {
                "actionType": "NETWORK_CONNECTION",
                "networkConnectionAction": {
                    "connectionDirection": "OUTBOUND",
                    "protocol": protocol,
                    "blocked": False,
                    "localIpDetails": {"ipAddressV4": pair.src},
                    "remoteIpDetails": {"ipAddressV4": pair.dst},
                    "remotePortDetails": {"port": pair.dst_port},
                },
            },
            "additionalInfo": {"type": "default", "value": json.dumps(_evidence(pair))},
        },
    }


def beacon_event(finding: dict[str, Any]) -> dict[str, Any]:
    """The PutEvents entry of a finding: on the project's bus, where the intake rule reads it."""
    return {
        "Source": naming.EVENT_SOURCE,
        "DetailType": naming.FINDING_DETAIL_TYPE,
        "Detail": json.dumps(finding, separators=(",", ":")),
        "EventBusName": naming.EVENT_BUS,
    }


def _instance(source: BeaconSource) -> dict[str, Any]:
    interface: dict[str, Any] = {"privateIpAddress": source.address}
    optional = {
        "networkInterfaceId": source.interface_id,
        "subnetId": source.subnet_id,
        "vpcId": source.vpc_id,
        "privateDnsName": source.private_dns_name,
    }
    interface.update({key: value for key, value in optional.items() if value})
    interface["securityGroups"] = [
        {"groupId": group_id, "groupName": name}
        for group_id, name in source.security_groups.items()
    ]
    details: dict[str, Any] = {"networkInterfaces": [interface]}
    optional = {
        "instanceId": source.instance_id,
        "availabilityZone": source.availability_zone,
        "instanceType": source.instance_type,
        "imageId": source.image_id,
    }
    details.update({key: value for key, value in optional.items() if value})
    if source.instance_profile_arn:
        details["iamInstanceProfile"] = {"arn": source.instance_profile_arn}
    details["tags"] = [{"key": key, "value": value} for key, value in source.tags.items()]
    return details


def _evidence(pair: PairScore) -> dict[str, Any]:
    """What the scan measured, for the analyst reading the finding."""
    return {
        "beaconScore": pair.score,
        "periodSeconds": pair.period_seconds,
        "jitter": pair.jitter,
        "connections": pair.connections,
        "bytes": pair.bytes,
        "subscores": pair.subscores,
        "verified": pair.verified,
        "pValue": pair.p_value,
        "why": pair.why,
    }


def _period(seconds: float | None) -> str:
    if not seconds:
        return ""
    if seconds >= 120:
        return f", about every {seconds / 60:.0f} min"
    return f", about every {seconds:.0f} s"


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
