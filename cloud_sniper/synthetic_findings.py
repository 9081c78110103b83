"""Realistic GuardDuty findings of any documented type, in the shape GuardDuty emits them.

Used by the tests (one finding per documented type and resource type), the benchmarks and
policy trials. Each finding carries the action, runtime, malware or sequence details that the
type's data source produces. The remote parties are public addresses (a documentation address
would be refused by the safety rules, and the policy could not be seen at work); the domain is
under .example, which never resolves.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
VPC_ID = "vpc-0a1b2c3d4e5f60718"
SUBNET_ID = "subnet-0a1b2c3d4e5f60719"
INSTANCE_ID = "i-0a1b2c3d4e5f6071a"
ATTACKER_IPV4 = "45.155.205.99"
TARGET_IPV4 = "91.92.109.14"
ATTACKER_IPV6 = "2a06:4880:1000::99"
C2_DOMAIN = "c2.malicious.example"
ACCESS_KEY_ID = "ASIAZ2EXAMPLE7QWERTY"
USER_ACCESS_KEY_ID = "AKIAZ2EXAMPLE7ASDFGH"
FILE_SHA256 = hashlib.sha256(b"cloud-sniper synthetic malware").hexdigest()
CREATED_AT = "2026-11-30T08:14:02.118Z"
UPDATED_AT = "2026-11-30T08:44:51.903Z"

# The resource type custom detection rules document is this text, not a resource type: their
# signals come from CloudTrail management events, made with an access key.
CUSTOM_RULE_RESOURCE = "Not documented (Custom Detection Rule)"

# Finding types whose connection goes out from the affected resource: it is the actor.
_OUTBOUND_MARKS = (
    "Backdoor:",
    "CryptoCurrency:",
    "Trojan:",
    "DenialOfService",
    "TorClient",
    "Recon:EC2/Portscan",
    "Impact:EC2/PortSweep",
    "MaliciousIPCaller",
    "Runtime/",
    "Lambda/",
    "DGADomainRequest",
    "DNSDataExfiltration",
)

SEVERITY_SCORES = {"Low": 2.0, "Medium": 5.0, "High": 8.0, "Critical": 9.0}


@dataclass(frozen=True)
class FindingType:
    """One row of the documented finding types."""

    type: str
    resource_types: tuple[str, ...]
    default_severity: str
    data_source: str
    threat_purpose: str

    @property
    def severity(self) -> float:
        """A numeric severity in the documented band; 5.0 when the default is not fixed."""
        first = self.default_severity.split("|")[0].rstrip("*")
        return SEVERITY_SCORES.get(first, 5.0)


@cache
def finding_types() -> tuple[FindingType, ...]:
    """The documented GuardDuty finding types shipped with the project."""
    table = resources.files("cloud_sniper") / "data" / "guardduty-finding-types.tsv"
    with table.open(encoding="utf-8", newline="") as lines:
        return tuple(
            FindingType(
                type=row["type"],
                resource_types=tuple(row["resource_type"].split("|")),
                default_severity=row["default_severity"],
                data_source=row["data_source"],
                threat_purpose=row["threat_purpose"],
            )
            for row in csv.DictReader(lines, delimiter="\t")
        )


def synthetic_finding(
    finding_type: FindingType,
    resource_type: str | None = None,
    *,
    direction: str | None = None,
) -> dict[str, Any]:
    """A bare GuardDuty finding (camelCase, as in the S3 export) of the type and resource type.

    resource_type defaults to the type's first documented one; direction, for findings about
    a connection, to the direction the type implies.
    """
    resource_type = resource_type or finding_type.resource_types[0]
    if resource_type == CUSTOM_RULE_RESOURCE:
        resource_type = "AccessKey"
    seed = f"{finding_type.type}|{resource_type}|{direction}"
    finding_id = hashlib.sha256(seed.encode()).hexdigest()[:32]
    direction = direction or _direction(finding_type.type)

    service: dict[str, Any] = {
        "serviceName": "guardduty",
        "detectorId": "12abc34d567e8fa901bc2d34e56789f0",
        "resourceRole": "TARGET" if direction == "INBOUND" else "ACTOR",
        "eventFirstSeen": "2026-11-30T08:01:17.000Z",
        "eventLastSeen": "2026-11-30T08:42:09.000Z",
        "archived": False,
        "count": 3,
        "additionalInfo": {"value": "{}", "type": "default"},
    }
    service.update(_service_details(finding_type, resource_type, direction))
    affected = resource(resource_type)
    if finding_type.data_source == "Malware Protection for EC2":
        affected["ebsVolumeDetails"] = {
            "scannedVolumeDetails": [
                {"volumeArn": _volume_arn(), "volumeType": "gp3", "deviceName": "/dev/xvda"}
            ]
        }
    return {
        "schemaVersion": "2.0",
        "accountId": ACCOUNT_ID,
        "region": REGION,
        "partition": "aws",
        "id": finding_id,
        "arn": f"arn:aws:guardduty:{REGION}:{ACCOUNT_ID}:detector/12abc34d/finding/{finding_id}",
        "type": finding_type.type,
        "title": f"Synthetic {finding_type.type} finding",
        "description": f"A synthetic finding of {finding_type.type} on a {resource_type}.",
        "severity": finding_type.severity,
        "createdAt": CREATED_AT,
        "updatedAt": UPDATED_AT,
        "resource": affected,
        "service": service,
    }


def as_event(finding: dict[str, Any]) -> dict[str, Any]:
    """The finding as EventBridge delivers it from GuardDuty."""
    return {
        "version": "0",
        "id": f"evt-{finding['id'][:24]}",
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": finding["accountId"],
        "time": finding["updatedAt"],
        "region": finding["region"],
        "resources": [],
        "detail": finding,
    }


def _direction(type_name: str) -> str:
    return "OUTBOUND" if any(mark in type_name for mark in _OUTBOUND_MARKS) else "INBOUND"


# --- resources --------------------------------------------------------------------------------


def _tags(**tags: str) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in tags.items()]


def _instance() -> dict[str, Any]:
    return {
        "instanceId": INSTANCE_ID,
        "instanceType": "t3.medium",
        "instanceState": "running",
        "availabilityZone": f"{REGION}a",
        "imageId": "ami-0a1b2c3d4e5f6071b",
        "platform": None,
        "launchTime": "2026-11-02T10:00:00.000Z",
        "iamInstanceProfile": {
            "arn": f"arn:aws:iam::{ACCOUNT_ID}:instance-profile/web-server",
            "id": "AIPAZ2EXAMPLE7PROFILE",
        },
        "networkInterfaces": [
            {
                "networkInterfaceId": "eni-0a1b2c3d4e5f6071c",
                "vpcId": VPC_ID,
                "subnetId": SUBNET_ID,
                "privateIpAddress": "10.20.1.15",
                "privateIpAddresses": [{"privateIpAddress": "10.20.1.15"}],
                "publicIp": "54.210.33.14",
                "ipv6Addresses": [],
                "securityGroups": [{"groupId": "sg-0a1b2c3d4e5f6071d", "groupName": "web"}],
            }
        ],
        "tags": _tags(Name="web-1", Environment="production"),
    }


def _container() -> dict[str, Any]:
    return {
        "containerRuntime": "containerd",
        "id": "3f1c5a0e9b7d2c4f6a8e0b1d3c5e7f9a1b3d5c7e9f0a2b4c6d8e0f1a3b5c7d9e",
        "name": "api",
        "image": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/api:1.8.2",
        "imagePrefix": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com",
        "securityContext": {"privileged": False},
    }


def _eks() -> dict[str, Any]:
    return {
        "eksClusterDetails": {
            "name": "prod-eks",
            "arn": f"arn:aws:eks:{REGION}:{ACCOUNT_ID}:cluster/prod-eks",
            "vpcId": VPC_ID,
            "status": "ACTIVE",
            "tags": _tags(Team="platform"),
        },
        "kubernetesDetails": {
            "kubernetesUserDetails": {
                "username": "system:serviceaccount:payments:api",
                "uid": "6f1c0d5e-2b3a-4c5d-8e9f-0a1b2c3d4e5f",
                "groups": ["system:serviceaccounts"],
            },
            "kubernetesWorkloadDetails": {
                "name": "api-7d9f8b6c5d-x2k4q",
                "type": "pods",
                "uid": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
                "namespace": "payments",
                "containers": [_container()],
            },
        },
    }


def _ecs() -> dict[str, Any]:
    return {
        "ecsClusterDetails": {
            "name": "prod-ecs",
            "arn": f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:cluster/prod-ecs",
            "status": "ACTIVE",
            "runningTasksCount": 6,
            "tags": _tags(Team="payments"),
            "taskDetails": {
                "arn": f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task/prod-ecs/0a1b2c3d4e5f",
                "definitionArn": f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task-definition/api:12",
                "launchType": "FARGATE",
                "containers": [_container()],
            },
        }
    }


def _bucket(name: str) -> dict[str, Any]:
    return {
        "arn": f"arn:aws:s3:::{name}",
        "name": name,
        "type": "Destination",
        "owner": {"id": "7f3c0d5e2b3a4c5d8e9f0a1b2c3d4e5f7f3c0d5e2b3a4c5d8e9f0a1b2c3d4e5f"},
        "tags": _tags(DataClass="confidential"),
        "publicAccess": {"effectivePermission": "NOT_PUBLIC"},
    }


def _rds_user() -> dict[str, Any]:
    return {"user": "app_admin", "application": "psql", "database": "orders", "ssl": "true"}


def resource(resource_type: str) -> dict[str, Any]:
    """The finding's resource member for one GuardDuty resource type."""
    details: dict[str, Any]
    if resource_type == "Instance":
        details = {"instanceDetails": _instance()}
    elif resource_type == "AccessKey":
        details = {
            "accessKeyDetails": {
                "accessKeyId": ACCESS_KEY_ID,
                "principalId": "AROAZ2EXAMPLE7ROLEID:i-0a1b2c3d4e5f6071a",
                "userName": "web-server-role",
                "userType": "AssumedRole",
            }
        }
    elif resource_type == "S3Bucket":
        details = {
            "accessKeyDetails": {
                "accessKeyId": USER_ACCESS_KEY_ID,
                "principalId": "AIDAZ2EXAMPLE7USERID",
                "userName": "deploy-bot",
                "userType": "IAMUser",
            },
            "s3BucketDetails": [_bucket("orders-exports"), _bucket("orders-archive")],
        }
    elif resource_type == "S3Object":
        bucket = _bucket("uploads-inbox")
        bucket["s3ObjectDetails"] = [
            {
                "objectArn": "arn:aws:s3:::uploads-inbox/invoices/invoice-2291.pdf.exe",
                "key": "invoices/invoice-2291.pdf.exe",
                "eTag": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
                "hash": FILE_SHA256,
                "versionId": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
            }
        ]
        details = {"s3BucketDetails": [bucket]}
    elif resource_type == "EKSCluster":
        details = _eks()
    elif resource_type == "ECSCluster":
        details = _ecs()
    elif resource_type == "Container":
        details = {"containerDetails": _container(), "instanceDetails": _instance()}
    elif resource_type == "Lambda":
        details = {
            "lambdaDetails": {
                "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:thumbnailer",
                "functionName": "thumbnailer",
                "functionVersion": "$LATEST",
                "role": f"arn:aws:iam::{ACCOUNT_ID}:role/thumbnailer",
                "vpcConfig": {
                    "vpcId": VPC_ID,
                    "subnetIds": [SUBNET_ID],
                    "securityGroups": [{"groupId": "sg-0a1b2c3d4e5f6071e"}],
                },
                "tags": _tags(Team="media"),
            }
        }
    elif resource_type == "RDSDBInstance":
        details = {
            "rdsDbInstanceDetails": {
                "dbInstanceIdentifier": "orders-db-1",
                "engine": "aurora-postgresql",
                "engineVersion": "16.4",
                "dbClusterIdentifier": "orders-db",
                "dbInstanceArn": f"arn:aws:rds:{REGION}:{ACCOUNT_ID}:db:orders-db-1",
                "tags": _tags(DataClass="confidential"),
            },
            "rdsDbUserDetails": _rds_user(),
        }
    elif resource_type == "RDSLimitlessDB":
        details = {
            "rdsLimitlessDbDetails": {
                "dbShardGroupIdentifier": "orders-shards",
                "dbShardGroupResourceId": "shardgroup-0a1b2c3d4e5f",
                "dbShardGroupArn": f"arn:aws:rds:{REGION}:{ACCOUNT_ID}:shard-group:orders-shards",
                "engine": "aurora-postgresql",
                "dbClusterIdentifier": "orders-limitless",
                "tags": _tags(DataClass="confidential"),
            },
            "rdsDbUserDetails": _rds_user(),
        }
    elif resource_type == "EBSSnapshot":
        details = {
            "ebsSnapshotDetails": {
                "snapshotArn": f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:snapshot/snap-0a1b2c3d4e5f6071f"
            }
        }
    elif resource_type == "EC2Image":
        details = {
            "ec2ImageDetails": {"imageArn": f"arn:aws:ec2:{REGION}::image/ami-0a1b2c3d4e5f60720"}
        }
    elif resource_type == "RecoveryPoint":
        details = {
            "recoveryPointDetails": {
                "recoveryPointArn": f"arn:aws:backup:{REGION}:{ACCOUNT_ID}:recovery-point:"
                "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
                "backupVaultName": "prod-vault",
            }
        }
    else:
        details = {}
    return {"resourceType": resource_type, **details}


# --- service details by data source -----------------------------------------------------------


def _remote_ip(address: str) -> dict[str, Any]:
    field = "ipAddressV6" if ":" in address else "ipAddressV4"
    return {
        field: address,
        "organization": {"asn": "64500", "asnOrg": "EXAMPLE-NET", "isp": "Example", "org": "Ex"},
        "country": {"countryCode": "NL", "countryName": "Netherlands"},
        "city": {"cityName": "Amsterdam"},
        "geoLocation": {"lat": 52.37, "lon": 4.89},
    }


def _service_details(
    finding_type: FindingType, resource_type: str, direction: str
) -> dict[str, Any]:
    source = finding_type.data_source
    name = finding_type.type
    if source.startswith("Extended Threat Detection"):
        return {"detection": {"sequence": _sequence(name)}}
    if source == "Malware Protection for EC2":
        return {"ebsVolumeScanDetails": _ebs_scan()}
    if source.startswith("Malware Protection for"):
        return {"malwareScanDetails": _malware_scan(resource_type)}
    if source == "Runtime Monitoring":
        details: dict[str, Any] = {"runtimeDetails": _runtime(name)}
        if _is_dns(name):
            details["action"] = _dns_action()
        elif _is_network(name):
            details["action"] = _connection_action(direction)
        return details
    if source == "DNS logs":
        return {"action": _dns_action()}
    if source in ("VPC flow logs", "Lambda network activity"):
        if "PortProbe" in name:
            return {"action": _port_probe_action()}
        return {"action": _connection_action(direction)}
    if source == "EKS audit logs":
        return {"action": _kubernetes_action()}
    if source == "RDS login activity":
        return {"action": _rds_action()}
    return {"action": _api_action(name)}


def _is_dns(type_name: str) -> bool:
    return "!DNS" in type_name or "DomainRequest" in type_name or "DNSDataExfil" in type_name


def _is_network(type_name: str) -> bool:
    marks = ("C&C", "Tor", "MaliciousIPCaller", "BitcoinTool", "BlackholeTraffic", "DropPoint")
    return any(mark in type_name for mark in marks)


def _connection_action(direction: str) -> dict[str, Any]:
    remote = ATTACKER_IPV4 if direction == "INBOUND" else TARGET_IPV4
    return {
        "actionType": "NETWORK_CONNECTION",
        "networkConnectionAction": {
            "connectionDirection": direction,
            "blocked": False,
            "protocol": "TCP",
            "localIpDetails": {"ipAddressV4": "10.20.1.15"},
            "localPortDetails": {"port": 22 if direction == "INBOUND" else 49152},
            "remotePortDetails": {"port": 51122 if direction == "INBOUND" else 443},
            "remoteIpDetails": _remote_ip(remote),
        },
    }


def _port_probe_action() -> dict[str, Any]:
    return {
        "actionType": "PORT_PROBE",
        "portProbeAction": {
            "blocked": False,
            "portProbeDetails": [
                {
                    "localPortDetails": {"port": 3389, "portName": "RDP"},
                    "localIpDetails": {"ipAddressV4": "10.20.1.15"},
                    "remoteIpDetails": _remote_ip(ATTACKER_IPV4),
                },
                {
                    "localPortDetails": {"port": 22, "portName": "SSH"},
                    "localIpDetails": {"ipAddressV4": "10.20.1.15"},
                    "remoteIpDetails": _remote_ip(ATTACKER_IPV6),
                },
            ],
        },
    }


def _dns_action() -> dict[str, Any]:
    return {
        "actionType": "DNS_REQUEST",
        "dnsRequestAction": {
            "domain": C2_DOMAIN,
            "protocol": "UDP",
            "blocked": False,
            "domainWithSuffix": "malicious.example",
        },
    }


def _api_action(type_name: str) -> dict[str, Any]:
    service, api = "iam.amazonaws.com", "ListAccessKeys"
    if ":S3/" in type_name:
        service, api = "s3.amazonaws.com", "GetObject"
    if "Policy:S3/" in type_name or "BlockPublicAccess" in type_name:
        service, api = "s3.amazonaws.com", "PutBucketPublicAccessBlock"
    if "Stealth" in type_name:
        service, api = "cloudtrail.amazonaws.com", "StopLogging"
    return {
        "actionType": "AWS_API_CALL",
        "awsApiCallAction": {
            "api": api,
            "serviceName": service,
            "callerType": "Remote IP",
            "userAgent": "aws-cli/2.17.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.1 md/arch#x86_64",
            "errorCode": "AccessDenied" if "Recon" in type_name else None,
            "remoteIpDetails": _remote_ip(ATTACKER_IPV4),
            "affectedResources": {},
        },
    }


def _kubernetes_action() -> dict[str, Any]:
    return {
        "actionType": "KUBERNETES_API_CALL",
        "kubernetesApiCallAction": {
            "requestUri": "/api/v1/namespaces/payments/secrets",
            "verb": "list",
            "resource": "secrets",
            "namespace": "payments",
            "sourceIPs": [ATTACKER_IPV4],
            "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/9b8f5e1",
            "remoteIpDetails": _remote_ip(ATTACKER_IPV4),
            "statusCode": 200,
        },
    }


def _rds_action() -> dict[str, Any]:
    return {
        "actionType": "RDS_LOGIN_ATTEMPT",
        "rdsLoginAttemptAction": {
            "remoteIpDetails": _remote_ip(ATTACKER_IPV4),
            "LoginAttributes": [
                {
                    "user": "app_admin",
                    "application": "psql",
                    "failedLoginAttempts": 118,
                    "successfulLoginAttempts": 1,
                }
            ],
        },
    }


def _runtime(type_name: str) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if "Tool" in type_name or "Pentest" in type_name:
        context = {"toolName": "nmap", "toolCategory": "Network scanner"}
    elif "Modified" in type_name or "File" in type_name:
        context = {"filePath": "/etc/ld.so.preload", "fileOperation": "Write"}
    return {
        "process": {
            "name": "kworkerds",
            "executablePath": "/tmp/.x/kworkerds",
            "executableSha256": FILE_SHA256,
            "pid": 4242,
            "namespacePid": 42,
            "pwd": "/tmp/.x",
            "user": "www-data",
            "userId": 33,
            "euid": 33,
            "startTime": "2026-11-30T08:01:10.000Z",
            "lineage": [
                {"name": "sh", "pid": 4200, "executablePath": "/bin/sh"},
                {"name": "nginx", "pid": 812, "executablePath": "/usr/sbin/nginx"},
            ],
        },
        "context": context,
    }


def _ebs_scan() -> dict[str, Any]:
    return {
        "scanId": "scan-0a1b2c3d4e5f60718293",
        "scanStartedAt": "2026-11-30T08:20:00.000Z",
        "scanCompletedAt": "2026-11-30T08:31:00.000Z",
        "triggerFindingId": "5cc6f0b2e7d84b1e9b3f2a5c8d7e6f01",
        "sources": ["Bitdefender"],
        "scanType": "GUARDDUTY_INITIATED",
        "scanDetections": {
            "scannedItemCount": {"totalGb": 8, "files": 91123, "volumes": 1},
            "threatsDetectedItemCount": {"files": 1},
            "threatDetectedByName": {
                "itemCount": 1,
                "uniqueThreatNameCount": 1,
                "shortened": False,
                "threatNames": [
                    {
                        "name": "Trojan.Linux.Mirai.A",
                        "severity": "HIGH",
                        "itemCount": 1,
                        "filePaths": [
                            {
                                "filePath": "/tmp/.x/kworkerds",
                                "volumeArn": _volume_arn(),
                                "hash": FILE_SHA256,
                                "fileName": "kworkerds",
                            }
                        ],
                    }
                ],
            },
        },
    }


def _volume_arn() -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:volume/vol-0a1b2c3d4e5f60721"


def _malware_scan(resource_type: str) -> dict[str, Any]:
    threat: dict[str, Any] = {"name": "EICAR-Test-File", "source": "Amazon", "count": 1}
    if resource_type == "S3Object":
        threat["itemPaths"] = [{"nestedItemPath": "invoice-2291.pdf.exe", "hash": FILE_SHA256}]
    else:
        threat["itemDetails"] = [
            {
                "resourceArn": _volume_arn(),
                "itemPath": "/home/ec2-user/eicar.com",
                "hash": FILE_SHA256,
                "additionalInfo": {"deviceName": "/dev/xvda"},
            }
        ]
    return {
        "scanId": "scan-1b2c3d4e5f6071829304",
        "scanType": "ON_DEMAND" if resource_type != "S3Object" else "BACKGROUND",
        "scanCategory": "FULL_SCAN",
        "threats": [threat],
        "uniqueThreatCount": 1,
    }


def _sequence(type_name: str) -> dict[str, Any]:
    return {
        "uid": f"seq-{hashlib.sha256(type_name.encode()).hexdigest()[:12]}",
        "description": f"A sequence of activity matching {type_name}.",
        "actors": [
            {
                "id": "actor-1",
                "user": {
                    "name": "deploy-bot",
                    "uid": "AIDAZ2EXAMPLE7USERID",
                    "type": "IAMUser",
                    "credentialUid": USER_ACCESS_KEY_ID,
                    "account": {"uid": ACCOUNT_ID},
                },
                "process": {
                    "name": "kworkerds",
                    "path": "/tmp/.x/kworkerds",
                    "sha256": FILE_SHA256,
                },
            }
        ],
        "resources": [
            {
                "uid": INSTANCE_ID,
                "name": "web-1",
                "accountId": ACCOUNT_ID,
                "resourceType": "EC2Instance",
                "region": REGION,
                "service": "ec2",
            },
            {
                "uid": "arn:aws:s3:::orders-exports",
                "name": "orders-exports",
                "accountId": ACCOUNT_ID,
                "resourceType": "S3Bucket",
                "region": REGION,
                "service": "s3",
            },
        ],
        "endpoints": [
            {
                "id": "endpoint-1",
                "ip": ATTACKER_IPV4,
                "port": 443,
                "connection": {"direction": "INBOUND"},
                "autonomousSystem": {"name": "EXAMPLE-NET", "number": 64500},
            },
            {"id": "endpoint-2", "domain": C2_DOMAIN},
        ],
        "signals": [
            {
                "uid": "signal-1",
                "type": "FINDING",
                "name": "Discovery:IAMUser/AnomalousBehavior",
                "description": "Unusual discovery API calls.",
                "createdAt": 1764489600000,
                "updatedAt": 1764491400000,
                "firstSeenAt": 1764489600000,
                "lastSeenAt": 1764491400000,
                "severity": 5.0,
                "count": 14,
                "resourceUids": [INSTANCE_ID],
                "actorIds": ["actor-1"],
                "endpointIds": ["endpoint-1"],
            },
            {
                "uid": "signal-2",
                "type": "CLOUD_TRAIL",
                "name": "DeleteTrail",
                "description": "CloudTrail logging was deleted.",
                "severity": 8.0,
                "count": 1,
                "actorIds": ["actor-1"],
            },
        ],
        "sequenceIndicators": [
            {"key": "ATTACK_TACTIC", "values": ["Discovery", "Defense Evasion"]},
            {"key": "HIGH_RISK_API", "values": ["DeleteTrail"]},
        ],
    }
