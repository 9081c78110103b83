"""Every documented GuardDuty finding type, on each of its resource types, normalizes in full."""

import pytest

from cloud_sniper.domain.models import IndicatorKind, IndicatorRole
from cloud_sniper.domain.normalize import normalize
from cloud_sniper.synthetic_findings import (
    ACCESS_KEY_ID,
    ATTACKER_IPV4,
    C2_DOMAIN,
    CUSTOM_RULE_RESOURCE,
    FILE_SHA256,
    INSTANCE_ID,
    TARGET_IPV4,
    as_event,
    finding_types,
    synthetic_finding,
)

CASES = [(row, resource_type) for row in finding_types() for resource_type in row.resource_types]

# What identifies each resource type, as Finding.resource fields.
IDENTIFIERS = {
    "Instance": ("instance_id", "vpc_id", "subnet_ids", "private_ips", "instance_profile_arn"),
    "AccessKey": ("access_key_id", "principal", "principal_id", "user_type"),
    "S3Bucket": ("bucket_names", "arns", "access_key_id"),
    "S3Object": ("bucket_names", "object_keys"),
    "EKSCluster": ("cluster", "arns", "workload", "namespace", "kubernetes_user", "containers"),
    "ECSCluster": ("cluster", "arns", "task_arn", "containers"),
    "Container": ("containers", "instance_id"),
    "Lambda": ("function_name", "arns", "vpc_id", "subnet_ids"),
    "RDSDBInstance": ("db_instance_id", "db_cluster_id", "db_user", "arns"),
    "RDSLimitlessDB": ("db_shard_group_id", "db_cluster_id", "db_user", "arns"),
    "EBSSnapshot": ("snapshot_arn",),
    "EC2Image": ("image_arn",),
    "RecoveryPoint": ("recovery_point_arn",),
    "AttackSequence": ("related",),
}


def test_the_documented_list_is_whole():
    # Given the shipped list of finding types
    types = [row.type for row in finding_types()]

    # Then it holds every active type once, and every resource type is one we know
    # GuardDuty's 219 active types, and Cloud Sniper's own beacon finding type.
    assert len(types) == len(set(types)) == 220
    documented = {kind for row in finding_types() for kind in row.resource_types}
    assert documented - set(IDENTIFIERS) == {CUSTOM_RULE_RESOURCE}


@pytest.mark.parametrize(
    ("row", "resource_type"), CASES, ids=[f"{row.type}@{kind}" for row, kind in CASES]
)
def test_every_type_normalizes_without_loss(row, resource_type):
    # Given a realistic finding of the type on one of its documented resource types
    document = synthetic_finding(row, resource_type)

    # When it is normalized, as GuardDuty's event and as its bare S3 export
    finding = normalize(as_event(document))

    # Then nothing it says is lost: type, severity, the resource and its identifiers
    assert finding == normalize(document)
    assert finding.type == row.type
    assert finding.severity == row.severity
    assert finding.count == 3 and finding.first_seen and finding.last_seen
    kind = document["resource"]["resourceType"]
    assert finding.resource.kind == kind
    for field in IDENTIFIERS.get(kind, ()):
        assert getattr(finding.resource, field), f"resource.{field} is empty"
    # And what the data source observed is read into indicators and activity
    _assert_observations(row.data_source, row.type, finding)


def _assert_observations(source, type_name, finding):
    kinds = {(i.kind, i.value): i for i in finding.indicators}
    activity = finding.activity
    if source.startswith("Extended Threat Detection"):
        assert activity.sequence and len(activity.signals) == 2
        assert activity.signals[0].first_seen is not None
        assert activity.sequence_indicators["HIGH_RISK_API"] == ["DeleteTrail"]
        assert kinds[(IndicatorKind.IPV4, ATTACKER_IPV4)].role is IndicatorRole.ATTACKER
        assert (IndicatorKind.DOMAIN, C2_DOMAIN) in kinds
        assert (IndicatorKind.FILE_HASH, FILE_SHA256) in kinds
        assert {r.uid for r in finding.resource.related} >= {INSTANCE_ID}
    elif source.startswith("Malware Protection"):
        assert activity.threats and activity.threats[0].hashes == [FILE_SHA256]
        assert activity.threats[0].file_paths and activity.scan_id
        assert (IndicatorKind.FILE_HASH, FILE_SHA256) in kinds
        if source.endswith("EC2"):
            assert finding.resource.volume_arns
    elif source == "Runtime Monitoring":
        assert activity.process and activity.process.executable_sha256 == FILE_SHA256
        assert activity.process.lineage == ["sh", "nginx"]
        assert (IndicatorKind.FILE_HASH, FILE_SHA256) in kinds
    elif source == "DNS logs":
        assert activity.action_type == "DNS_REQUEST"
        assert (IndicatorKind.DOMAIN, C2_DOMAIN) in kinds
    elif source in ("VPC flow logs", "Lambda network activity"):
        addresses = finding.addresses()
        assert addresses, "no address read from the connection"
        if activity.action_type == "PORT_PROBE":
            assert {i.kind for i in addresses} == {IndicatorKind.IPV4, IndicatorKind.IPV6}
            assert all(i.role is IndicatorRole.ATTACKER for i in addresses)
        else:
            (address,) = addresses
            outbound = address.value == TARGET_IPV4
            assert address.role is (IndicatorRole.TARGET if outbound else IndicatorRole.ATTACKER)
    elif source == "EKS audit logs":
        call = activity.kubernetes_call
        assert call and call.verb == "list" and call.namespace == "payments"
        assert kinds[(IndicatorKind.IPV4, ATTACKER_IPV4)].role is IndicatorRole.ATTACKER
    elif source == "RDS login activity":
        (login,) = activity.database_logins
        assert login.failed_attempts == 118 and login.successful_attempts == 1
        assert kinds[(IndicatorKind.IPV4, ATTACKER_IPV4)].role is IndicatorRole.ATTACKER
    else:
        call = activity.api_call
        assert call and call.name and call.service and call.user_agent and call.caller_type
        assert kinds[(IndicatorKind.IPV4, ATTACKER_IPV4)].role is IndicatorRole.ATTACKER
        if finding.resource.kind == "AccessKey":
            assert (IndicatorKind.ACCESS_KEY, ACCESS_KEY_ID) in kinds
