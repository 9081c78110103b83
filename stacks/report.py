"""CloudSniper-Report: the function that writes each incident, its report and its event."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from cloud_sniper.domain import naming
from stacks import references
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

        self.report = ServiceFunction(
            self,
            "Report",
            spec=FUNCTIONS["report"],
            code=ServiceCode(self),
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
