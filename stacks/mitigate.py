"""CloudSniper-Mitigate: the blocks in WAF IP sets and network ACLs, the WAF writer, the expiry."""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnOutput, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from cloud_sniper.domain import naming
from stacks import config, permissions, references
from stacks.config import FUNCTIONS, WAF_SCOPE, Settings
from stacks.nag import acknowledge
from stacks.queues import queue_with_dead_letters
from stacks.service_function import ServiceCode, ServiceFunction

_MEMBER_ROLE_REASON = (
    "The member role has one name in every member account (CloudSniper-MemberRole, deployed "
    "by a StackSet), and the account is the finding's, known only at run time."
)
_LOOKUPS_REASON = (
    "wafv2:ListIPSets and ec2:DescribeNetworkAcls accept no resource but '*': the functions "
    "find the IP sets by name and the network ACLs by subnet."
)


class MitigateStack(Stack):
    """The mitigate step, and the sweep that lifts blocks whose time is up."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # CloudFormation owns the sets, the functions own their addresses. An update of a set's
        # own properties here would reset its addresses and lift the active WAF blocks.
        self.ip_sets = {
            version: wafv2.CfnIPSet(
                self,
                f"Blocked{version.capitalize()}",
                name=name,
                scope=WAF_SCOPE,
                ip_address_version=version.upper(),
                addresses=[],
                description=f"Addresses Cloud Sniper blocks - {version} - kept by its functions",
            )
            for version, name in (("ipv4", naming.WAF_IPV4_SET), ("ipv6", naming.WAF_IPV6_SET))
        }

        for version, ip_set in self.ip_sets.items():
            # Outputs to read, not exports: nothing may import them and pin this stack.
            CfnOutput(
                self,
                f"Blocked{version.capitalize()}Arn",
                value=ip_set.attr_arn,
                description=f"Use this {version} IP set in a blocking rule of your web ACLs",
            )

        self.changes_dead_letters, self.changes_queue = self._build_queues(settings)

        code = ServiceCode(self)
        environment = {
            "BLOCKS_TABLE": naming.BLOCKS_TABLE,
            "INDICATORS_TABLE": naming.INDICATORS_TABLE,
            "WAF_SCOPE": WAF_SCOPE,
            "WAF_IPV4_SET_NAME": naming.WAF_IPV4_SET,
            "WAF_IPV6_SET_NAME": naming.WAF_IPV6_SET,
            "NACL_RULE_RANGE": settings.nacl_rule_range,
            "NACL_ENTRY_LIMIT": str(settings.nacl_entry_limit),
            "DEFAULT_BLOCK_TTL_SECONDS": str(settings.block_ttl_seconds),
            "ACTIONS_TABLE": naming.ACTIONS_TABLE,
            "WAF_CHANGES_QUEUE_URL": self.changes_queue.queue_url,
        }
        self.mitigate = ServiceFunction(
            self,
            config.RESPONDERS[0],  # the member role trusts its role by this name
            spec=FUNCTIONS["mitigate"],
            code=code,
            settings=settings,
            environment=environment,
        )
        self._allow_blocks(self.mitigate, applies=True)
        self._allow_catalogue(self.mitigate, expiring_only=False)
        self._allow_member_role(self.mitigate)

        self.expire = ServiceFunction(
            self,
            config.RESPONDERS[1],  # the member role trusts its role by this name
            spec=FUNCTIONS["expire"],
            code=code,
            settings=settings,
            environment=environment,
        )
        self._allow_blocks(self.expire, applies=False)
        self._allow_catalogue(self.expire, expiring_only=True)
        self._allow_member_role(self.expire)
        events.Rule(
            self,
            "ExpirySchedule",
            description="Lift the Cloud Sniper blocks whose time is up",
            schedule=events.Schedule.rate(config.EXPIRY_SCHEDULE),
            # A missed sweep is made up by the next one, a quarter of an hour later.
            targets=[
                targets.LambdaFunction(
                    self.expire.function, retry_attempts=2, max_event_age=Duration.minutes(10)
                )
            ],
        )

        self.waf_writer = self._build_waf_writer(code, settings)
        self._build_alarm(settings)

    def _build_queues(self, settings: Settings) -> tuple[sqs.Queue, sqs.Queue]:
        return queue_with_dead_letters(
            self,
            "WafChanges",
            queue_name=naming.WAF_CHANGES_QUEUE,
            dead_letter_queue_name=naming.WAF_CHANGES_DLQ,
            visibility_timeout=settings.waf_changes_visibility_timeout,
            retention_period=config.WAF_CHANGES_RETENTION,
            max_receive_count=config.WAF_CHANGES_MAX_RECEIVE_COUNT,
        )

    def _build_waf_writer(self, code: ServiceCode, settings: Settings) -> ServiceFunction:
        """The one writer of the IP sets: an interval's changes, one update per set."""
        writer = ServiceFunction(
            self,
            "WafWriter",
            spec=FUNCTIONS["waf_writer"],
            code=code,
            settings=settings,
            environment={
                "BLOCKS_TABLE": naming.BLOCKS_TABLE,
                "WAF_SCOPE": WAF_SCOPE,
                "WAF_IPV4_SET_NAME": naming.WAF_IPV4_SET,
                "WAF_IPV6_SET_NAME": naming.WAF_IPV6_SET,
            },
            reserved_concurrency=config.WAF_WRITER_CONCURRENCY,
        )
        writer.function.add_event_source(
            sources.SqsEventSource(
                self.changes_queue,
                batch_size=config.WAF_CHANGES_BATCH_SIZE,
                max_batching_window=settings.waf_writer_interval,
                max_concurrency=config.WAF_WRITER_POLLERS,
                report_batch_item_failures=True,
            )
        )
        writer.allow(
            "WafIpSets",
            ["wafv2:GetIPSet", "wafv2:UpdateIPSet"],
            [ip_set.attr_arn for ip_set in self.ip_sets.values()],
        )
        acknowledge(
            writer.allow("Lookups", ["wafv2:ListIPSets"], ["*"]),
            "AwsSolutions-IAM5",
            _LOOKUPS_REASON,
            "Resource::*",
        )
        # Whether each change still holds, and which blocks are now in their set.
        blocks = references.table(writer, naming.BLOCKS_TABLE)
        blocks.grant(writer.role, "dynamodb:BatchGetItem", "dynamodb:UpdateItem")
        return writer

    def _build_alarm(self, settings: Settings) -> None:
        cloudwatch.Alarm(
            self,
            "WafChangesDeadLetters",
            alarm_name=f"{naming.WAF_CHANGES_DLQ}-not-empty",
            alarm_description="WAF IP set changes the writer could not apply: a set full, "
            "missing or refusing; see the WAF writer's logs",
            metric=self.changes_dead_letters.metric_approximate_number_of_messages_visible(
                period=settings.alarm_period, statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _allow_catalogue(self, function: ServiceFunction, *, expiring_only: bool) -> None:
        """Grant each action of the response catalogue the permissions it declares, and no more.

        The expiry run only undoes the actions that expire, so it gets only theirs.
        """
        actions = references.table(function, naming.ACTIONS_TABLE)
        if expiring_only:
            actions.grant(function.role, "dynamodb:Scan", "dynamodb:PutItem")
        else:
            actions.grant(function.role, "dynamodb:GetItem", "dynamodb:PutItem")

        permissions.allow_catalogue(function, function.role, expiring_only=expiring_only)

    def _allow_member_role(self, function: ServiceFunction) -> None:
        """Act on a member account's finding as its member role, and as nothing else there."""
        member_roles = self.format_arn(
            service="iam",
            region="",
            account="*",
            resource="role",
            resource_name=naming.MEMBER_ROLE,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        acknowledge(
            function.allow("MemberRole", ["sts:AssumeRole"], [member_roles]),
            "AwsSolutions-IAM5",
            _MEMBER_ROLE_REASON,
            f"Resource::arn:<AWS::Partition>:iam::*:role/{naming.MEMBER_ROLE}",
        )

    def _allow_blocks(self, function: ServiceFunction, *, applies: bool) -> None:
        # The IP sets change through the WAF writer alone: these functions only ask it to.
        self.changes_queue.grant(function.role, "sqs:SendMessage")
        permissions.allow_network_acls(
            function, function.role, applies=applies, lookups_reason=_LOOKUPS_REASON
        )

        blocks = references.table(function, naming.BLOCKS_TABLE)
        block_actions = [
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:Scan",
        ]
        if applies:
            # A block whose change never reached the writer is forgotten (BlockStore.discard).
            block_actions.append("dynamodb:DeleteItem")
        blocks.grant(function.role, *block_actions)
        indicators = references.table(function, naming.INDICATORS_TABLE)
        indicators.grant(function.role, "dynamodb:UpdateItem")
