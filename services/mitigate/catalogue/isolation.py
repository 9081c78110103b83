"""Isolate an EC2 instance: a closed security group, forensic snapshots, out of service.

The instance keeps running for the investigation, reachable by nothing: every network
interface is moved to a per-VPC isolation group with no rule, termination and stop protection
are turned on, an Auto Scaling group puts it in Standby (so it is neither replaced nor
terminated) and load balancers stop sending it traffic. Each attached volume is snapshotted.
Releasing puts everything back except the snapshots, which are evidence.

What the instance was before is also kept in tags on the instance until release: the record is
written only once apply has finished, so a retry after a failure midway reads the previous
security groups, protections and registrations from there instead of the isolated state.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from cloud_sniper.domain.models import ActionKind, Direction, IndicatorRole, Model
from services.mitigate.adapters.isolation import (
    AutoScalingStandby,
    Ec2Isolation,
    InstanceView,
    Protection,
    Registration,
    ScalingMembership,
    Snapshot,
    TargetGroups,
    Volume,
)
from services.mitigate.catalogue import (
    ActionFailedError,
    ActionRecord,
    ActionRun,
    ActionTargetNotFoundError,
    Applied,
    Clients,
    Permission,
    Verification,
    register,
)

TAG_INCIDENT = "cloud-sniper:incident"
TAG_ISOLATED_AT = "cloud-sniper:isolated-at"
TAG_PURPOSE = "cloud-sniper:purpose"
TAG_INSTANCE = "cloud-sniper:instance"
TAG_VOLUME = "cloud-sniper:volume"
PURPOSE_ISOLATION = "isolation"
PURPOSE_FORENSICS = "forensics"
GROUP_PREFIX = "cloud-sniper-isolation-"
GROUP_DESCRIPTION = "Cloud Sniper isolation: no inbound and no outbound rule"

# What the instance was before isolation, kept on it until release.
MEMORY = "cloud-sniper:pre-isolation:"
MEMORY_GROUPS = f"{MEMORY}groups:"  # + network interface id [+ ":<n>" for more ids]
MEMORY_PROTECTION = f"{MEMORY}protection"
MEMORY_STANDBY = f"{MEMORY}standby"
MEMORY_TARGET = f"{MEMORY}target:"  # + "<group name>/<group id>:<port>", the ARN as value
# A tag value holds 256 characters: 12 security group ids of 20 with their separators.
GROUPS_PER_TAG = 12

STANDBY_STATES = ("Standby", "EnteringStandby")
IN_SERVICE = "InService"
INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")

_EC2 = "arn:{partition}:ec2:{region}:{account}"
# Snapshot ARNs name no account.
_SNAPSHOTS = "arn:{partition}:ec2:{region}::snapshot/*"


class InterfaceBefore(Model):
    """A network interface and the security groups it had before isolation."""

    id: str
    vpc_id: str
    groups: list[str]


class Memory(Model):
    """What the pre-isolation tags on an instance say it was."""

    groups: dict[str, list[str]] = Field(default_factory=dict)
    protection: Protection | None = None
    standby_group: str | None = None
    targets: list[Registration] = Field(default_factory=list)


class Before(Model):
    """The instance before isolation, from its memory tags where a failed attempt left them."""

    interfaces: list[InterfaceBefore]
    protection: Protection
    auto_scaling_group: str | None = None
    enter_standby: bool = False  # in service in its group: isolation moves it to Standby
    targets: list[Registration] = Field(default_factory=list)

    def memory(self) -> Memory:
        return Memory(
            groups={eni.id: eni.groups for eni in self.interfaces},
            protection=self.protection,
            standby_group=self.auto_scaling_group if self.enter_standby else None,
            targets=self.targets,
        )


class SnapshotTaken(Model):
    """A forensic snapshot of one volume, as EC2 reported it, and the volume's encryption."""

    volume_id: str
    snapshot_id: str
    encrypted: bool
    kms_key_id: str | None = None
    volume_encrypted: bool
    volume_kms_key_id: str | None = None
    created: bool  # False: found, taken by an earlier attempt for the same incident


class IsolationState(Model):
    """What an isolation changed, as its record keeps it for the release."""

    instance_id: str
    isolation_groups: dict[str, str]  # security group id, by VPC id
    created_groups: list[str] = Field(default_factory=list)
    interfaces: list[InterfaceBefore]
    protection_before: Protection
    auto_scaling_group: str | None = None
    entered_standby: bool = False
    target_groups: list[Registration] = Field(default_factory=list)
    snapshots: list[SnapshotTaken] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)  # keys put on the instance, removed on release
    inbound_attackers: list[str] = Field(default_factory=list)


def group_name(vpc_id: str) -> str:
    """The isolation security group of a VPC."""
    return f"{GROUP_PREFIX}{vpc_id}"


def instance_id_of(target: str) -> str:
    """The target as an instance id; ActionFailedError naming it when it is not one."""
    if not INSTANCE_ID.match(target):
        raise ActionFailedError(f"target {target!r} is not an EC2 instance id (i-...)")
    return target


def memory_tags(memory: Memory) -> dict[str, str]:
    """The tags that keep what the instance was before isolation."""
    tags: dict[str, str] = {}
    for eni_id, groups in memory.groups.items():
        for n, start in enumerate(range(0, len(groups), GROUPS_PER_TAG), start=1):
            key = f"{MEMORY_GROUPS}{eni_id}" + (f":{n}" if n > 1 else "")
            tags[key] = " ".join(groups[start : start + GROUPS_PER_TAG])
    if memory.protection is not None:
        protection = memory.protection
        tags[MEMORY_PROTECTION] = (
            f"termination={str(protection.termination).lower()} stop={str(protection.stop).lower()}"
        )
    if memory.standby_group:
        tags[MEMORY_STANDBY] = memory.standby_group
    for target in memory.targets:
        tags[_target_key(target)] = target.target_group_arn
    return tags


def recall(tags: dict[str, str]) -> Memory:
    """Read the pre-isolation tags back; tags that are not ours are ignored."""
    chunks: dict[str, dict[int, list[str]]] = {}
    memory = Memory()
    for key, value in tags.items():
        if key.startswith(MEMORY_GROUPS):
            eni_id, _, n = key.removeprefix(MEMORY_GROUPS).partition(":")
            chunks.setdefault(eni_id, {})[int(n) if n.isdigit() else 1] = value.split()
        elif key == MEMORY_PROTECTION:
            flags = dict(part.partition("=")[::2] for part in value.split())
            memory.protection = Protection(
                termination=flags.get("termination") == "true", stop=flags.get("stop") == "true"
            )
        elif key == MEMORY_STANDBY:
            memory.standby_group = value
        elif key.startswith(MEMORY_TARGET):
            port = key.rpartition(":")[2]
            if port.isdigit():
                memory.targets.append(Registration(target_group_arn=value, port=int(port)))
    memory.groups = {
        eni_id: [group for _, part in sorted(parts.items()) for group in part]
        for eni_id, parts in chunks.items()
    }
    memory.targets.sort(key=lambda target: (target.target_group_arn, target.port))
    return memory


def before_isolation(
    instance: InstanceView,
    protection: Protection,
    membership: ScalingMembership | None,
    registrations: list[Registration],
) -> Before:
    """What the instance was before isolation: its memory tags first, then what is seen."""
    memory = recall(instance.tags)
    interfaces = [
        InterfaceBefore(id=eni.id, vpc_id=eni.vpc_id, groups=memory.groups.get(eni.id, eni.groups))
        for eni in instance.network_interfaces
    ]
    if memory.standby_group:
        group, enter = memory.standby_group, True
    elif membership is not None:
        # An instance already in Standby, or on its way in or out of the group, stays as is.
        group, enter = membership.group, membership.lifecycle_state == IN_SERVICE
    else:
        group, enter = None, False
    targets = {(t.target_group_arn, t.port): t for t in memory.targets + registrations}
    return Before(
        interfaces=interfaces,
        protection=memory.protection or protection,
        auto_scaling_group=group,
        enter_standby=enter,
        targets=[targets[key] for key in sorted(targets)],
    )


def instance_tags(
    instance: InstanceView, before: Before, incident_id: str, now: datetime
) -> dict[str, str]:
    """The tags isolation puts on the instance: the incident, and the memory of before."""
    isolated_at = now.isoformat()
    if instance.tags.get(TAG_INCIDENT) == incident_id:
        # A retry of the same isolation keeps the time it began.
        isolated_at = instance.tags.get(TAG_ISOLATED_AT, isolated_at)
    return {TAG_INCIDENT: incident_id, TAG_ISOLATED_AT: isolated_at} | memory_tags(before.memory())


def snapshot_tags(incident_id: str, instance_id: str, volume_id: str) -> dict[str, str]:
    return {
        TAG_INCIDENT: incident_id,
        TAG_INSTANCE: instance_id,
        TAG_VOLUME: volume_id,
        TAG_PURPOSE: PURPOSE_FORENSICS,
    }


def inbound_attackers(run: ActionRun) -> list[str]:
    """The remote addresses the finding names as attacking the instance inbound."""
    return list(
        dict.fromkeys(
            indicator.value
            for indicator in run.finding.addresses()
            if indicator.role is IndicatorRole.ATTACKER and indicator.direction is Direction.INBOUND
        )
    )


def connection_note(attackers: list[str]) -> str:
    """Why isolation alone does not cut a connection already open, and what does."""
    if not attackers:
        return "the finding names no inbound attacker address"
    return (
        f"the finding names inbound attacker {', '.join(attackers)}: a security group change "
        "does not cut tracked connections, so the decision denies it in the subnets' network "
        "ACLs beside the isolation (nacl_block), where the safety rules allow"
    )


@register
class IsolateInstance:
    """Move an instance to a closed security group and out of service, with snapshots."""

    kind: ClassVar[ActionKind] = ActionKind.ISOLATE_INSTANCE
    summary: ClassVar[str] = (
        "move every network interface of the instance to a security group with no rule, "
        "snapshot its volumes, protect it from termination and stop, put it in Standby in "
        "its Auto Scaling group and take it out of its load balancer target groups"
    )
    expires: ClassVar[bool] = False
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission(
            actions=[
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceAttribute",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSnapshots",
                "ec2:DescribeVolumes",
                "autoscaling:DescribeAutoScalingInstances",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetHealth",
            ],
            resources=["*"],
            reason="EC2, Auto Scaling and ELB Describe calls support no resource-level "
            "permissions; the instance, its groups and registrations are found by reading",
        ),
        Permission(
            actions=[
                "ec2:CreateSecurityGroup",
                "ec2:RevokeSecurityGroupIngress",
                "ec2:RevokeSecurityGroupEgress",
                "ec2:DeleteSecurityGroup",
                "ec2:ModifyNetworkInterfaceAttribute",
            ],
            resources=[
                f"{_EC2}:security-group/*",
                f"{_EC2}:network-interface/*",
                f"{_EC2}:vpc/*",
            ],
            reason="the isolation group is made in whichever VPC of the account the instance "
            "is in, and any of its network interfaces moved to it and back",
        ),
        Permission(
            actions=["ec2:ModifyInstanceAttribute", "ec2:DeleteTags"],
            resources=[f"{_EC2}:instance/*"],
            reason="the instance to isolate is any instance of the account a finding names",
        ),
        Permission(
            actions=["ec2:CreateTags"],
            resources=[f"{_EC2}:instance/*", f"{_EC2}:security-group/*", _SNAPSHOTS],
            reason="tags go on the instance a finding names, and on the isolation groups and "
            "snapshots isolation creates, whose ids are known only once made",
        ),
        Permission(
            actions=["ec2:CreateSnapshot"],
            resources=[f"{_EC2}:volume/*", _SNAPSHOTS],
            reason="each volume attached to the isolated instance is snapshotted",
        ),
        Permission(
            actions=["autoscaling:EnterStandby", "autoscaling:ExitStandby"],
            resources=[
                "arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*"
                ":autoScalingGroupName/*"
            ],
            reason="the isolated instance may belong to any Auto Scaling group of the account",
        ),
        Permission(
            actions=[
                "elasticloadbalancing:DeregisterTargets",
                "elasticloadbalancing:RegisterTargets",
            ],
            resources=["arn:{partition}:elasticloadbalancing:{region}:{account}:targetgroup/*/*"],
            reason="the isolated instance may be registered in any target group of the account",
        ),
    )

    def plan(self, run: ActionRun) -> str:
        target = run.action.target
        if not INSTANCE_ID.match(target):
            return f"fail: target {target!r} is not an EC2 instance id (i-...)"
        return (
            f"isolate instance {target} for {run.incident_id}: {self.summary}; "
            f"{connection_note(inbound_attackers(run))}"
        )

    def apply(self, run: ActionRun) -> Applied:
        instance_id = instance_id_of(run.action.target)
        ec2 = Ec2Isolation(run.clients("ec2"))
        scaling = AutoScalingStandby(run.clients("autoscaling"))
        balancing = TargetGroups(run.clients("elbv2"))

        instance = ec2.instance(instance_id)
        protection = ec2.protection(instance_id)
        membership = scaling.membership(instance_id)
        registrations = balancing.registrations(instance_id, instance.vpc_ids)
        before = before_isolation(instance, protection, membership, registrations)

        groups: dict[str, str] = {}
        created: list[str] = []
        for vpc_id in instance.vpc_ids:
            groups[vpc_id], made = _isolation_group(ec2, vpc_id)
            created += [groups[vpc_id]] if made else []

        # The instance is tagged before anything changes: its memory of before must be in
        # place first, for a retry to find.
        # TODO(isolation-memory): an instance near EC2's 50 tags fails here (TagLimitExceeded,
        # before any change); the memory could move to the record written before apply.
        tags = instance_tags(instance, before, run.incident_id, run.now)
        ec2.tag(instance_id, {k: v for k, v in tags.items() if instance.tags.get(k) != v})

        interfaces = []
        for eni, eni_before in zip(instance.network_interfaces, before.interfaces, strict=True):
            isolated = [groups[eni.vpc_id]]
            if eni.groups == isolated or ec2.set_groups(eni.id, isolated):
                interfaces.append(eni_before)

        snapshots = _snapshot_volumes(ec2, instance, run.incident_id)

        ec2.set_protection(
            instance_id,
            termination=None if protection.termination else True,
            stop=None if protection.stop else True,
        )
        if membership is not None and membership.lifecycle_state == IN_SERVICE:
            scaling.enter_standby(membership.group, instance_id)
        for registration in registrations:
            balancing.deregister(registration, instance_id)

        state = IsolationState(
            instance_id=instance_id,
            isolation_groups=groups,
            created_groups=created,
            interfaces=interfaces,
            protection_before=before.protection,
            auto_scaling_group=before.auto_scaling_group,
            entered_standby=before.enter_standby,
            target_groups=before.targets,
            snapshots=snapshots,
            tags=sorted(tags),
            inbound_attackers=inbound_attackers(run),
        )
        return Applied(detail=_applied_detail(state), state=state.model_dump(mode="json"))

    def verify(self, record: ActionRecord, clients: Clients) -> Verification:
        state = IsolationState.model_validate(record.state)
        ec2 = Ec2Isolation(clients("ec2"))
        problems: list[str] = []

        try:
            instance = ec2.instance(state.instance_id)
        except ActionTargetNotFoundError as exc:
            return Verification(ok=False, detail=str(exc))
        for eni in instance.network_interfaces:
            wanted = state.isolation_groups.get(eni.vpc_id)
            if wanted is None or eni.groups != [wanted]:
                problems.append(f"{eni.id} is in {' '.join(eni.groups) or 'no group'}")

        found = ec2.security_groups(sorted(state.isolation_groups.values()))
        for group_id in sorted(state.isolation_groups.values()):
            group = found.get(group_id)
            if group is None:
                problems.append(f"isolation group {group_id} is gone")
            elif group.ingress or group.egress:
                problems.append(
                    f"isolation group {group_id} has {len(group.ingress)} inbound and "
                    f"{len(group.egress)} outbound rule(s)"
                )

        protection = ec2.protection(state.instance_id)
        if not protection.termination:
            problems.append("termination protection is off")
        if not protection.stop:
            problems.append("stop protection is off")

        if state.auto_scaling_group:
            membership = AutoScalingStandby(clients("autoscaling")).membership(state.instance_id)
            if membership is None or membership.lifecycle_state not in STANDBY_STATES:
                where = membership.lifecycle_state if membership else "out of the group"
                problems.append(f"not in Standby in {state.auto_scaling_group} ({where})")

        balancing = TargetGroups(clients("elbv2"))
        for arn in sorted({registration.target_group_arn for registration in state.target_groups}):
            ports = balancing.ports(arn, state.instance_id)
            problems += [
                f"still registered in {arn}:{registration.port}"
                for registration in state.target_groups
                if registration.target_group_arn == arn and registration.port in ports
            ]

        if problems:
            return Verification(ok=False, detail="; ".join(problems))
        return Verification(
            ok=True, detail=_verified_detail(state, len(instance.network_interfaces))
        )

    def undo(self, record: ActionRecord, clients: Clients) -> str:
        state = IsolationState.model_validate(record.state)
        instance_id = state.instance_id
        ec2 = Ec2Isolation(clients("ec2"))
        said: list[str] = []

        restored = [eni.id for eni in state.interfaces if ec2.set_groups(eni.id, eni.groups)]
        gone = [eni.id for eni in state.interfaces if eni.id not in restored]
        said.append(f"security groups restored on {len(restored)} network interface(s)")
        if gone:
            said.append(f"skipped {', '.join(gone)}: no longer exists")

        before = state.protection_before
        if ec2.set_protection(
            instance_id,
            termination=None if before.termination else False,
            stop=None if before.stop else False,
        ):
            said.append(
                f"termination protection {_on(before.termination)}, "
                f"stop protection {_on(before.stop)} as before"
            )
        else:
            said.append(f"instance {instance_id} no longer exists")

        if state.entered_standby and state.auto_scaling_group:
            said.append(_exit_standby(AutoScalingStandby(clients("autoscaling")), state))

        balancing = TargetGroups(clients("elbv2"))
        for registration in state.target_groups:
            where = f"{registration.target_group_arn}:{registration.port}"
            if balancing.register(registration, instance_id):
                said.append(f"registered back in {where}")
            else:
                said.append(f"not registered back in {where}: the group is gone or refuses it")

        ec2.untag(instance_id, state.tags)
        said.append(_release_groups(ec2, state))
        if state.snapshots:
            kept = ", ".join(snapshot.snapshot_id for snapshot in state.snapshots)
            said.append(f"forensic snapshots {kept} kept as evidence")
        return "; ".join(said)


def _isolation_group(ec2: Ec2Isolation, vpc_id: str) -> tuple[str, bool]:
    """The VPC's isolation group, made if missing, with no rule left; and whether it was made."""
    name = group_name(vpc_id)
    group = ec2.security_group(vpc_id, name)
    made = False
    if group is None:
        tags = {TAG_PURPOSE: PURPOSE_ISOLATION}
        # None: another execution made it since the lookup; either way it is read again,
        # for the rules a new group comes with.
        made = ec2.create_security_group(vpc_id, name, GROUP_DESCRIPTION, tags) is not None
        group = ec2.security_group(vpc_id, name)
        if group is None:
            raise ActionFailedError(f"security group {name} vanished as it was made")
    if group.tags.get(TAG_PURPOSE) != PURPOSE_ISOLATION:
        raise ActionFailedError(
            f"security group {name} ({group.id}) exists without the tag "
            f"{TAG_PURPOSE}={PURPOSE_ISOLATION}: it is not ours, and is not used"
        )
    # A new group comes with an allow-all outbound rule; an old one may have been opened.
    ec2.revoke_rules(group)
    return group.id, made


def _snapshot_volumes(
    ec2: Ec2Isolation, instance: InstanceView, incident_id: str
) -> list[SnapshotTaken]:
    """Snapshot each attached volume once per incident: those taken already are reused."""
    if not instance.volume_ids:
        return []
    taken: dict[str, Snapshot] = {}
    existing = ec2.snapshots_tagged({TAG_INCIDENT: incident_id, TAG_INSTANCE: instance.id})
    for snapshot in existing:
        taken.setdefault(snapshot.volume_id, snapshot)
    volumes: dict[str, Volume] = {volume.id: volume for volume in ec2.volumes(instance.volume_ids)}

    snapshots: list[SnapshotTaken] = []
    for volume_id in instance.volume_ids:
        volume = volumes.get(volume_id, Volume(id=volume_id, encrypted=False))
        snapshot = taken.get(volume_id)
        created = snapshot is None
        if snapshot is None:
            description = f"Cloud Sniper forensics: {volume_id} of {instance.id}, {incident_id}"
            tags = snapshot_tags(incident_id, instance.id, volume_id)
            snapshot = ec2.create_snapshot(volume_id, description, tags)
        snapshots.append(
            SnapshotTaken(
                volume_id=volume_id,
                snapshot_id=snapshot.id,
                encrypted=snapshot.encrypted,
                kms_key_id=snapshot.kms_key_id,
                volume_encrypted=volume.encrypted,
                volume_kms_key_id=volume.kms_key_id,
                created=created,
            )
        )
    return snapshots


def _exit_standby(scaling: AutoScalingStandby, state: IsolationState) -> str:
    group = state.auto_scaling_group
    membership = scaling.membership(state.instance_id)
    if membership is None or membership.group != group:
        return f"no longer in Auto Scaling group {group}: Standby not exited"
    if membership.lifecycle_state != "Standby":
        return f"{membership.lifecycle_state} in {group}, not Standby: left as is"
    scaling.exit_standby(group, state.instance_id)
    return f"back in service in {group}"


def _release_groups(ec2: Ec2Isolation, state: IsolationState) -> str:
    """Delete the isolation groups no network interface uses any more; keep the others."""
    deleted, kept = [], []
    for group_id in sorted(state.isolation_groups.values()):
        if not ec2.interfaces_using(group_id) and ec2.delete_security_group(group_id):
            deleted.append(group_id)
        else:
            kept.append(group_id)
    said = []
    if deleted:
        said.append(f"isolation group {', '.join(deleted)} deleted, no longer used")
    if kept:
        said.append(f"isolation group {', '.join(kept)} kept: other instances use it")
    return "; ".join(said)


def _target_key(target: Registration) -> str:
    # "targetgroup/<name>/<id>" is unique in the account and region, and short enough.
    suffix = target.target_group_arn.rpartition(":targetgroup/")[2]
    return f"{MEMORY_TARGET}{suffix}:{target.port}"


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _applied_detail(state: IsolationState) -> str:
    groups = ", ".join(
        f"{group_id} ({group_name(vpc_id)}"
        + (", created)" if group_id in state.created_groups else ")")
        for vpc_id, group_id in sorted(state.isolation_groups.items())
    )
    parts = [
        f"isolated {state.instance_id}: {len(state.interfaces)} network interface(s) "
        f"moved to {groups}"
    ]
    if state.snapshots:
        shots = ", ".join(
            f"{s.snapshot_id} of {s.volume_id}"
            + (f" (encrypted, key {s.kms_key_id or s.volume_kms_key_id})" if s.encrypted else "")
            for s in state.snapshots
        )
        parts.append(f"snapshots {shots}")
    parts.append("termination and stop protection on")
    if state.auto_scaling_group:
        if state.entered_standby:
            parts.append(f"Standby in {state.auto_scaling_group}")
        else:
            parts.append(f"left as it was in {state.auto_scaling_group} (not in service)")
    if state.target_groups:
        parts.append(f"deregistered from {len(state.target_groups)} target group port(s)")
    parts.append(connection_note(state.inbound_attackers))
    return "; ".join(parts)


def _verified_detail(state: IsolationState, interfaces: int) -> str:
    said = [
        f"{interfaces} network interface(s) only in the isolation group, which has no rule",
        "termination and stop protection on",
    ]
    if state.auto_scaling_group:
        said.append(f"in Standby in {state.auto_scaling_group}")
    if state.target_groups:
        said.append(f"out of {len(state.target_groups)} target group port(s)")
    return "; ".join(said)
