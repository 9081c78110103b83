"""The permissions of acting on a finding's resources, granted to a role in one policy each.

The mitigate and expire functions hold them in the administrator account, the member role in
every member account: both get them from here, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from services.mitigate.catalogue import catalogue
from stacks.nag import acknowledge

if TYPE_CHECKING:
    from stacks.service_function import ServiceFunction

NACL_REASON = (
    "The network ACL to edit is the one of the affected subnet, known only from the finding; "
    "the NACL rule range setting keeps the function to its own entries."
)
NACL_LOOKUPS_REASON = (
    "ec2:DescribeNetworkAcls accepts no resource but '*': the network ACLs to edit are found "
    "by the subnets the finding names."
)
NACL_ENTRIES_FINDING = (
    "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-acl/*"
)


def allow(
    scope: Construct,
    construct_id: str,
    role: iam.IRole,
    actions: Sequence[str],
    resources: Sequence[str],
) -> iam.Policy:
    """Attach a policy of its own, so a wildcard is acknowledged on it and nowhere else."""
    return iam.Policy(
        scope,
        construct_id,
        statements=[iam.PolicyStatement(actions=list(actions), resources=list(resources))],
        roles=[role],
    )


def allow_network_acls(
    scope: Construct, role: iam.IRole, *, applies: bool, lookups_reason: str = NACL_LOOKUPS_REASON
) -> None:
    """Finding the network ACLs of subnets and deleting deny entries; creating them if `applies`."""
    acknowledge(
        allow(scope, "Lookups", role, ["ec2:DescribeNetworkAcls"], ["*"]),
        "AwsSolutions-IAM5",
        lookups_reason,
        "Resource::*",
    )
    entry_actions = ["ec2:DeleteNetworkAclEntry"]
    if applies:
        entry_actions.insert(0, "ec2:CreateNetworkAclEntry")
    network_acls = Stack.of(scope).format_arn(
        service="ec2",
        resource="network-acl",
        resource_name="*",
        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
    )
    acknowledge(
        allow(scope, "NetworkAclEntries", role, entry_actions, [network_acls]),
        "AwsSolutions-IAM5",
        NACL_REASON,
        NACL_ENTRIES_FINDING,
    )


def allow_catalogue(scope: Construct, role: iam.IRole, *, expiring_only: bool) -> None:
    """Grant each action of the response catalogue the permissions it declares, and no more.

    Resources are those of the stack's own partition, region and account. With
    `expiring_only`, only the actions that expire (all the expiry run undoes).
    """
    stack = Stack.of(scope)
    for kind, action in sorted(catalogue().items()):
        if expiring_only and not action.expires:
            continue
        for number, permission in enumerate(action.permissions):
            resources = [
                resource.format(
                    partition=stack.partition, region=stack.region, account=stack.account
                )
                for resource in permission.resources
            ]
            policy = allow(
                scope, f"{_construct_name(kind.value)}{number}", role, permission.actions, resources
            )
            wildcards = [r for r in permission.resources if "*" in r]
            if wildcards:
                acknowledge(
                    policy,
                    "AwsSolutions-IAM5",
                    permission.reason,
                    *(f"Resource::{_nag_form(r)}" for r in wildcards),
                )


def _construct_name(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_"))


def _nag_form(resource: str) -> str:
    """A resource pattern as cdk-nag writes it in a finding: pseudo parameters by name."""
    return (
        resource.replace("{partition}", "<AWS::Partition>")
        .replace("{region}", "<AWS::Region>")
        .replace("{account}", "<AWS::AccountId>")
    )


def secret_arn(scope: Construct, secret_name: str) -> str:
    """The ARN of this account's secret of that name, whatever suffix Secrets Manager gave it."""
    # Secrets Manager ends a secret's ARN with a hyphen and six random characters.
    return Stack.of(scope).format_arn(
        service="secretsmanager",
        resource="secret",
        resource_name=f"{secret_name}-??????",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


def allow_thehive_key(function: ServiceFunction, secret_name: str) -> None:
    """Let a ServiceFunction read TheHive's API key from its secret, and nothing else."""
    # TODO(thehive): a secret encrypted with a customer managed KMS key also needs kms:Decrypt
    # on that key, which is not granted: keep the key in aws/secretsmanager.
    secret = secret_arn(function, secret_name)
    function.allow("ReadTheHiveKey", ["secretsmanager:GetSecretValue"], [secret])
