"""CloudSniper-MemberRole: the role mitigate and expire assume in a member account.

GuardDuty's delegated administrator sees the findings of every member account, and Cloud
Sniper runs there; a finding's resource lives in its own account. One template for every
member account: the administrator account is a parameter, so a StackSet deploys it as it is,
with no reference to the other stacks and no bootstrap in the member accounts.
"""

from __future__ import annotations

from aws_cdk import CfnCondition, CfnParameter, DefaultStackSynthesizer, Fn, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from cloud_sniper.domain import naming
from stacks import config, permissions

_LOOKUPS_REASON = (
    "ec2:DescribeNetworkAcls accepts no resource but '*': the administrator's functions find "
    "the network ACLs of this account by the subnets a finding names."
)


class MemberRoleStack(Stack):
    """The member role: the network ACL blocks and the response catalogue, in this account."""

    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        # No CDK bootstrap in a member account: a StackSet instance must not check for one.
        kwargs.setdefault(
            "synthesizer", DefaultStackSynthesizer(generate_bootstrap_version_rule=False)
        )
        super().__init__(scope, construct_id, **kwargs)
        administrator = CfnParameter(
            self,
            "AdministratorAccountId",
            type="String",
            allowed_pattern=r"^\d{12}$",
            constraint_description="an AWS account id: 12 digits",
            description="The GuardDuty delegated administrator account, where Cloud Sniper runs",
        ).value_as_string

        # CloudFormation names the functions' roles after their stack and construct ids (with
        # a hash and a random suffix); the WAF writer's, in the same stack, matches neither.
        functions = [
            f"arn:{self.partition}:iam::{administrator}:role/"
            f"{config.MITIGATE_STACK}-{construct_id}Role*"
            for construct_id in config.RESPONDERS
        ]
        self.role = iam.Role(
            self,
            "Responder",
            role_name=naming.MEMBER_ROLE,
            description="Cloud Sniper's mitigate and expire functions act on findings here",
            assumed_by=iam.AccountPrincipal(administrator).with_conditions(
                {"ArnLike": {"aws:PrincipalArn": self._trusted(functions)}}
            ),
        )
        # What the functions do in the finding's account; the WAF IP sets and the tables stay
        # in the administrator account. Both expire and mitigate assume this one role.
        # TODO(member-regions): the resources are this stack's region's and the role name is
        # account-wide, so Cloud Sniper running in two regions needs a role per region.
        permissions.allow_network_acls(
            self, self.role, applies=True, lookups_reason=_LOOKUPS_REASON
        )
        permissions.allow_catalogue(self, self.role, expiring_only=False)

    def _trusted(self, functions: list[str]) -> object:
        """The functions' role patterns, and the people's the StackSet names, when it names any.

        `cloud-sniper rollback` and `release` undo a member account's action with the person's
        own credentials, through this role. The principal stays the administrator account, so a
        pattern naming another account matches nobody.
        """
        people = CfnParameter(
            self,
            "ResponderPrincipalArns",
            type="CommaDelimitedList",
            default="",
            description=(
                "ARN patterns of the administrator account's roles whose people may roll back "
                "and release here (cloud-sniper rollback, release), comma separated; "
                "empty: the functions alone"
            ),
        ).value_as_list
        names_people = CfnCondition(
            self,
            "PeopleMayUndo",
            expression=Fn.condition_not(Fn.condition_equals(Fn.join("", people), "")),
        )
        return Fn.condition_if(
            names_people.logical_id,
            Fn.split(",", Fn.join(",", [*functions, Fn.join(",", people)])),
            functions,
        )
