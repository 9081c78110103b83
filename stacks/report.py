"""CloudSniper-Report: each incident, its report and its event; the scheduled summary."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cloud_sniper.domain import naming
from stacks import permissions, references
from stacks.config import FUNCTIONS, Settings
from stacks.nag import acknowledge
from stacks.service_function import ServiceCode, ServiceFunction


class ReportStack(Stack):
    """The last step of every execution, whatever happened before it."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        bucket = references.reports_bucket(self)
        bus = references.event_bus(self)
        code = ServiceCode(self)

        self.report = ServiceFunction(
            self,
            "Report",
            spec=FUNCTIONS["report"],
            code=code,
            settings=settings,
            environment={
                "INCIDENTS_TABLE": naming.INCIDENTS_TABLE,
                "APPROVALS_TABLE": naming.APPROVALS_TABLE,
                "BLOCKS_TABLE": naming.BLOCKS_TABLE,
                "REPORTS_BUCKET": bucket.bucket_name,
                "EVENT_BUS_NAME": naming.EVENT_BUS,
            },
        )
        role = self.report.role
        incidents = references.table(self, naming.INCIDENTS_TABLE)
        incidents.grant(role, "dynamodb:GetItem", "dynamodb:PutItem")
        approvals = references.table(self, naming.APPROVALS_TABLE)
        approvals.grant(role, "dynamodb:UpdateItem")
        bus.grant_put_events_to(role)
        # Query on the index alone: the report looks up an incident's blocks, nothing more.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dynamodb:Query"],
                resources=[
                    references.table_index_arn(
                        self, naming.BLOCKS_TABLE, naming.BLOCKS_BY_INCIDENT_INDEX
                    )
                ],
            )
        )

        reports = self.report.allow("WriteReports", ["s3:PutObject"], [bucket.arn_for_objects("*")])
        acknowledge(
            reports,
            "AwsSolutions-IAM5",
            "One report object per incident, named at run time: the function may write any key "
            "of the reports bucket and nothing else.",
            f"Resource::arn:<AWS::Partition>:s3:::{naming.PREFIX}-reports-<AWS::AccountId>-"
            "<AWS::Region>/*",
        )
        self._allow_execution_history()
        self._allow_integrations(settings)

        self.summary = self._build_summary(code, settings, bucket, incidents)

    def _build_summary(
        self,
        code: ServiceCode,
        settings: Settings,
        bucket: s3.IBucket,
        incidents: dynamodb.ITable,
    ) -> ServiceFunction:
        """The summary of each period, written under summaries/ in the reports bucket."""
        summary = ServiceFunction(
            self,
            "Summary",
            spec=FUNCTIONS["summary"],
            code=code,
            settings=settings,
            environment={
                "INCIDENTS_TABLE": naming.INCIDENTS_TABLE,
                "BLOCKS_TABLE": naming.BLOCKS_TABLE,
                "ACTIONS_TABLE": naming.ACTIONS_TABLE,
                "REPORTS_BUCKET": bucket.bucket_name,
                "SUMMARY_PERIOD_DAYS": str(settings.summary_period_days),
            },
        )
        # Scans, read-only: the incidents of the period, the blocks and actions undone in it.
        incidents.grant(summary.role, "dynamodb:Scan")
        for name in (naming.BLOCKS_TABLE, naming.ACTIONS_TABLE):
            references.table(self, name).grant(summary.role, "dynamodb:Scan")

        writes = summary.allow(
            "WriteSummaries", ["s3:PutObject"], [bucket.arn_for_objects("summaries/*")]
        )
        acknowledge(
            writes,
            "AwsSolutions-IAM5",
            "One summary object per period, named at run time: the function may write under "
            "summaries/ in the reports bucket and nowhere else.",
            f"Resource::arn:<AWS::Partition>:s3:::{naming.PREFIX}-reports-<AWS::AccountId>-"
            "<AWS::Region>/summaries/*",
        )

        events.Rule(
            self,
            "SummarySchedule",
            description="Write the summary of the Cloud Sniper incidents of the last period",
            schedule=events.Schedule.rate(settings.summary_schedule),
            # A missed run is retried within the hour; the next period's summary comes anyway.
            targets=[
                targets.LambdaFunction(
                    summary.function, retry_attempts=2, max_event_age=Duration.hours(1)
                )
            ],
        )
        return summary

    def _allow_execution_history(self) -> None:
        """The pipeline's executions' histories, read for each report's timeline."""
        executions = self.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{naming.STATE_MACHINE}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        history = self.report.allow(
            "ReadExecutionHistory", ["states:GetExecutionHistory"], [executions]
        )
        acknowledge(
            history,
            "AwsSolutions-IAM5",
            "Each report reads its own execution's history, named at run time: any execution "
            "of the pipeline state machine, and of no other.",
            "Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
            f"{naming.STATE_MACHINE}:*",
        )

    def _allow_integrations(self, settings: Settings) -> None:
        """Security Hub's workflow status and note; TheHive's API key, only when TheHive is on."""
        function = self.report.function
        enabled = settings.security_hub_updates
        function.add_environment("SECURITY_HUB_UPDATES", "true" if enabled else "false")
        if enabled:
            # BatchUpdateFindings names its findings in the request: IAM narrows it to the hub
            # of this account and region, and no further.
            hub = self.format_arn(service="securityhub", resource="hub", resource_name="default")
            self.report.allow("UpdateFindings", ["securityhub:BatchUpdateFindings"], [hub])

        if settings.thehive_url and settings.thehive_api_key_secret:
            function.add_environment("THEHIVE_URL", settings.thehive_url)
            # The secret's name only: the function reads the key at run time.
            function.add_environment("THEHIVE_API_KEY_SECRET", settings.thehive_api_key_secret)
            permissions.allow_thehive_key(self.report, settings.thehive_api_key_secret)
