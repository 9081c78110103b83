"""CloudSniper-Decide: the policy decision, and the request for a person's approval."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from cloud_sniper.domain import naming
from cloud_sniper.domain.policy import PolicyError, load_policy
from cloud_sniper.domain.policy_parameter import (
    ADVANCED_TIER,
    parameter_tier,
    parameter_value,
)
from stacks import permissions, references
from stacks.config import FUNCTIONS, ConfigError, Settings
from stacks.nag import acknowledge
from stacks.service_function import ServiceCode, ServiceFunction

_DEPENDENTS_REASON = (
    "The Auto Scaling and load balancer Describe* calls accept no resource but '*'; decide "
    "counts what depends on an instance before it isolates it automatically."
)


class DecideStack(Stack):
    """The decide step, and the approval request with the topic approvers subscribe to."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # The bundle carries the policy compiled to JSON: the function needs no YAML parser, and
        # a handler run outside AWS, without the parameter, still finds a policy.
        code = ServiceCode(self, policy=settings.policy)
        self.policy = policy_parameter(self, settings.policy)

        self.decide = ServiceFunction(
            self,
            "Decide",
            spec=FUNCTIONS["decide"],
            code=code,
            settings=settings,
            environment={
                "POLICY_PARAMETER": naming.POLICY_PARAMETER,
                "BUDGET_TABLE": naming.BUDGET_TABLE,
            },
        )
        self.decide.allow("ReadPolicy", ["ssm:GetParameter"], [self.policy.parameter_arn])
        estate = self.decide.allow(
            "DescribeEstateAddresses",
            ["ec2:DescribeAddresses", "ec2:DescribeNatGateways"],
            ["*"],
        )
        acknowledge(
            estate,
            "AwsSolutions-IAM5",
            "EC2 Describe* calls accept no resource but '*'; decide reads the estate's Elastic "
            "IPs and NAT gateway addresses so that it never blocks them.",
            "Resource::*",
        )
        self._allow_safeguards()

        self.approval_topic = self._topic(
            "Approvals", naming.APPROVAL_TOPIC, "Cloud Sniper approvals"
        )
        # Where an approval nobody answered in time is asked once more, when the policy says
        # escalate: subscribe whoever answers when the first approvers do not.
        self.escalation_topic = self._topic(
            "ApprovalEscalations",
            naming.APPROVAL_ESCALATION_TOPIC,
            "Cloud Sniper approvals, escalated",
        )
        self.request_approval = ServiceFunction(
            self,
            "RequestApproval",
            spec=FUNCTIONS["request_approval"],
            code=code,
            settings=settings,
            environment=request_approval_environment(
                settings, self.approval_topic.topic_arn, self.escalation_topic.topic_arn
            ),
        )
        approvals = references.table(self, naming.APPROVALS_TABLE)
        approvals.grant(self.request_approval.role, "dynamodb:PutItem", "dynamodb:UpdateItem")
        # Not grant_publish: it adds kms:GenerateDataKey* on every key, and the AWS managed
        # key's own policy already lets the account's principals use it through SNS.
        self.request_approval.allow(
            "PublishApprovals",
            ["sns:Publish"],
            [self.approval_topic.topic_arn, self.escalation_topic.topic_arn],
        )
        if settings.slack_webhook_secret:
            slack_webhook_policy(
                self.request_approval, self.request_approval.role, settings.slack_webhook_secret
            )
        if settings.thehive_url and settings.thehive_api_key_secret:
            # The incident's TheHive case opens with a task for the approval (the secret's name
            # only: the function reads the key at run time).
            function = self.request_approval.function
            function.add_environment("THEHIVE_URL", settings.thehive_url)
            function.add_environment("THEHIVE_API_KEY_SECRET", settings.thehive_api_key_secret)
            permissions.allow_thehive_key(self.request_approval, settings.thehive_api_key_secret)

    def _topic(self, construct_id: str, name: str, display_name: str) -> sns.Topic:
        return sns.Topic(
            self,
            construct_id,
            topic_name=name,
            display_name=display_name,
            # The AWS managed key: approvers' subscriptions need no key policy of ours.
            master_key=kms.Alias.from_alias_name(self, f"{construct_id}SnsKey", "alias/aws/sns"),
            enforce_ssl=True,
        )

    def _allow_safeguards(self) -> None:
        """What the blast radius reads and the hourly budget writes."""
        dependents = self.decide.allow(
            "DescribeDependents",
            [
                "autoscaling:DescribeAutoScalingInstances",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetHealth",
            ],
            ["*"],
        )
        acknowledge(dependents, "AwsSolutions-IAM5", _DEPENDENTS_REASON, "Resource::*")
        websites = self.decide.allow(
            "ReadBucketWebsites",
            ["s3:GetBucketWebsite"],
            [f"arn:{self.partition}:s3:::*"],
        )
        acknowledge(
            websites,
            "AwsSolutions-IAM5",
            "Any bucket a finding names may be the one to close: decide reads whether it "
            "serves a website before closing it automatically.",
            "Resource::arn:<AWS::Partition>:s3:::*",
        )
        budget = references.table(self, naming.BUDGET_TABLE)
        budget.grant(self.decide.role, "dynamodb:UpdateItem")


def request_approval_environment(
    settings: Settings, approval_topic_arn: str, escalation_topic_arn: str
) -> dict[str, str]:
    """The request-approval function's environment: names and ARNs, never a secret's value."""
    environment = {
        "APPROVALS_TABLE": naming.APPROVALS_TABLE,
        "APPROVAL_TOPIC_ARN": approval_topic_arn,
        "ESCALATION_TOPIC_ARN": escalation_topic_arn,
    }
    if settings.slack_webhook_secret:
        # The secret's name only: the function reads the webhook's URL from Secrets Manager.
        environment["SLACK_WEBHOOK_SECRET"] = settings.slack_webhook_secret
    return environment


def slack_webhook_policy(scope: Construct, role: iam.IRole, secret_name: str) -> iam.Policy:
    """Reading the one secret that holds the Slack webhook's URL, and nothing else."""
    secret_arn = permissions.secret_arn(scope, secret_name)
    return iam.Policy(
        scope,
        "ReadSlackWebhook",
        statements=[
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secret_arn])
        ],
        roles=[role],
    )


def policy_parameter(scope: Construct, policy: Path) -> ssm.StringParameter:
    """The deployed policy, where `cloud-sniper policy push` changes it without a deploy."""
    value = parameter_value(load_policy(policy))
    try:
        tier = parameter_tier(value, str(policy))
    except PolicyError as exc:
        raise ConfigError(f"context policy: {exc}") from exc
    return ssm.StringParameter(
        scope,
        "Policy",
        parameter_name=naming.POLICY_PARAMETER,
        description="The response policy the decide function applies (compact JSON)",
        string_value=value,
        tier=ssm.ParameterTier.ADVANCED if tier == ADVANCED_TIER else ssm.ParameterTier.STANDARD,
    )
