"""CloudSniper-Data: the tables, the reports bucket and the project's event bus."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cloud_sniper.domain import naming
from stacks.config import REPORT_VERSIONS_KEPT
from stacks.nag import acknowledge

# Each table's keys, as the services read and write them.
TABLE_KEYS: dict[str, tuple[str, str | None]] = {
    naming.INDICATORS_TABLE: ("kind", "value"),
    naming.INCIDENTS_TABLE: ("incident_id", None),
    naming.BLOCKS_TABLE: ("block_id", None),
    naming.APPROVALS_TABLE: ("approval_id", None),
    naming.ACTIONS_TABLE: ("record_id", None),
    naming.BUDGET_TABLE: ("window", None),
}
# Tables whose items DynamoDB deletes once the epoch second in this attribute has passed.
TABLE_TTL: dict[str, str] = {naming.BUDGET_TABLE: "expires_at_epoch"}
# Each table's global secondary indexes: index name → partition key.
TABLE_INDEXES: dict[str, dict[str, str]] = {
    # The report lists the blocks a failed execution left in force.
    naming.BLOCKS_TABLE: {naming.BLOCKS_BY_INCIDENT_INDEX: "incident_id"},
    # Rollback finds what an incident did through it.
    naming.ACTIONS_TABLE: {naming.ACTIONS_BY_INCIDENT_INDEX: "incident_id"},
}


class DataStack(Stack):
    """State that outlives any deployment of a service: retained on stack deletion."""

    def __init__(self, scope: Construct, construct_id: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.tables = {name: self._table(name, *keys) for name, keys in TABLE_KEYS.items()}
        self.reports_bucket = self._reports_bucket()
        self.event_bus = events.EventBus(self, "ProjectBus", event_bus_name=naming.EVENT_BUS)

    def _table(self, name: str, partition_key: str, sort_key: str | None) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            f"Table-{name}",
            table_name=name,
            partition_key=dynamodb.Attribute(
                name=partition_key, type=dynamodb.AttributeType.STRING
            ),
            sort_key=(
                dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING)
                if sort_key
                else None
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            # The AWS managed key: encrypted at rest, with no key policy for every role to join.
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
            time_to_live_attribute=TABLE_TTL.get(name),
        )
        for index_name, index_key in TABLE_INDEXES.get(name, {}).items():
            table.add_global_secondary_index(
                index_name=index_name,
                partition_key=dynamodb.Attribute(
                    name=index_key, type=dynamodb.AttributeType.STRING
                ),
                projection_type=dynamodb.ProjectionType.ALL,
            )
        return table

    def _reports_bucket(self) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "Reports",
            bucket_name=naming.reports_bucket(self.account, self.region),
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-replaced-reports",
                    noncurrent_version_expiration=REPORT_VERSIONS_KEPT,
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            bucket,
            "AwsSolutions-S1",
            "Only the report function writes here, one object per incident; CloudTrail S3 data "
            "events are the place to audit access if the account needs it, not a second bucket "
            "of access logs that would itself be unlogged.",
        )
        return bucket
