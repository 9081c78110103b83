"""Isolating an instance against an emulated account: security groups, snapshots, ASG, ELB."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime
from fnmatch import fnmatch
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import ActionKind, ActionStatus, Finding, PlannedAction
from cloud_sniper.domain.normalize import normalize
from cloud_sniper.local.account import IMAGE_ID
from services.mitigate.adapters.records import DynamoRecordStore
from services.mitigate.catalogue import (
    ActionRecord,
    ActionRun,
    RecordStatus,
    catalogue,
    record_id,
    run_action,
    undo_action,
)
from services.mitigate.catalogue.isolation import (
    MEMORY,
    TAG_INCIDENT,
    TAG_INSTANCE,
    TAG_ISOLATED_AT,
    TAG_PURPOSE,
    TAG_VOLUME,
    group_name,
)
from tests.project_tables import create_table

NOW = datetime(2024, 5, 1, 11, 0, 7, tzinfo=UTC)
LATER = datetime(2024, 5, 1, 15, 30, tzinfo=UTC)
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's account
INCIDENT = "inc-0123456789abcdef"
ASG = "web-asg"
KIND = ActionKind.ISOLATE_INSTANCE
ACTION = catalogue()[KIND]
# The IAM service prefix of each SDK service, as botocore's event names spell the service.
IAM_PREFIX = {
    "ec2": "ec2",
    "auto-scaling": "autoscaling",
    "elastic-load-balancing-v2": ("elasticloadbalancing"),
}


@dataclasses.dataclass
class Account:
    """The emulated account: readers that are not counted, and the action's counted clients."""

    ec2: Any
    autoscaling: Any
    elbv2: Any
    records: DynamoRecordStore
    session: Any
    made: list[tuple[str, str, dict[str, Any]]]
    vpc_id: str
    web_group: str
    ssh_group: str
    kms_key: str
    instance_id: str  # in the Auto Scaling group, two network interfaces, two volumes, a target
    other_instance_id: str  # alone: one network interface, its root volume
    primary_eni: str
    second_eni: str
    target_groups: list[str]
    _clients: dict[str, Any] = dataclasses.field(default_factory=dict)

    def clients(self, service_name: str) -> Any:
        if service_name not in self._clients:
            self._clients[service_name] = self.session.client(service_name, region_name=REGION)
        return self._clients[service_name]

    def take(self) -> Counter[str]:
        """The operations the action made since the last take, each checked against its grant."""
        made, self.made[:] = list(self.made), []
        for service, operation, params in made:
            action = f"{IAM_PREFIX[service]}:{operation}"
            for arn in resource_arns(operation, params):
                assert granted(action, arn), f"{operation} on {arn} is not declared as {action}"
            assert granted(action, None), f"{operation} is not declared as {action}"
        return Counter(operation for _, operation, _ in made)

    def instance(self, instance_id: str | None = None) -> dict[str, Any]:
        instance_id = instance_id or self.instance_id
        reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservations[0]["Instances"][0]

    def eni_groups(self, instance_id: str | None = None) -> dict[str, list[str]]:
        return {
            eni["NetworkInterfaceId"]: [group["GroupId"] for group in eni["Groups"]]
            for eni in self.instance(instance_id)["NetworkInterfaces"]
        }

    def tags(self, instance_id: str | None = None) -> dict[str, str]:
        return {tag["Key"]: tag["Value"] for tag in self.instance(instance_id).get("Tags", [])}

    def isolation_group(self) -> dict[str, Any] | None:
        groups = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [group_name(self.vpc_id)]}]
        )["SecurityGroups"]
        return groups[0] if groups else None

    def protection(self, instance_id: str | None = None) -> tuple[bool, bool]:
        instance_id = instance_id or self.instance_id
        return tuple(
            self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute=attribute)[
                attribute[0].upper() + attribute[1:]
            ]["Value"]
            for attribute in ("disableApiTermination", "disableApiStop")
        )

    def lifecycle(self) -> tuple[str, int]:
        """The instance's lifecycle state in its group, and the group's desired capacity."""
        instance = self.autoscaling.describe_auto_scaling_instances(InstanceIds=[self.instance_id])[
            "AutoScalingInstances"
        ][0]
        group = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])
        return instance["LifecycleState"], group["AutoScalingGroups"][0]["DesiredCapacity"]

    def targets(self) -> set[tuple[str, int]]:
        """Every target registered in the two target groups, draining ones left out."""
        return {
            (target["Target"]["Id"], target["Target"]["Port"])
            for arn in self.target_groups
            for target in self.elbv2.describe_target_health(TargetGroupArn=arn)[
                "TargetHealthDescriptions"
            ]
            if target["TargetHealth"]["State"] != "draining"
        }

    def snapshots(self) -> list[dict[str, Any]]:
        return self.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{TAG_INCIDENT}", "Values": [INCIDENT]}]
        )["Snapshots"]


def resource_arns(operation: str, params: dict[str, Any]) -> list[str]:
    """The resources a call acts on, where its parameters name them."""
    ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}"
    arns = []
    if "InstanceId" in params:
        arns.append(f"{ec2}:instance/{params['InstanceId']}")
    arns += [
        f"{ec2}:instance/{resource}" if resource.startswith("i-") else f"{ec2}:x/{resource}"
        for resource in params.get("Resources", [])
    ]
    if "NetworkInterfaceId" in params:
        arns.append(f"{ec2}:network-interface/{params['NetworkInterfaceId']}")
    if operation != "DescribeSecurityGroups":
        arns += [f"{ec2}:security-group/{group}" for group in params.get("Groups", [])]
        if "GroupId" in params:
            arns.append(f"{ec2}:security-group/{params['GroupId']}")
    if operation == "CreateSecurityGroup":
        arns += [f"{ec2}:vpc/{params['VpcId']}", f"{ec2}:security-group/sg-new"]
    if operation == "CreateSnapshot":
        arns += [f"{ec2}:volume/{params['VolumeId']}", f"arn:aws:ec2:{REGION}::snapshot/snap-new"]
    if "AutoScalingGroupName" in params:
        arns.append(
            f"arn:aws:autoscaling:{REGION}:{ACCOUNT_ID}:autoScalingGroup:"
            f"0f1e2d3c-uuid:autoScalingGroupName/{params['AutoScalingGroupName']}"
        )
    if "TargetGroupArn" in params and operation in ("RegisterTargets", "DeregisterTargets"):
        arns.append(params["TargetGroupArn"])
    return arns


def granted(action: str, arn: str | None) -> bool:
    return any(
        action in permission.actions
        and (
            arn is None
            or any(
                fnmatch(arn, resource.format(partition="aws", region=REGION, account=ACCOUNT_ID))
                for resource in permission.resources
            )
        )
        for permission in ACTION.permissions
    )


def declared() -> set[str]:
    return {action for permission in ACTION.permissions for action in permission.actions}


@pytest.fixture
def account():
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        autoscaling = boto3.client("autoscaling", region_name=REGION)
        elbv2 = boto3.client("elbv2", region_name=REGION)
        kms = boto3.client("kms", region_name=REGION)
        vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet_id = ec2.create_subnet(
            VpcId=vpc_id, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}a"
        )["Subnet"]["SubnetId"]
        web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc_id)
        ssh = ec2.create_security_group(GroupName="ssh", Description="ssh", VpcId=vpc_id)
        image_id = IMAGE_ID

        # moto reports the groups an instance was launched with on every interface attached
        # to it, whatever ModifyNetworkInterfaceAttribute set: the groups go on the interface.
        ec2.create_launch_template(
            LaunchTemplateName="web-template",
            LaunchTemplateData={
                "ImageId": image_id,
                "InstanceType": "t3.micro",
                "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": subnet_id}],
            },
        )
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=ASG,
            LaunchTemplate={"LaunchTemplateName": "web-template"},
            MinSize=1,
            MaxSize=3,
            DesiredCapacity=2,
            VPCZoneIdentifier=subnet_id,
        )
        members = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])
        instance_id, sibling_id = sorted(
            member["InstanceId"] for member in members["AutoScalingGroups"][0]["Instances"]
        )
        described = ec2.describe_instances(InstanceIds=[instance_id])
        primary_eni = described["Reservations"][0]["Instances"][0]["NetworkInterfaces"][0][
            "NetworkInterfaceId"
        ]
        ec2.modify_network_interface_attribute(
            NetworkInterfaceId=primary_eni, Groups=[web["GroupId"], ssh["GroupId"]]
        )
        second_eni = ec2.create_network_interface(SubnetId=subnet_id, Groups=[web["GroupId"]])[
            "NetworkInterface"
        ]["NetworkInterfaceId"]
        ec2.attach_network_interface(
            NetworkInterfaceId=second_eni, InstanceId=instance_id, DeviceIndex=1
        )
        kms_key = kms.create_key(Description="data volumes")["KeyMetadata"]["Arn"]
        data_volume = ec2.create_volume(
            AvailabilityZone=f"{REGION}a", Size=20, Encrypted=True, KmsKeyId=kms_key
        )["VolumeId"]
        ec2.attach_volume(VolumeId=data_volume, InstanceId=instance_id, Device="/dev/sdf")

        # moto keeps one port per instance in a target group: the two ports are in two groups.
        target_groups = []
        for name, port in (("web", 80), ("api", 8080)):
            arn = elbv2.create_target_group(
                Name=name, Protocol="HTTP", Port=port, VpcId=vpc_id, TargetType="instance"
            )["TargetGroups"][0]["TargetGroupArn"]
            elbv2.register_targets(
                TargetGroupArn=arn,
                Targets=[{"Id": instance_id, "Port": port}, {"Id": sibling_id, "Port": port}],
            )
            target_groups.append(arn)
        other = ec2.run_instances(
            ImageId=image_id,
            MinCount=1,
            MaxCount=1,
            NetworkInterfaces=[
                {"DeviceIndex": 0, "SubnetId": subnet_id, "Groups": [web["GroupId"]]}
            ],
        )["Instances"][0]["InstanceId"]

        table = create_table(boto3.resource("dynamodb", region_name=REGION), naming.ACTIONS_TABLE)
        session = boto3.session.Session()
        made: list[tuple[str, str, dict[str, Any]]] = []

        def count(event_name: str, params: dict[str, Any], **_: Any) -> None:
            _, service, operation = event_name.split(".")
            made.append((service, operation, dict(params)))

        session.events.register("before-parameter-build.*.*", count)
        yield Account(
            ec2=ec2,
            autoscaling=autoscaling,
            elbv2=elbv2,
            records=DynamoRecordStore(table),
            session=session,
            made=made,
            vpc_id=vpc_id,
            web_group=web["GroupId"],
            ssh_group=ssh["GroupId"],
            kms_key=kms_key,
            instance_id=instance_id,
            other_instance_id=other,
            primary_eni=primary_eni,
            second_eni=second_eni,
            target_groups=target_groups,
        )


def finding_of(event, name: str, instance_id: str) -> Finding:
    finding = normalize(event(name))
    resource = finding.resource.model_copy(update={"instance_id": instance_id})
    return finding.model_copy(update={"resource": resource})


def run_of(account: Account, finding: Finding, now: datetime = NOW) -> ActionRun:
    target = finding.resource.instance_id
    return ActionRun(
        finding=finding,
        action=PlannedAction(id=f"{KIND.value}:{target}", kind=KIND, target=target),
        incident_id=INCIDENT,
        now=now,
        expires_at=None,
        clients=account.clients,
    )


def isolate(account: Account, event, instance_id: str | None = None, name: str | None = None):
    name = name or "guardduty-ssh-brute-force.json"
    finding = finding_of(event, name, instance_id or account.instance_id)
    return run_action(run_of(account, finding), account.records, dry_run=False)


def record_of(account: Account, instance_id: str | None = None) -> ActionRecord:
    record = account.records.get(record_id(KIND, instance_id or account.instance_id))
    assert record is not None
    return record


def release(account: Account, instance_id: str | None = None) -> ActionRecord:
    undone = undo_action(
        record_of(account, instance_id), account.clients, "analyst", "false positive", LATER
    )
    account.records.save(undone)
    return undone


def test_isolating_an_instance_closes_it_snapshots_it_and_takes_it_out_of_service(account, event):
    # Given an instance of an Auto Scaling group, behind two target groups, with
    # two network interfaces (web+ssh and web) and two volumes, one encrypted with a KMS key
    assert account.lifecycle() == ("InService", 2)

    # When it is isolated
    result = isolate(account, event)
    counts = account.take()

    # Then it is applied and verified, and says the attacker needs a network ACL deny too
    assert result.status is ActionStatus.APPLIED, result.detail
    assert "verified: 2 network interface(s) only in the isolation group" in result.detail
    assert "inbound attacker 198.51.100.7" in result.detail
    assert "network ACLs beside the isolation (nacl_block)" in result.detail
    # And both network interfaces are in the isolation group only, which has no rule at all
    group = account.isolation_group()
    assert group is not None
    assert account.eni_groups() == {
        account.primary_eni: [group["GroupId"]],
        account.second_eni: [group["GroupId"]],
    }
    assert group["IpPermissions"] == [] and group["IpPermissionsEgress"] == []
    assert {"Key": TAG_PURPOSE, "Value": "isolation"} in group["Tags"]
    # And the instance carries the incident, protected from termination and stop
    tags = account.tags()
    assert tags[TAG_INCIDENT] == INCIDENT
    assert tags[TAG_ISOLATED_AT] == NOW.isoformat()
    assert account.protection() == (True, True)
    with pytest.raises(ClientError, match="disableApiStop"):
        account.ec2.stop_instances(InstanceIds=[account.instance_id])
    # And it is in Standby, the group's capacity lowered so nothing replaces it
    assert account.lifecycle() == ("Standby", 1)
    # And the load balancer no longer sends it traffic; its sibling is untouched
    assert {target for target in account.targets() if target[0] == account.instance_id} == set()
    assert len(account.targets()) == 2
    # And each volume has one forensic snapshot, tagged; the encrypted one is encrypted
    snapshots = {snapshot["VolumeId"]: snapshot for snapshot in account.snapshots()}
    volumes = account.ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [account.instance_id]}]
    )["Volumes"]
    assert set(snapshots) == {volume["VolumeId"] for volume in volumes}
    for volume in volumes:
        snapshot = snapshots[volume["VolumeId"]]
        assert snapshot["Encrypted"] is volume["Encrypted"]
        tagged = {tag["Key"]: tag["Value"] for tag in snapshot["Tags"]}
        assert tagged[TAG_INSTANCE] == account.instance_id
        assert tagged[TAG_VOLUME] == volume["VolumeId"]
    # And the record keeps what the release needs: what each interface had, what was on
    record = record_of(account)
    assert record.status is RecordStatus.ACTIVE and record.expires_at is None
    assert record.verified is True
    state = record.state
    assert {eni["id"]: eni["groups"] for eni in state["interfaces"]} == {
        account.primary_eni: [account.web_group, account.ssh_group],
        account.second_eni: [account.web_group],
    }
    assert state["protection_before"] == {"termination": False, "stop": False}
    assert state["auto_scaling_group"] == ASG and state["entered_standby"] is True
    assert sorted(t["port"] for t in state["target_groups"]) == [80, 8080]
    encrypted = [s for s in state["snapshots"] if s["volume_encrypted"]]
    assert [s["volume_kms_key_id"] for s in encrypted] == [account.kms_key]
    assert [s["encrypted"] for s in encrypted] == [True]
    assert state["inbound_attackers"] == ["198.51.100.7"]
    # And it made these calls, each declared in the action's permissions
    print("isolate_instance apply+verify:", dict(counts))
    assert counts == {
        # apply
        "DescribeInstances": 2,  # + 1 by verify
        "DescribeInstanceAttribute": 4,  # 2 + 2 by verify
        "DescribeAutoScalingInstances": 2,  # + 1 by verify
        "DescribeTargetGroups": 1,
        "DescribeTargetHealth": 4,  # one per target group, + 2 by verify
        "DescribeSecurityGroups": 3,  # lookup, after creation, + 1 by verify
        "CreateSecurityGroup": 1,
        "RevokeSecurityGroupEgress": 1,
        "CreateTags": 1,
        "ModifyNetworkInterfaceAttribute": 2,
        "DescribeSnapshots": 1,
        "DescribeVolumes": 1,
        "CreateSnapshot": 2,
        "ModifyInstanceAttribute": 2,
        "EnterStandby": 1,
        "DeregisterTargets": 2,
    }


def test_verifying_counts_its_calls(account, event):
    # Given an isolated instance
    isolate(account, event)
    account.take()

    # When its isolation is verified on its own
    check = ACTION.verify(record_of(account), account.clients)
    counts = account.take()

    # Then it holds, in six reads
    assert check.ok, check.detail
    print("isolate_instance verify:", dict(counts))
    assert counts == {
        "DescribeInstances": 1,
        "DescribeSecurityGroups": 1,
        "DescribeInstanceAttribute": 2,
        "DescribeAutoScalingInstances": 1,
        "DescribeTargetHealth": 2,
    }


def test_isolating_again_is_already_applied_and_changes_nothing(account, event):
    # Given an isolated instance
    isolate(account, event)
    account.take()
    snapshots = len(account.snapshots())

    # When the same finding comes again
    result = isolate(account, event)
    counts = account.take()

    # Then the isolation in force is verified, by reads only, and nothing more is made
    assert result.status is ActionStatus.ALREADY_APPLIED, result.detail
    assert all(operation.startswith("Describe") for operation in counts), counts
    assert len(account.snapshots()) == snapshots
    assert account.lifecycle() == ("Standby", 1)


def test_releasing_puts_the_instance_back_and_keeps_the_snapshots(account, event):
    # Given an isolated instance
    isolate(account, event)
    account.take()

    # When a person releases it
    undone = release(account)
    counts = account.take()

    # Then every interface has its groups back, protections are off as they were
    assert undone.status is RecordStatus.UNDONE
    assert account.eni_groups() == {
        account.primary_eni: [account.web_group, account.ssh_group],
        account.second_eni: [account.web_group],
    }
    assert account.protection() == (False, False)
    # And it is in service again at the capacity it had, behind the load balancer again
    assert account.lifecycle() == ("InService", 2)
    assert {(account.instance_id, 80), (account.instance_id, 8080)} <= account.targets()
    # And its isolation tags are gone, and the isolation group with them: nothing uses it
    assert not any(key.startswith(("cloud-sniper:", MEMORY)) for key in account.tags())
    assert account.isolation_group() is None
    # And the snapshots stay, as evidence, and the release says so
    assert len(account.snapshots()) == 2
    assert "kept as evidence" in undone.verification
    print("isolate_instance undo:", dict(counts))
    assert counts == {
        "ModifyNetworkInterfaceAttribute": 2,
        "ModifyInstanceAttribute": 2,
        "DescribeAutoScalingInstances": 1,
        "ExitStandby": 1,
        "RegisterTargets": 2,
        "DeleteTags": 1,
        "DescribeNetworkInterfaces": 1,
        "DeleteSecurityGroup": 1,
    }


def test_a_retry_after_a_failure_midway_remembers_what_was_before(account, event):
    # Given the load balancer throttles the second deregistration, after the interfaces,
    # protections, Standby and the first target group have already changed
    calls: list[str] = []

    def throttle(**_: Any):
        calls.append("DeregisterTargets")
        if len(calls) != 2:
            return None
        response = AWSResponse("https://elasticloadbalancing", 400, {}, None)
        return response, {
            "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    account.clients("elbv2").meta.events.register(
        "before-call.elastic-load-balancing-v2.DeregisterTargets", throttle
    )
    finding = finding_of(event, "guardduty-ssh-brute-force.json", account.instance_id)
    with pytest.raises(TransientAwsError, match="Throttling"):
        run_action(run_of(account, finding), account.records, dry_run=False)
    assert account.lifecycle() == ("Standby", 1)

    # When the state machine retries the step
    result = run_action(run_of(account, finding), account.records, dry_run=False)

    # Then it is applied, and the record has the groups and protections of before the first try
    assert result.status is ActionStatus.APPLIED, result.detail
    state = record_of(account).state
    assert {eni["id"]: eni["groups"] for eni in state["interfaces"]} == {
        account.primary_eni: [account.web_group, account.ssh_group],
        account.second_eni: [account.web_group],
    }
    assert state["protection_before"] == {"termination": False, "stop": False}
    assert state["entered_standby"] is True
    assert sorted(t["port"] for t in state["target_groups"]) == [80, 8080]
    # And no volume was snapshotted twice
    assert len(account.snapshots()) == 2
    # And the release puts it all back
    release(account)
    assert account.eni_groups()[account.primary_eni] == [account.web_group, account.ssh_group]
    assert account.protection() == (False, False)
    assert account.lifecycle() == ("InService", 2)
    assert {(account.instance_id, 80), (account.instance_id, 8080)} <= account.targets()


def test_a_missing_instance_is_not_found(account, event):
    # Given an instance id the account does not have
    # When it is isolated
    result = isolate(account, event, instance_id="i-0123456789abcdef0")

    # Then it is not found, nothing is recorded and no group made
    assert result.status is ActionStatus.NOT_FOUND
    assert "i-0123456789abcdef0 not found" in result.detail
    assert account.records.get(record_id(KIND, "i-0123456789abcdef0")) is None
    assert account.isolation_group() is None
    assert set(account.take()) == {"DescribeInstances"}


def test_a_target_that_is_no_instance_id_fails_with_the_reason(account, event):
    # Given a planned isolation of something that is not an instance id
    finding = finding_of(event, "guardduty-ssh-brute-force.json", "web-server-1")

    # When it runs
    result = run_action(run_of(account, finding), account.records, dry_run=False)

    # Then it fails naming the target, and calls nothing
    assert result.status is ActionStatus.FAILED
    assert "'web-server-1' is not an EC2 instance id" in result.detail
    assert not account.take()


def test_the_isolation_group_is_shared_and_kept_until_its_last_release(account, event):
    # Given an isolated instance, and its isolation group opened by hand since
    isolate(account, event)
    group_id = account.isolation_group()["GroupId"]
    account.ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    # Then verifying the first isolation says the group is open
    check = ACTION.verify(record_of(account), account.clients)
    assert not check.ok and f"isolation group {group_id} has 1 inbound" in check.detail

    # When another instance of the same VPC is isolated, for an outbound finding
    result = isolate(account, event, account.other_instance_id, name="guardduty-cc-activity.json")

    # Then it reuses the group, closed again, and names no inbound attacker
    assert result.status is ActionStatus.APPLIED, result.detail
    assert "names no inbound attacker" in result.detail
    assert account.eni_groups(account.other_instance_id) == {
        eni: [group_id] for eni in account.eni_groups(account.other_instance_id)
    }
    assert account.isolation_group()["IpPermissions"] == []
    # And releasing the first keeps the group the second still uses
    first = release(account)
    assert f"isolation group {group_id} kept" in first.verification
    assert account.isolation_group() is not None
    # And releasing the second deletes it
    second = release(account, account.other_instance_id)
    assert f"isolation group {group_id} deleted" in second.verification
    assert account.isolation_group() is None
    # And every call made is declared, and every permission declared was called
    called = {f"{IAM_PREFIX[service]}:{operation}" for service, operation, _ in account.made}
    account.take()
    assert called == declared()


def test_an_interface_gone_before_the_release_is_skipped_and_said(account, event):
    # Given an isolated instance whose second interface was detached and deleted since
    isolate(account, event)
    attachment = account.ec2.describe_network_interfaces(NetworkInterfaceIds=[account.second_eni])[
        "NetworkInterfaces"
    ][0]["Attachment"]["AttachmentId"]
    account.ec2.detach_network_interface(AttachmentId=attachment)
    account.ec2.delete_network_interface(NetworkInterfaceId=account.second_eni)

    # When it is released
    undone = release(account)

    # Then the remaining interface gets its groups back and the missing one is named
    assert account.eni_groups() == {account.primary_eni: [account.web_group, account.ssh_group]}
    assert f"skipped {account.second_eni}: no longer exists" in undone.verification
    assert undone.status is RecordStatus.UNDONE


def test_a_group_of_our_name_that_is_not_ours_is_not_used(account, event):
    # Given a security group someone named like the isolation group, without its tag
    account.ec2.create_security_group(
        GroupName=group_name(account.vpc_id), Description="look-alike", VpcId=account.vpc_id
    )

    # When the instance is isolated
    result = isolate(account, event)

    # Then the isolation fails saying why, and the instance is left as it was
    assert result.status is ActionStatus.FAILED
    assert "without the tag cloud-sniper:purpose=isolation" in result.detail
    assert account.eni_groups()[account.primary_eni] == [account.web_group, account.ssh_group]
