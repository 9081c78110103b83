"""Findings of a member account are acted on there, through its member role; the rest stays ours.

moto keeps one emulated account per access key: the administrator's is the default one, and the
member account's resources are created with credentials of a role assumed into it, as the
mitigate service's own sessions in it are. moto does not check a role's trust policy, so a
missing member role is the AccessDenied that AWS answers, injected on AssumeRole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto import mock_aws

from cloud_sniper import responses
from cloud_sniper.domain import naming
from cloud_sniper.domain.models import ActionKind, ActionStatus, Decision, Finding, PlannedAction
from cloud_sniper.local.account import IMAGE_ID
from services.mitigate.actions import Ports, apply_actions, expire_blocks
from services.mitigate.adapters import Ec2NetworkAcls, StsMemberAccounts, build_ports
from services.mitigate.catalogue import RecordStatus
from services.mitigate.settings import Settings
from tests.integration import waf_queue
from tests.project_tables import create_table

ADMIN = "123456789012"  # moto's default account: the administrator's, where Cloud Sniper runs
MEMBER = "210987654321"
REGION = "us-east-1"
NOW = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
ATTACKER = "198.51.100.7"
INCIDENT = "inc-0123456789abcdef"
MEMBER_ROLE_ARN = f"arn:aws:iam::{MEMBER}:role/{naming.MEMBER_ROLE}"

ENVIRONMENT = {
    "BLOCKS_TABLE": naming.BLOCKS_TABLE,
    "INDICATORS_TABLE": naming.INDICATORS_TABLE,
    "ACTIONS_TABLE": naming.ACTIONS_TABLE,
    "WAF_SCOPE": "REGIONAL",
    "WAF_IPV4_SET_NAME": naming.WAF_IPV4_SET,
    "WAF_IPV6_SET_NAME": naming.WAF_IPV6_SET,
    "NACL_RULE_RANGE": "50-99",
    "DEFAULT_BLOCK_TTL_SECONDS": "86400",
    "WAF_CHANGES_QUEUE_URL": waf_queue.QUEUE_URL,
}


@dataclass
class Estate:
    """What one account holds: a subnet with its network ACL and an instance with its group."""

    ec2: Any
    subnet_id: str
    nacl_id: str
    instance_id: str
    group_id: str

    def denied(self) -> list[str]:
        """The CIDRs denied inbound by our rule range in the subnet's network ACL."""
        acl = self.ec2.describe_network_acls(NetworkAclIds=[self.nacl_id])["NetworkAcls"][0]
        return [
            entry.get("CidrBlock")
            for entry in acl["Entries"]
            if not entry["Egress"] and entry["RuleAction"] == "deny" and entry["RuleNumber"] < 100
        ]

    def groups(self) -> list[str]:
        described = self.ec2.describe_instances(InstanceIds=[self.instance_id])
        interface = described["Reservations"][0]["Instances"][0]["NetworkInterfaces"][0]
        return [group["GroupId"] for group in interface["Groups"]]


@dataclass
class Accounts:
    admin: Estate
    member: Estate
    session: Any  # the administrator's session the ports are built on
    assumed: list[dict[str, Any]]  # the AssumeRole calls the ports made

    def ports(self) -> Ports:
        return build_ports(Settings.model_validate(ENVIRONMENT), self.session)

    def deny_assume_role(self) -> None:
        """Answer AssumeRole as AWS does when the role is missing or does not trust us."""

        def access_denied(**_: Any) -> Any:
            parsed = {
                "Error": {
                    "Code": "AccessDenied",
                    "Message": f"not authorized to perform: sts:AssumeRole on {MEMBER_ROLE_ARN}",
                },
                "ResponseMetadata": {"HTTPStatusCode": 403},
            }
            return AWSResponse("https://sts.amazonaws.com/", 403, {}, None), parsed

        self.session.events.register("before-call.sts.AssumeRole", access_denied)


def estate(session: Any, cidr: str) -> Estate:
    ec2 = session.client("ec2", region_name=REGION)
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr.replace("0.0/16", "1.0/24"))[
        "Subnet"
    ]["SubnetId"]
    (acl,) = ec2.describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}]
    )["NetworkAcls"]
    group_id = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc_id)[
        "GroupId"
    ]
    image_id = IMAGE_ID
    instance_id = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet_id, "Groups": [group_id]}],
    )["Instances"][0]["InstanceId"]
    return Estate(ec2, subnet_id, acl["NetworkAclId"], instance_id, group_id)


def member_session() -> Any:
    """Credentials of the member account: moto puts what they create in that account."""
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{MEMBER}:role/OrganizationAccountAccessRole",
        RoleSessionName="setup",
    )["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )


@pytest.fixture
def accounts():
    with mock_aws():
        admin_session = boto3.session.Session(region_name=REGION)
        dynamodb = admin_session.resource("dynamodb")
        for table in (naming.BLOCKS_TABLE, naming.INDICATORS_TABLE, naming.ACTIONS_TABLE):
            create_table(dynamodb, table)
        waf_queue.create_queue(admin_session.client("sqs"))

        member = member_session()
        # The member role as CloudSniper-MemberRole deploys it (moto does not enforce the trust)
        member.client("iam").create_role(
            RoleName=naming.MEMBER_ROLE,
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Principal": {"AWS": f"arn:aws:iam::{ADMIN}:root"},
                        }
                    ],
                }
            ),
        )

        assumed: list[dict[str, Any]] = []
        admin_session.events.register(
            "before-parameter-build.sts.AssumeRole",
            lambda params, **_: assumed.append(dict(params)),
        )
        yield Accounts(
            admin=estate(admin_session, "10.30.0.0/16"),
            member=estate(member, "10.30.0.0/16"),
            session=admin_session,
            assumed=assumed,
        )


def finding_of(event, account_id: str, place: Estate) -> Finding:
    document = event("mitigate-request.json")["finding"]
    document["account_id"] = account_id
    document["resource"]["subnet_ids"] = [place.subnet_id]
    document["resource"]["instance_id"] = place.instance_id
    return Finding.model_validate(document)


def decision(*actions: tuple[ActionKind, str]) -> Decision:
    planned = [
        PlannedAction(id=f"{kind.value}:{target}", kind=kind, target=target)
        for kind, target in actions
    ]
    return Decision(mode="auto", reason="attacker", actions=planned)


BLOCKS = ((ActionKind.WAF_BLOCK, ATTACKER), (ActionKind.NACL_BLOCK, ATTACKER))


def test_a_member_finding_is_blocked_in_the_member_network_acl_and_recorded_so(accounts, event):
    # Given a finding of the member account about a subnet there, the same CIDRs as ours,
    # which our own credentials do not see
    ports = accounts.ports()
    with pytest.raises(ClientError, match="InvalidSubnetID.NotFound"):
        accounts.admin.ec2.describe_subnets(SubnetIds=[accounts.member.subnet_id])
    finding = finding_of(event, MEMBER, accounts.member)

    # When its WAF and network ACL blocks are applied
    results = apply_actions(finding, decision(*BLOCKS), INCIDENT, False, NOW, ports)

    # Then the deny is written in the member's network ACL, not in ours
    assert [(r.kind, r.status) for r in results] == [
        (ActionKind.WAF_BLOCK, ActionStatus.QUEUED),
        (ActionKind.NACL_BLOCK, ActionStatus.APPLIED),
    ]
    assert accounts.member.denied() == [f"{ATTACKER}/32"]
    assert accounts.admin.denied() == []

    # And the network ACL block records the member account; the WAF block, in our IP set, none
    blocks = {block.kind: block for block in ports.blocks.all()}
    assert blocks[ActionKind.NACL_BLOCK].account_id == MEMBER
    assert blocks[ActionKind.WAF_BLOCK].account_id is None

    # And the member role was assumed once, with a session named after the incident
    assert accounts.assumed == [
        {"RoleArn": MEMBER_ROLE_ARN, "RoleSessionName": f"cloud-sniper-{INCIDENT}"}
    ]


def test_the_expiry_lifts_a_member_block_in_the_member_account(accounts, event):
    # Given a network ACL block applied in the member account
    ports = accounts.ports()
    finding = finding_of(event, MEMBER, accounts.member)
    apply_actions(finding, decision((ActionKind.NACL_BLOCK, ATTACKER)), INCIDENT, False, NOW, ports)

    # When the expiry runs after it is due, in a new cold start
    report = expire_blocks(NOW + timedelta(days=2), accounts.ports())

    # Then the member's entry is gone and the block is removed
    assert report.failed == {}
    assert len(report.expired) == 1
    assert accounts.member.denied() == []
    (block,) = ports.blocks.all()
    assert block.status.value == "removed" and block.removed_reason == "expired"


def test_a_member_instance_is_isolated_there_and_a_rollback_releases_it_there(accounts, event):
    # Given a finding of the member account about an instance there
    ports = accounts.ports()
    member, admin = accounts.member, accounts.admin
    finding = finding_of(event, MEMBER, member)
    actions = decision(
        (ActionKind.ISOLATE_INSTANCE, member.instance_id), (ActionKind.NACL_BLOCK, ATTACKER)
    )

    # When it is isolated and its attacker blocked
    results = apply_actions(finding, actions, INCIDENT, False, NOW, ports)

    # Then the member instance is in an isolation group of the member account; ours untouched
    assert [r.status for r in results] == [ActionStatus.APPLIED, ActionStatus.APPLIED], results
    (isolation_group,) = member.groups()
    assert isolation_group != member.group_id
    assert member.ec2.describe_security_groups(GroupIds=[isolation_group])["SecurityGroups"]
    assert admin.groups() == [admin.group_id]

    # And the record says the member account
    (record,) = ports.records.all()
    assert (record.kind, record.account_id) == (ActionKind.ISOLATE_INSTANCE, MEMBER)

    # When the incident is rolled back from the command line's ports
    rollback = responses.rollback(
        INCIDENT, accounts.ports(), "analyst", "false positive", NOW, recorded=True
    )

    # Then both are undone in the member account
    assert rollback.failed == {}
    assert {undone.kind for undone in rollback.undone} == {
        ActionKind.ISOLATE_INSTANCE,
        ActionKind.NACL_BLOCK,
    }
    assert member.groups() == [member.group_id]
    assert member.denied() == []
    (record,) = ports.records.all()
    assert record.status is RecordStatus.UNDONE


def test_a_person_the_member_role_does_not_trust_is_told_which_parameter_names_them(
    accounts, event
):
    # Given an isolation applied in the member account
    ports = accounts.ports()
    member = accounts.member
    finding = finding_of(event, MEMBER, member)
    actions = decision((ActionKind.ISOLATE_INSTANCE, member.instance_id))
    apply_actions(finding, actions, INCIDENT, False, NOW, ports)

    # When a person whose role the member role does not trust rolls the incident back
    accounts.deny_assume_role()
    rollback = responses.rollback(
        INCIDENT, accounts.ports(), "analyst", "false positive", NOW, recorded=True
    )

    # Then nothing is undone, and the failure names the caller and the member stack's parameter
    assert rollback.undone == []
    (reason,) = rollback.failed.values()
    caller = boto3.client("sts", region_name=REGION).get_caller_identity()["Arn"]
    assert f"does not trust {caller}" in reason
    assert f"AdministratorAccountId {ADMIN}" in reason
    assert "ResponderPrincipalArns" in reason
    assert member.groups() != [member.group_id]
    (record,) = ports.records.all()
    assert record.status is RecordStatus.ACTIVE


def test_a_finding_of_our_own_account_assumes_no_role(accounts, event):
    # Given a finding of the administrator account itself
    ports = accounts.ports()
    finding = finding_of(event, ADMIN, accounts.admin)

    # When its network ACL block is applied
    results = apply_actions(
        finding, decision((ActionKind.NACL_BLOCK, ATTACKER)), INCIDENT, False, NOW, ports
    )

    # Then it is written here, with our own role, and recorded with no account
    assert [r.status for r in results] == [ActionStatus.APPLIED]
    assert accounts.admin.denied() == [f"{ATTACKER}/32"]
    assert accounts.member.denied() == []
    assert accounts.assumed == []
    (block,) = ports.blocks.all()
    assert block.account_id is None


def test_a_missing_member_role_fails_the_member_actions_and_says_why(accounts, event):
    # Given a member account whose member role cannot be assumed
    accounts.deny_assume_role()
    ports = accounts.ports()
    member = accounts.member
    finding = finding_of(event, MEMBER, member)
    actions = decision(
        (ActionKind.WAF_BLOCK, ATTACKER),
        (ActionKind.NACL_BLOCK, ATTACKER),
        (ActionKind.ISOLATE_INSTANCE, member.instance_id),
    )

    # When the decision is applied
    results = apply_actions(finding, actions, INCIDENT, False, NOW, ports)

    # Then the WAF block, ours, is queued; the actions in the member account fail and say why
    assert [(r.kind, r.status) for r in results] == [
        (ActionKind.WAF_BLOCK, ActionStatus.QUEUED),
        (ActionKind.NACL_BLOCK, ActionStatus.FAILED),
        (ActionKind.ISOLATE_INSTANCE, ActionStatus.FAILED),
    ]
    for result in results[1:]:
        assert f"cannot assume {MEMBER_ROLE_ARN}" in result.detail
        assert f"member role is missing in account {MEMBER} or does not trust" in result.detail
    assert member.denied() == []
    assert member.groups() == [member.group_id]
    assert ports.records.all() == []


def test_the_member_credentials_are_kept_until_five_minutes_before_they_expire(accounts):
    # Given the member accounts adapter with a clock we move
    clock = [NOW]

    def adapters(session: Any) -> tuple[Any, Any]:
        return Ec2NetworkAcls(session.client("ec2")), session.client

    members = StsMemberAccounts(accounts.session, adapters, clock=lambda: clock[0])

    # When it is asked for the member's network ACLs twice, then past its renewal time
    first = members.network_acls(MEMBER, "cloud-sniper-inc-1")
    again = members.network_acls(MEMBER, "cloud-sniper-inc-2")
    # moto's credentials last an hour from when they are issued, on the real clock
    clock[0] = datetime.now(UTC) + timedelta(minutes=56)
    renewed = members.network_acls(MEMBER, "cloud-sniper-inc-3")

    # Then the role was assumed once for the first two and anew for the third
    assert first is again and renewed is not first
    assert [call["RoleSessionName"] for call in accounts.assumed] == [
        "cloud-sniper-inc-1",
        "cloud-sniper-inc-3",
    ]
    # And the renewed session still acts in the member account
    member = accounts.member
    assert renewed.for_subnets([member.subnet_id]) == {member.subnet_id: member.nacl_id}
    assert members.own_account() == ADMIN


def test_a_session_name_is_trimmed_to_the_64_characters_sts_takes():
    assert naming.member_session_name("inc-0123456789abcdef") == "cloud-sniper-inc-0123456789abcdef"
    assert len(naming.member_session_name("x" * 100)) == 64
