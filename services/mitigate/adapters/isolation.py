"""The AWS side of isolating an instance: EC2, Auto Scaling and load balancer target groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field

from cloud_sniper.domain.models import Model
from services.mitigate.adapters._aws import catalogue_error, error_code
from services.mitigate.catalogue import ActionFailedError, ActionTargetNotFoundError

INSTANCE_NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
ENI_NOT_FOUND = "InvalidNetworkInterfaceID.NotFound"
GROUP_NOT_FOUND = "InvalidGroup.NotFound"
GROUP_EXISTS = "InvalidGroup.Duplicate"
GROUP_IN_USE = "DependencyViolation"
TARGET_GROUP_NOT_FOUND = "TargetGroupNotFound"
INVALID_TARGET = "InvalidTarget"
# A target still draining is on its way out of the group: not a registration to undo.
DRAINING = "draining"
GONE = ("terminated", "shutting-down")

T = TypeVar("T")


class NetworkInterface(Model):
    """A network interface attached to the instance, with its security groups in order."""

    id: str
    vpc_id: str
    groups: list[str]


class InstanceView(Model):
    """What isolating reads of an instance in one DescribeInstances."""

    id: str
    state: str
    network_interfaces: list[NetworkInterface]
    volume_ids: list[str]
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def vpc_ids(self) -> list[str]:
        return sorted({eni.vpc_id for eni in self.network_interfaces})


class Volume(Model):
    id: str
    encrypted: bool
    kms_key_id: str | None = None


class Snapshot(Model):
    id: str
    volume_id: str
    encrypted: bool
    kms_key_id: str | None = None


class SecurityGroup(Model):
    id: str
    tags: dict[str, str] = Field(default_factory=dict)
    ingress: list[dict[str, Any]] = Field(default_factory=list)
    egress: list[dict[str, Any]] = Field(default_factory=list)


class Protection(Model):
    """The instance's termination and stop protection."""

    termination: bool
    stop: bool


class ScalingMembership(Model):
    group: str
    lifecycle_state: str


class Registration(Model):
    """The instance registered in a load balancer target group, on a port."""

    target_group_arn: str
    port: int


class Ec2Isolation:
    """The EC2 calls of isolation: instances, security groups, network interfaces, snapshots."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def instance(self, instance_id: str) -> InstanceView:
        """The instance; ActionTargetNotFoundError when it does not exist or is terminated."""
        try:
            response = self._client.describe_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if error_code(exc) in INSTANCE_NOT_FOUND:
                raise ActionTargetNotFoundError(f"instance {instance_id} not found") from exc
            raise catalogue_error(exc, f"DescribeInstances {instance_id}") from exc
        except BotoCoreError as exc:
            raise catalogue_error(exc, f"DescribeInstances {instance_id}") from exc
        found = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
        if not found:
            raise ActionTargetNotFoundError(f"instance {instance_id} not found")
        raw = found[0]
        state = raw.get("State", {}).get("Name", "")
        if state in GONE:
            raise ActionTargetNotFoundError(f"instance {instance_id} is {state}")
        return InstanceView(
            id=instance_id,
            state=state,
            network_interfaces=[
                NetworkInterface(
                    id=eni["NetworkInterfaceId"],
                    vpc_id=eni.get("VpcId") or raw.get("VpcId", ""),
                    groups=[group["GroupId"] for group in eni.get("Groups", [])],
                )
                for eni in sorted(
                    raw.get("NetworkInterfaces", []),
                    key=lambda eni: eni.get("Attachment", {}).get("DeviceIndex", 0),
                )
            ],
            volume_ids=[
                mapping["Ebs"]["VolumeId"]
                for mapping in raw.get("BlockDeviceMappings", [])
                if "Ebs" in mapping
            ],
            tags={tag["Key"]: tag["Value"] for tag in raw.get("Tags", [])},
        )

    def security_group(self, vpc_id: str, name: str) -> SecurityGroup | None:
        """The VPC's security group of that name, with its rules, if there is one."""
        filters = [
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [name]},
        ]
        groups = self._call(
            lambda: self._client.describe_security_groups(Filters=filters),
            f"DescribeSecurityGroups {name}",
        )
        found = groups.get("SecurityGroups", [])
        return _group(found[0]) if found else None

    def security_groups(self, group_ids: list[str]) -> dict[str, SecurityGroup]:
        """Those of the security groups that still exist, by id."""
        found: dict[str, SecurityGroup] = {}
        for group_id in group_ids:
            # One call per group: a batch fails whole when any one of them is gone.
            try:
                response = self._client.describe_security_groups(GroupIds=[group_id])
            except ClientError as exc:
                if error_code(exc) == GROUP_NOT_FOUND:
                    continue
                raise catalogue_error(exc, f"DescribeSecurityGroups {group_id}") from exc
            except BotoCoreError as exc:
                raise catalogue_error(exc, f"DescribeSecurityGroups {group_id}") from exc
            found.update({g["GroupId"]: _group(g) for g in response.get("SecurityGroups", [])})
        return found

    def create_security_group(
        self, vpc_id: str, name: str, description: str, tags: dict[str, str]
    ) -> str | None:
        """Create a security group in the VPC; its id, None when one of that name exists."""
        try:
            response = self._client.create_security_group(
                GroupName=name,
                Description=description,
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(tags)}],
            )
        except ClientError as exc:
            if error_code(exc) == GROUP_EXISTS:
                return None
            raise catalogue_error(exc, f"CreateSecurityGroup {name} in {vpc_id}") from exc
        except BotoCoreError as exc:
            raise catalogue_error(exc, f"CreateSecurityGroup {name} in {vpc_id}") from exc
        return response["GroupId"]

    def revoke_rules(self, group: SecurityGroup) -> None:
        """Remove every inbound and outbound rule of a security group."""
        if group.ingress:
            self._call(
                lambda: self._client.revoke_security_group_ingress(
                    GroupId=group.id, IpPermissions=group.ingress
                ),
                f"RevokeSecurityGroupIngress {group.id}",
            )
        if group.egress:
            self._call(
                lambda: self._client.revoke_security_group_egress(
                    GroupId=group.id, IpPermissions=group.egress
                ),
                f"RevokeSecurityGroupEgress {group.id}",
            )

    def set_groups(self, eni_id: str, group_ids: list[str]) -> bool:
        """Replace a network interface's security groups; False when the interface is gone.

        A security group that no longer exists raises ActionFailedError naming it.
        """
        try:
            self._client.modify_network_interface_attribute(
                NetworkInterfaceId=eni_id, Groups=group_ids
            )
        except ClientError as exc:
            code = error_code(exc)
            if code == ENI_NOT_FOUND:
                return False
            if code == GROUP_NOT_FOUND:
                raise ActionFailedError(
                    f"network interface {eni_id}: a security group of {group_ids} is gone"
                ) from exc
            raise catalogue_error(exc, f"ModifyNetworkInterfaceAttribute {eni_id}") from exc
        except BotoCoreError as exc:
            raise catalogue_error(exc, f"ModifyNetworkInterfaceAttribute {eni_id}") from exc
        return True

    def interfaces_using(self, group_id: str) -> list[str]:
        """The network interfaces a security group is attached to."""
        paginator = self._client.get_paginator("describe_network_interfaces")
        pages = paginator.paginate(Filters=[{"Name": "group-id", "Values": [group_id]}])
        return [
            eni["NetworkInterfaceId"]
            for page in self._call(lambda: list(pages), f"DescribeNetworkInterfaces {group_id}")
            for eni in page.get("NetworkInterfaces", [])
        ]

    def delete_security_group(self, group_id: str) -> bool:
        """Delete a security group; False when something still uses it."""
        try:
            self._client.delete_security_group(GroupId=group_id)
        except ClientError as exc:
            code = error_code(exc)
            if code == GROUP_NOT_FOUND:
                return True
            if code == GROUP_IN_USE:
                return False
            raise catalogue_error(exc, f"DeleteSecurityGroup {group_id}") from exc
        except BotoCoreError as exc:
            raise catalogue_error(exc, f"DeleteSecurityGroup {group_id}") from exc
        return True

    def tag(self, resource_id: str, tags: dict[str, str]) -> None:
        if not tags:
            return
        self._call(
            lambda: self._client.create_tags(Resources=[resource_id], Tags=_tags(tags)),
            f"CreateTags {resource_id}",
        )

    def untag(self, resource_id: str, keys: list[str]) -> bool:
        """Remove tags by key; False when the resource is gone."""
        try:
            self._client.delete_tags(Resources=[resource_id], Tags=[{"Key": k} for k in keys])
        except ClientError as exc:
            if error_code(exc) in INSTANCE_NOT_FOUND:
                return False
            raise catalogue_error(exc, f"DeleteTags {resource_id}") from exc
        except BotoCoreError as exc:
            raise catalogue_error(exc, f"DeleteTags {resource_id}") from exc
        return True

    def volumes(self, volume_ids: list[str]) -> list[Volume]:
        if not volume_ids:
            return []
        response = self._call(
            lambda: self._client.describe_volumes(VolumeIds=volume_ids),
            f"DescribeVolumes {' '.join(volume_ids)}",
        )
        return [
            Volume(
                id=volume["VolumeId"],
                encrypted=bool(volume.get("Encrypted")),
                kms_key_id=volume.get("KmsKeyId"),
            )
            for volume in response.get("Volumes", [])
        ]

    def snapshots_tagged(self, tags: dict[str, str]) -> list[Snapshot]:
        """This account's snapshots carrying every one of the tags."""
        filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]
        paginator = self._client.get_paginator("describe_snapshots")
        pages = paginator.paginate(OwnerIds=["self"], Filters=filters)
        return [
            _snapshot(snapshot)
            for page in self._call(lambda: list(pages), "DescribeSnapshots")
            for snapshot in page.get("Snapshots", [])
        ]

    def create_snapshot(self, volume_id: str, description: str, tags: dict[str, str]) -> Snapshot:
        """Snapshot a volume, tagged at creation; an encrypted volume gives an encrypted one."""
        response = self._call(
            lambda: self._client.create_snapshot(
                VolumeId=volume_id,
                Description=description,
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": _tags(tags)}],
            ),
            f"CreateSnapshot {volume_id}",
        )
        return _snapshot(response)

    def protection(self, instance_id: str) -> Protection:
        """Termination and stop protection: one attribute per call, as the API allows."""
        values = {}
        for attribute in ("disableApiTermination", "disableApiStop"):
            response = self._call(
                lambda attribute=attribute: self._client.describe_instance_attribute(
                    InstanceId=instance_id, Attribute=attribute
                ),
                f"DescribeInstanceAttribute {instance_id} {attribute}",
            )
            key = attribute[0].upper() + attribute[1:]
            values[attribute] = bool(response.get(key, {}).get("Value"))
        return Protection(
            termination=values["disableApiTermination"], stop=values["disableApiStop"]
        )

    def set_protection(
        self, instance_id: str, *, termination: bool | None, stop: bool | None
    ) -> bool:
        """Set the protections given (None leaves one as is); False when the instance is gone."""
        changes = {"DisableApiTermination": termination, "DisableApiStop": stop}
        for attribute, value in changes.items():
            if value is None:
                continue
            doing = f"ModifyInstanceAttribute {instance_id} {attribute}"
            try:
                self._client.modify_instance_attribute(
                    InstanceId=instance_id, **{attribute: {"Value": value}}
                )
            except ClientError as exc:
                if error_code(exc) in INSTANCE_NOT_FOUND:
                    return False
                raise catalogue_error(exc, doing) from exc
            except BotoCoreError as exc:
                raise catalogue_error(exc, doing) from exc
        return True

    def _call(self, call: Callable[[], T], doing: str) -> T:
        return _call(call, doing)


class AutoScalingStandby:
    """Moves an instance of an Auto Scaling group in and out of Standby."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def membership(self, instance_id: str) -> ScalingMembership | None:
        response = _call(
            lambda: self._client.describe_auto_scaling_instances(InstanceIds=[instance_id]),
            f"DescribeAutoScalingInstances {instance_id}",
        )
        for instance in response.get("AutoScalingInstances", []):
            return ScalingMembership(
                group=instance["AutoScalingGroupName"],
                lifecycle_state=instance.get("LifecycleState", ""),
            )
        return None

    def enter_standby(self, group: str, instance_id: str) -> None:
        # Decrementing the desired capacity keeps the group from launching a replacement
        # and from terminating this instance to make room: the evidence stays.
        _call(
            lambda: self._client.enter_standby(
                AutoScalingGroupName=group,
                InstanceIds=[instance_id],
                ShouldDecrementDesiredCapacity=True,
            ),
            f"EnterStandby {group} {instance_id}",
        )

    def exit_standby(self, group: str, instance_id: str) -> None:
        _call(
            lambda: self._client.exit_standby(
                AutoScalingGroupName=group, InstanceIds=[instance_id]
            ),
            f"ExitStandby {group} {instance_id}",
        )


class TargetGroups:
    """Finds an instance's registrations in load balancer target groups, and changes them."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def registrations(self, instance_id: str, vpc_ids: list[str]) -> list[Registration]:
        """Where the instance is registered, among the instance target groups of its VPCs."""
        paginator = self._client.get_paginator("describe_target_groups")
        pages = _call(lambda: list(paginator.paginate()), "DescribeTargetGroups")
        found: list[Registration] = []
        for page in pages:
            for group in page.get("TargetGroups", []):
                # Only instance target groups name instances, and only in their own VPC.
                if group.get("TargetType") != "instance" or group.get("VpcId") not in vpc_ids:
                    continue
                found += [
                    Registration(target_group_arn=group["TargetGroupArn"], port=port)
                    for port in self.ports(group["TargetGroupArn"], instance_id)
                ]
        return found

    def ports(self, target_group_arn: str, instance_id: str) -> list[int]:
        """The ports the instance is registered on in a target group, draining ones left out."""
        try:
            response = self._client.describe_target_health(TargetGroupArn=target_group_arn)
        except ClientError as exc:
            if error_code(exc) == TARGET_GROUP_NOT_FOUND:
                return []
            raise catalogue_error(exc, f"DescribeTargetHealth {target_group_arn}") from exc
        except BotoCoreError as exc:
            raise catalogue_error(exc, f"DescribeTargetHealth {target_group_arn}") from exc
        return sorted(
            int(health["Target"]["Port"])
            for health in response.get("TargetHealthDescriptions", [])
            if health["Target"]["Id"] == instance_id
            and health.get("TargetHealth", {}).get("State") != DRAINING
        )

    def deregister(self, registration: Registration, instance_id: str) -> None:
        doing = f"DeregisterTargets {registration.target_group_arn}"
        try:
            self._client.deregister_targets(
                TargetGroupArn=registration.target_group_arn,
                Targets=[{"Id": instance_id, "Port": registration.port}],
            )
        except ClientError as exc:
            # Already gone from the group, or the group itself: nothing left to deregister.
            if error_code(exc) in (INVALID_TARGET, TARGET_GROUP_NOT_FOUND):
                return
            raise catalogue_error(exc, doing) from exc
        except BotoCoreError as exc:
            raise catalogue_error(exc, doing) from exc

    def register(self, registration: Registration, instance_id: str) -> bool:
        """Register the instance back; False when the group is gone or refuses it as a target.

        A group refuses an instance that is not running, or no longer in the group's VPC.
        """
        try:
            self._client.register_targets(
                TargetGroupArn=registration.target_group_arn,
                Targets=[{"Id": instance_id, "Port": registration.port}],
            )
        except ClientError as exc:
            if error_code(exc) in (TARGET_GROUP_NOT_FOUND, INVALID_TARGET):
                return False
            raise catalogue_error(exc, f"RegisterTargets {registration.target_group_arn}") from exc
        except BotoCoreError as exc:
            raise catalogue_error(exc, f"RegisterTargets {registration.target_group_arn}") from exc
        return True


def _call(call: Callable[[], T], doing: str) -> T:
    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
        raise catalogue_error(exc, doing) from exc


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _group(raw: dict[str, Any]) -> SecurityGroup:
    return SecurityGroup(
        id=raw["GroupId"],
        tags={tag["Key"]: tag["Value"] for tag in raw.get("Tags", [])},
        ingress=raw.get("IpPermissions", []),
        egress=raw.get("IpPermissionsEgress", []),
    )


def _snapshot(raw: dict[str, Any]) -> Snapshot:
    return Snapshot(
        id=raw["SnapshotId"],
        volume_id=raw.get("VolumeId", ""),
        encrypted=bool(raw.get("Encrypted")),
        kms_key_id=raw.get("KmsKeyId"),
    )
