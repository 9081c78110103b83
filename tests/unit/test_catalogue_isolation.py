"""Planning an instance's isolation: what it remembers, what it would change, what it says."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from cloud_sniper.domain.models import ActionKind, Finding, PlannedAction
from cloud_sniper.domain.normalize import normalize
from services.mitigate.adapters.isolation import (
    InstanceView,
    NetworkInterface,
    Protection,
    Registration,
    ScalingMembership,
)
from services.mitigate.catalogue import ActionFailedError, ActionRun, catalogue
from services.mitigate.catalogue.isolation import (
    GROUPS_PER_TAG,
    MEMORY,
    TAG_INCIDENT,
    TAG_ISOLATED_AT,
    Memory,
    before_isolation,
    group_name,
    instance_id_of,
    instance_tags,
    memory_tags,
    recall,
)

NOW = datetime(2024, 5, 1, 11, 0, 7, tzinfo=UTC)
EARLIER = datetime(2024, 5, 1, 10, 59, tzinfo=UTC)
INSTANCE = "i-0a1b2c3d4e5f60718"
INCIDENT = "inc-0123456789abcdef"
VPC = "vpc-0f1e2d3c4b5a69788"
ISOLATION = "sg-0000000000000iso0"
TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/73e2d6bc24d8a067"
OTHER_TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/api/0123456789abcdef"
ACTION = catalogue()[ActionKind.ISOLATE_INSTANCE]
OFF = Protection(termination=False, stop=False)


def instance(*enis: tuple[str, list[str]], tags: dict[str, str] | None = None) -> InstanceView:
    return InstanceView(
        id=INSTANCE,
        state="running",
        network_interfaces=[NetworkInterface(id=e, vpc_id=VPC, groups=g) for e, g in enis],
        volume_ids=["vol-0aaa0000000000001"],
        tags=tags or {},
    )


def run_of(finding: Finding, target: str = INSTANCE) -> ActionRun:
    def no_clients(service_name: str):
        raise AssertionError(f"planning must not make a {service_name} client")

    return ActionRun(
        finding=finding,
        action=PlannedAction(
            id=f"isolate_instance:{target}", kind=ActionKind.ISOLATE_INSTANCE, target=target
        ),
        incident_id=INCIDENT,
        now=NOW,
        expires_at=None,
        clients=no_clients,
    )


def test_what_an_instance_was_is_kept_in_tags_and_read_back():
    # Given what an instance was: groups on two interfaces, protection, Standby, two targets
    memory = Memory(
        groups={"eni-0aaa": ["sg-0web", "sg-0ssh"], "eni-0bbb": ["sg-0web"]},
        protection=Protection(termination=True, stop=False),
        standby_group="web-asg",
        targets=[
            Registration(target_group_arn=OTHER_TG, port=8080),
            Registration(target_group_arn=TG, port=80),
        ],
    )

    # When it is written as tags and read back
    tags = memory_tags(memory)
    read = recall(tags | {"Name": "web-1", TAG_INCIDENT: INCIDENT})

    # Then it is the same, every tag ours by its prefix and within EC2's tag limits
    assert read == memory
    assert all(key.startswith(MEMORY) for key in tags)
    assert all(len(key) <= 128 and len(value) <= 256 for key, value in tags.items())
    assert all(re.fullmatch(r"[\w .:/=+\-@]*", key + value) for key, value in tags.items())
    assert tags[f"{MEMORY}protection"] == "termination=true stop=false"


def test_an_interface_with_many_groups_is_remembered_over_several_tags_in_order():
    # Given an interface in the most security groups EC2 allows, with long ids
    groups = [f"sg-{n:017x}" for n in range(16)]

    # When it is remembered
    tags = memory_tags(Memory(groups={"eni-0aaa": groups}))

    # Then two tags hold the groups, each within a tag value, and read back in order
    assert sorted(tags) == [f"{MEMORY}groups:eni-0aaa", f"{MEMORY}groups:eni-0aaa:2"]
    assert len(tags[f"{MEMORY}groups:eni-0aaa"].split()) == GROUPS_PER_TAG
    assert all(len(value) <= 256 for value in tags.values())
    assert recall(tags).groups == {"eni-0aaa": groups}


def test_before_isolation_is_what_is_seen_when_nothing_is_remembered():
    # Given an instance never isolated, in service in its group and behind a target group
    seen = instance(("eni-0aaa", ["sg-0web", "sg-0ssh"]))
    membership = ScalingMembership(group="web-asg", lifecycle_state="InService")
    registered = [Registration(target_group_arn=TG, port=80)]

    # When what it was is worked out
    before = before_isolation(seen, OFF, membership, registered)

    # Then it is what is seen, and it will be put in Standby
    assert before.interfaces[0].groups == ["sg-0web", "sg-0ssh"]
    assert before.protection == OFF
    assert (before.auto_scaling_group, before.enter_standby) == ("web-asg", True)
    assert before.targets == registered


def test_before_isolation_is_what_a_failed_attempt_remembered():
    # Given an instance a failed attempt already half isolated: interfaces moved, protection
    # on, in Standby, out of one of its two target groups; its memory tags say what it was
    remembered = Memory(
        groups={"eni-0aaa": ["sg-0web", "sg-0ssh"]},
        protection=OFF,
        standby_group="web-asg",
        targets=[
            Registration(target_group_arn=TG, port=80),
            Registration(target_group_arn=OTHER_TG, port=8080),
        ],
    )
    seen = instance(("eni-0aaa", [ISOLATION]), tags=memory_tags(remembered))
    standby = ScalingMembership(group="web-asg", lifecycle_state="Standby")
    still = [Registration(target_group_arn=OTHER_TG, port=8080)]

    # When what it was is worked out on the retry
    before = before_isolation(seen, Protection(termination=True, stop=True), standby, still)

    # Then the memory wins over the isolated state seen
    assert before.interfaces[0].groups == ["sg-0web", "sg-0ssh"]
    assert before.protection == OFF
    assert (before.auto_scaling_group, before.enter_standby) == ("web-asg", True)
    assert sorted(t.port for t in before.targets) == [80, 8080]


@pytest.mark.parametrize("state", ["Standby", "Pending", "Terminating:Wait"])
def test_an_instance_not_in_service_is_left_where_it_is_in_its_group(state):
    # Given an instance of an Auto Scaling group that is not in service
    membership = ScalingMembership(group="web-asg", lifecycle_state=state)

    # When what it was is worked out
    before = before_isolation(instance(("eni-0aaa", ["sg-0web"])), OFF, membership, [])

    # Then isolation will not move it to Standby, nor its release out of it
    assert (before.auto_scaling_group, before.enter_standby) == ("web-asg", False)
    assert f"{MEMORY}standby" not in memory_tags(before.memory())


def test_the_instance_is_tagged_with_the_incident_and_a_retry_keeps_the_first_time():
    # Given an instance, and the same instance tagged by an earlier attempt for this incident
    fresh = instance(("eni-0aaa", ["sg-0web"]))
    before = before_isolation(fresh, OFF, None, [])
    retried = instance(
        ("eni-0aaa", [ISOLATION]),
        tags={TAG_INCIDENT: INCIDENT, TAG_ISOLATED_AT: EARLIER.isoformat()},
    )

    # When the tags isolation puts on each are worked out
    first = instance_tags(fresh, before, INCIDENT, NOW)
    again = instance_tags(retried, before, INCIDENT, NOW)

    # Then both name the incident, and the retry keeps the time isolation began
    assert first[TAG_INCIDENT] == again[TAG_INCIDENT] == INCIDENT
    assert first[TAG_ISOLATED_AT] == NOW.isoformat()
    assert again[TAG_ISOLATED_AT] == EARLIER.isoformat()
    assert first[f"{MEMORY}groups:eni-0aaa"] == "sg-0web"


def test_the_plan_says_what_isolation_does_and_that_the_attacker_needs_a_network_acl(event):
    # Given an inbound SSH brute force on the instance, and an outbound C2 finding
    inbound = normalize(event("guardduty-ssh-brute-force.json"))
    outbound = normalize(event("guardduty-cc-activity.json"))

    # When each isolation is planned
    inbound_plan = ACTION.plan(run_of(inbound))
    outbound_plan = ACTION.plan(run_of(outbound))

    # Then the plan names the instance and what is done to it, reading nothing
    assert inbound_plan.startswith(f"isolate instance {INSTANCE} for {INCIDENT}")
    assert "snapshot its volumes" in inbound_plan and "Standby" in inbound_plan
    # And says whether the finding names an inbound attacker the security group cannot cut
    assert "inbound attacker 198.51.100.7" in inbound_plan
    assert "network ACLs beside the isolation (nacl_block)" in inbound_plan
    assert "names no inbound attacker" in outbound_plan


def test_a_target_that_is_no_instance_id_is_refused_by_name(event):
    # Given a target that is not an instance id
    finding = normalize(event("guardduty-ssh-brute-force.json"))

    # When it is planned, or checked before applying
    plan = ACTION.plan(run_of(finding, target="sg-0123456789abcdef0"))

    # Then both name it and why
    assert "'sg-0123456789abcdef0' is not an EC2 instance id" in plan
    with pytest.raises(ActionFailedError, match="'i-xyz' is not an EC2 instance id"):
        instance_id_of("i-xyz")
    assert instance_id_of("i-0a1b2c3d") == "i-0a1b2c3d"


def test_the_action_never_expires_and_names_its_group_by_vpc():
    # Given the isolation action
    # Then it never expires, and each VPC has its own isolation group
    assert ACTION.expires is False
    assert group_name(VPC) == f"cloud-sniper-isolation-{VPC}"


def test_every_permission_is_scoped_to_the_account_or_says_why_not():
    # Given the isolation action's permissions
    permissions = ACTION.permissions

    # Then each wildcard has its reason, and every ARN is of this partition, region, account
    for permission in permissions:
        assert permission.reason, permission.actions
        for resource in permission.resources:
            assert resource == "*" or resource.startswith("arn:{partition}:"), resource
            assert resource == "*" or ":{region}:" in resource, resource
            # Snapshot ARNs are the one kind that names no account.
            assert resource == "*" or "{account}" in resource or "::snapshot/" in resource
    # And only Describe calls are granted on every resource
    anywhere = [a for p in permissions if p.resources == ["*"] for a in p.actions]
    assert all(action.split(":")[1].startswith("Describe") for action in anywhere)
