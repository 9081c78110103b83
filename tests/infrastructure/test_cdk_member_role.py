"""The member role stack: one template for every member account, trusting whom it names."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase

import boto3
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.local import deploy
from services.mitigate.catalogue import catalogue
from stacks.config import FUNCTIONS, MEMBER_ROLE_STACK, MITIGATE_STACK

ADMIN = "<AdministratorAccountId>"
ADMIN_ACCOUNT = "111122223333"
ADMIN_ROLES = f"arn:aws:iam::{ADMIN_ACCOUNT}:role/"
SSO_RESPONDER = "aws-reserved/sso.amazonaws.com/AWSReservedSSO_Responder_0123456789abcdef"
PARTITION = "<AWS::Partition>"
ROLE_PATTERNS = [
    f"arn:{PARTITION}:iam::{ADMIN}:role/{MITIGATE_STACK}-MitigateRole*",
    f"arn:{PARTITION}:iam::{ADMIN}:role/{MITIGATE_STACK}-ExpireRole*",
]


def member_role(assembly) -> tuple[str, dict]:
    (found,) = assembly.resources(MEMBER_ROLE_STACK, "AWS::IAM::Role").items()
    return found


def role_statements(assembly) -> set[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every statement of the policies attached to the member role, as (actions, resources)."""
    role_id, _ = member_role(assembly)
    found = set()
    for policy in assembly.resources(MEMBER_ROLE_STACK, "AWS::IAM::Policy").values():
        assert policy["Properties"]["Roles"] == [{"Ref": role_id}]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow" and "Condition" not in statement
            actions = statement["Action"]
            resources = assembly.render(MEMBER_ROLE_STACK, statement["Resource"])
            found.add(
                (
                    tuple(sorted(actions if isinstance(actions, list) else [actions])),
                    tuple(sorted(resources if isinstance(resources, list) else [resources])),
                )
            )
    return found


def test_the_administrator_account_and_the_people_are_its_parameters_and_nothing_else(assembly):
    template = assembly.templates[MEMBER_ROLE_STACK]

    # A StackSet deploys the template as it is: no CDK bootstrap check in the member accounts
    parameters = template["Parameters"]
    assert parameters["AdministratorAccountId"] == {
        "Type": "String",
        "AllowedPattern": r"^\d{12}$",
        "ConstraintDescription": "an AWS account id: 12 digits",
        "Description": "The GuardDuty delegated administrator account, where Cloud Sniper runs",
    }
    assert parameters["ResponderPrincipalArns"]["Type"] == "CommaDelimitedList"
    assert parameters["ResponderPrincipalArns"]["Default"] == ""
    assert sorted(parameters) == ["AdministratorAccountId", "ResponderPrincipalArns"]
    assert "Rules" not in template
    assert "Outputs" not in template
    assert "Fn::ImportValue" not in json.dumps(template)


def deployed_trust(assembly, **parameters: str) -> dict:
    """The member role's trust policy, as CloudFormation (moto's) makes it from the parameters."""
    given = {"AdministratorAccountId": ADMIN_ACCOUNT, **parameters}
    with mock_aws():
        boto3.client("cloudformation", region_name="us-east-1").create_stack(
            StackName="cloud-sniper-member-role",
            TemplateBody=json.dumps(assembly.templates[MEMBER_ROLE_STACK]),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        role = boto3.client("iam", region_name="us-east-1").get_role(RoleName=naming.MEMBER_ROLE)
    return role["Role"]["AssumeRolePolicyDocument"]


def trusts(trust: dict, principal_arn: str) -> bool:
    """Whether the trust lets this principal assume the role, as IAM reads these statements."""
    (statement,) = trust["Statement"]
    account = principal_arn.split(":")[4]
    patterns = statement["Condition"]["ArnLike"]["aws:PrincipalArn"]
    return (
        statement["Effect"] == "Allow"
        and statement["Action"] == "sts:AssumeRole"
        and statement["Principal"] == {"AWS": f"arn:aws:iam::{account}:root"}
        and account == ADMIN_ACCOUNT
        and any(fnmatchcase(principal_arn, pattern) for pattern in patterns)
    )


def test_the_role_has_its_fixed_name_and_trusts_only_mitigate_and_expire(assembly):
    _, role = member_role(assembly)
    properties = role["Properties"]

    assert properties["RoleName"] == naming.MEMBER_ROLE
    assert "ManagedPolicyArns" not in properties
    assert "Policies" not in properties

    # Given no people named, when CloudFormation makes the role, then the functions alone
    trust = deployed_trust(assembly)
    assert trust["Statement"][0]["Condition"]["ArnLike"]["aws:PrincipalArn"] == [
        pattern.replace(PARTITION, "aws").replace(ADMIN, ADMIN_ACCOUNT) for pattern in ROLE_PATTERNS
    ]
    assert trusts(trust, f"{ADMIN_ROLES}CloudSniper-Mitigate-MitigateRole1A2B-3C4D")
    assert not trusts(trust, f"{ADMIN_ROLES}{SSO_RESPONDER}")
    assert not trusts(trust, f"{ADMIN_ROLES}Administrator")


def test_the_people_the_stack_set_names_may_assume_it_too_and_only_from_the_administrator(
    assembly,
):
    # Given the people's roles named: a pattern for an IAM Identity Center role, and one role
    people = f"{ADMIN_ROLES}aws-reserved/sso.amazonaws.com/AWSReservedSSO_Responder_*"
    other_account = "arn:aws:iam::444455556666:role/Oncall"
    trust = deployed_trust(
        assembly, ResponderPrincipalArns=f"{people},{ADMIN_ROLES}Oncall,{other_account}"
    )

    # Then those people may undo here, and the functions still may
    assert trusts(trust, f"{ADMIN_ROLES}{SSO_RESPONDER}")
    assert trusts(trust, f"{ADMIN_ROLES}Oncall")
    assert trusts(trust, f"{ADMIN_ROLES}CloudSniper-Mitigate-ExpireRole1A2B-3C4D")
    # And nobody else: not another role of the administrator, not a role of another account
    assert not trusts(trust, f"{ADMIN_ROLES}Administrator")
    assert not trusts(trust, other_account)


def test_the_trusted_patterns_match_the_roles_cloudformation_names_and_no_other(assembly):
    # Given the names CloudFormation gives the roles of the functions of the mitigate stack:
    # "<stack>-<logical id>-<random suffix>"
    names = {}
    for role_name, function_name in naming.FUNCTIONS.items():
        stack, properties = assembly.function(function_name)
        if stack == MITIGATE_STACK:
            logical_id = properties["Role"]["Fn::GetAtt"][0]
            names[role_name] = (
                f"arn:{PARTITION}:iam::{ADMIN}:role/{stack}-{logical_id}-1A2B3C4D5E6F"
            )

    # Then mitigate and expire are trusted, and the WAF writer is not
    def trusted(arn: str) -> bool:
        return any(fnmatchcase(arn, pattern) for pattern in ROLE_PATTERNS)

    assert sorted(names) == sorted(
        spec.role for spec in FUNCTIONS.values() if spec.service == "mitigate"
    )
    assert {role: trusted(arn) for role, arn in names.items()} == {
        "mitigate": True,
        "expire": True,
        "waf_writer": False,
    }
    # And the generated names fit IAM's 64 characters without CloudFormation shortening them
    assert all(len(arn.split("/")[-1]) <= 64 for arn in names.values())


def test_the_role_may_do_what_the_catalogue_declares_and_the_network_acl_blocks_need(assembly):
    here = f"{PARTITION}:ec2:<AWS::Region>:<AWS::AccountId>"
    expected = {
        (("ec2:DescribeNetworkAcls",), ("*",)),
        (
            ("ec2:CreateNetworkAclEntry", "ec2:DeleteNetworkAclEntry"),
            (f"arn:{here}:network-acl/*",),
        ),
    }
    for action in catalogue().values():
        for permission in action.permissions:
            resources = tuple(
                sorted(
                    resource.format(
                        partition=PARTITION, region="<AWS::Region>", account="<AWS::AccountId>"
                    )
                    for resource in permission.resources
                )
            )
            expected.add((tuple(sorted(permission.actions)), resources))

    # No table, queue or WAF IP set: those stay in the administrator account
    assert role_statements(assembly) == expected


def test_the_local_runtime_leaves_the_member_role_stack_out_on_purpose():
    # The emulated account is the administrator's alone
    assert {MEMBER_ROLE_STACK} == deploy.NOT_DEPLOYED_LOCALLY
