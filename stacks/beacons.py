"""CloudSniper-Beacons: Athena over the VPC Flow Logs, and the scheduled scan for beacons.

The Glue table reads the flow logs as VPC Flow Logs deliver them to S3 in Parquet with
Hive-compatible prefixes and hourly partitions; partition projection computes the partitions
from the query's predicate, so none is ever registered and a run reads only its hours.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_glue as glue
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cloud_sniper.domain import naming
from stacks import references
from stacks.config import FUNCTIONS, Settings
from stacks.nag import acknowledge
from stacks.service_function import ServiceCode, ServiceFunction

# The flow-log fields as the Parquet delivery types them (VPC Flow Logs' field reference), up
# to version 5. A field a flow log's format leaves out reads as null.
FLOW_LOG_COLUMNS = (
    ("version", "int"),
    ("account_id", "string"),
    ("interface_id", "string"),
    ("srcaddr", "string"),
    ("dstaddr", "string"),
    ("srcport", "int"),
    ("dstport", "int"),
    ("protocol", "int"),
    ("packets", "bigint"),
    ("bytes", "bigint"),
    ("start", "bigint"),
    ("end", "bigint"),
    ("action", "string"),
    ("log_status", "string"),
    ("vpc_id", "string"),
    ("subnet_id", "string"),
    ("instance_id", "string"),
    ("tcp_flags", "int"),
    ("type", "string"),
    ("pkt_srcaddr", "string"),
    ("pkt_dstaddr", "string"),
    ("region", "string"),
    ("az_id", "string"),
    ("sublocation_type", "string"),
    ("sublocation_id", "string"),
    ("pkt_src_aws_service", "string"),
    ("pkt_dst_aws_service", "string"),
    ("flow_direction", "string"),
    ("traffic_path", "int"),
)
# The hourly partitions of the Hive-compatible prefixes: year=2026/month=12/day=04/hour=10.
PARTITIONS = (
    ("year", "2020,2099", 4),
    ("month", "1,12", 2),
    ("day", "1,31", 2),
    ("hour", "0,23", 2),
)
RESULTS_PREFIX = "queries/"
RESULTS_KEPT = Duration.days(7)
ATHENA_ENGINE = "Athena engine version 3"
PARQUET = "org.apache.hadoop.hive.ql.io.parquet"


class BeaconsStack(Stack):
    """The flow-log table, the workgroup and its results bucket, the scan and its schedule."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.flow_logs_bucket, self.flow_logs_prefix = settings.beacons.location(
            self.account, self.region
        )
        self.results = self._results_bucket()
        self.table = self._table()
        self.workgroup = self._workgroup(settings)
        self.function = self._function(settings)
        self._schedule(settings)

    def _results_bucket(self) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "QueryResults",
            bucket_name=naming.athena_results_bucket(self.account, self.region),
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # A run reads its results back at once; they are not kept for anything after.
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-query-results",
                    expiration=RESULTS_KEPT,
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            bucket,
            "AwsSolutions-S1",
            "Athena writes here the results of the beacon scan's own queries, read back within "
            "the run and expired after a week; CloudTrail's S3 data events audit access if the "
            "account needs it, not a second bucket of access logs that would itself be unlogged.",
        )
        return bucket

    def _table(self) -> glue.CfnTable:
        database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=self.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=naming.FLOW_LOGS_DATABASE,
                description="Cloud Sniper: the tables the beacon scan queries",
            ),
        )
        location = f"s3://{self.flow_logs_bucket}/{self.flow_logs_prefix}"
        template = "/".join(f"{name}=${{{name}}}" for name, _, _ in PARTITIONS)
        projection = {"projection.enabled": "true"}
        for name, interval, digits in PARTITIONS:
            projection[f"projection.{name}.type"] = "integer"
            projection[f"projection.{name}.range"] = interval
            projection[f"projection.{name}.digits"] = str(digits)
        table = glue.CfnTable(
            self,
            "FlowLogs",
            catalog_id=self.account,
            database_name=naming.FLOW_LOGS_DATABASE,
            table_input=glue.CfnTable.TableInputProperty(
                name=naming.FLOW_LOGS_TABLE,
                description="VPC Flow Logs in Parquet with Hive-compatible hourly partitions",
                table_type="EXTERNAL_TABLE",
                parameters={
                    "EXTERNAL": "TRUE",
                    "classification": "parquet",
                    **projection,
                    "storage.location.template": f"{location}{template}/",
                },
                partition_keys=[
                    glue.CfnTable.ColumnProperty(name=name, type="string")
                    for name, _, _ in PARTITIONS
                ],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    location=location,
                    columns=[
                        glue.CfnTable.ColumnProperty(name=name, type=kind)
                        for name, kind in FLOW_LOG_COLUMNS
                    ],
                    input_format=f"{PARQUET}.MapredParquetInputFormat",
                    output_format=f"{PARQUET}.MapredParquetOutputFormat",
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library=f"{PARQUET}.serde.ParquetHiveSerDe"
                    ),
                ),
            ),
        )
        table.node.add_dependency(database)
        return table

    def _workgroup(self, settings: Settings) -> athena.CfnWorkGroup:
        return athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=naming.BEACONS_WORKGROUP,
            description="Cloud Sniper's beacon scan: results encrypted in its bucket, enforced",
            state="ENABLED",
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                # Queries of this workgroup cannot choose another place or no encryption.
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=settings.beacons.scan_limit_gb * (1 << 30),
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version=ATHENA_ENGINE
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=self.results.s3_url_for_object(RESULTS_PREFIX),
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_S3"
                    ),
                    expected_bucket_owner=self.account,
                ),
            ),
        )

    def _function(self, settings: Settings) -> ServiceFunction:
        beacons = settings.beacons
        function = ServiceFunction(
            self,
            "Beacons",
            spec=FUNCTIONS["beacons"],
            code=ServiceCode(self),
            settings=settings,
            environment={
                "ATHENA_WORKGROUP": naming.BEACONS_WORKGROUP,
                "GLUE_DATABASE": naming.FLOW_LOGS_DATABASE,
                "FLOW_LOGS_TABLE": naming.FLOW_LOGS_TABLE,
                "EVENT_BUS_NAME": naming.EVENT_BUS,
                "WINDOW_HOURS": str(beacons.window_hours),
                "MIN_SCORE": str(beacons.min_score),
                "MAX_FINDINGS": str(beacons.max_findings),
            },
        )
        function.allow(
            "RunQueries",
            [
                "athena:GetQueryExecution",
                "athena:GetQueryResults",
                "athena:StartQueryExecution",
                "athena:StopQueryExecution",
            ],
            [
                self.format_arn(
                    service="athena", resource="workgroup", resource_name=naming.BEACONS_WORKGROUP
                )
            ],
        )
        function.allow(
            "ReadCatalog",
            ["glue:GetDatabase", "glue:GetTable"],
            [
                self.format_arn(service="glue", resource="catalog"),
                self.format_arn(
                    service="glue", resource="database", resource_name=naming.FLOW_LOGS_DATABASE
                ),
                self.format_arn(
                    service="glue",
                    resource="table",
                    resource_name=f"{naming.FLOW_LOGS_DATABASE}/{naming.FLOW_LOGS_TABLE}",
                ),
            ],
        )
        self._allow_s3(function)
        interfaces = function.allow(
            "DescribeInterfaces", ["ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces"], ["*"]
        )
        acknowledge(
            interfaces,
            "AwsSolutions-IAM5",
            "EC2's Describe calls accept no resource but '*'; the function reads which interface "
            "and instance hold a beacon's source address, for the finding's resource.",
            "Resource::*",
        )
        function.allow(
            "PublishFindings", ["events:PutEvents"], [references.event_bus(self).event_bus_arn]
        )
        return function

    def _allow_s3(self, function: ServiceFunction) -> None:
        """Athena reads the flow logs and writes the results with the function's credentials."""
        # TODO(beacons): a flow-log bucket encrypted with its own KMS key also needs kms:Decrypt
        # on that key, which no setting names yet: only SSE-S3 buckets are read.
        flow_logs = s3.Bucket.from_bucket_name(self, "FlowLogsBucket", self.flow_logs_bucket)
        read = function.allow(
            "ReadFlowLogs",
            ["s3:GetObject"],
            [flow_logs.arn_for_objects(f"{self.flow_logs_prefix}*")],
        )
        function.allow(
            "ListFlowLogs", ["s3:GetBucketLocation", "s3:ListBucket"], [flow_logs.bucket_arn]
        )
        results = function.allow(
            "WriteResults",
            [
                "s3:AbortMultipartUpload",
                "s3:GetObject",
                "s3:ListMultipartUploadParts",
                "s3:PutObject",
            ],
            [self.results.arn_for_objects(f"{RESULTS_PREFIX}*")],
        )
        function.allow(
            "ListResults",
            ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
            [self.results.bucket_arn],
        )
        acknowledge(
            read,
            "AwsSolutions-IAM5",
            "Athena reads the flow-log objects under the configured prefix, named by the "
            "delivery (account, region, hour, file); the function may read nothing else there.",
            *_iam5_objects(flow_logs.arn_for_objects(f"{self.flow_logs_prefix}*"), self),
        )
        acknowledge(
            results,
            "AwsSolutions-IAM5",
            "Athena names each query's result objects by the query's id, under queries/ in the "
            "results bucket: the function may read and write there and nowhere else.",
            *_iam5_objects(self.results.arn_for_objects(f"{RESULTS_PREFIX}*"), self),
        )

    def _schedule(self, settings: Settings) -> None:
        events.Rule(
            self,
            "Schedule",
            description="Scan the VPC Flow Logs of the last hours for beacons",
            schedule=events.Schedule.rate(Duration.hours(settings.beacons.schedule_hours)),
            # A missed run is retried within the hour; the next run's window overlaps anyway.
            targets=[
                targets.LambdaFunction(
                    self.function.function, retry_attempts=2, max_event_age=Duration.hours(1)
                )
            ],
        )


def _iam5_objects(arn: str, stack: Stack) -> tuple[str, ...]:
    """cdk-nag's finding id of an object ARN with a wildcard, as its resolved template text."""
    resolved = stack.resolve(arn)
    return (f"Resource::{_nag_text(resolved)}",)


def _nag_text(value: object) -> str:
    """An intrinsic as cdk-nag writes it: Fn::Join flattened, Ref of a pseudo parameter <...>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_nag_text(part) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return f"<{logical_id}.{attribute}>"
    raise ValueError(f"cannot name {value!r} as cdk-nag does")
