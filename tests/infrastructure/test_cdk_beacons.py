"""CloudSniper-Beacons: the flow-log table, the enforced workgroup, the scheduled scan."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from cloud_sniper.beacons import formats
from cloud_sniper.domain import naming
from stacks.beacons import FLOW_LOG_COLUMNS, PARTITIONS
from stacks.config import (
    BEACONS_STACK,
    CONTEXT_DEFAULTS,
    FUNCTIONS,
    INGEST_STACK,
    SERVICE_STACKS,
    ConfigError,
    Settings,
)

STACK = BEACONS_STACK
LOCATION = (
    f"s3://{naming.PREFIX}-flow-logs-<AWS::AccountId>-<AWS::Region>/AWSLogs/"
    "aws-account-id=<AWS::AccountId>/aws-service=vpcflowlogs/aws-region=<AWS::Region>/"
)


def rendered(assembly, resource_type: str) -> tuple[str, dict]:
    key, resource = assembly.one(STACK, resource_type)
    return key, assembly.render(STACK, resource["Properties"])


def test_the_stack_is_a_service_stack_of_the_app(assembly):
    assert STACK in SERVICE_STACKS
    assert STACK in assembly.stack_ids


def test_the_table_reads_parquet_flow_logs_in_hourly_hive_partitions(assembly):
    # Given the Glue table over the flow-log bucket
    _, database = rendered(assembly, "AWS::Glue::Database")
    _, table = rendered(assembly, "AWS::Glue::Table")
    table_input = table["TableInput"]
    storage = table_input["StorageDescriptor"]

    # Then it is the flow logs' table in the project's database, Parquet at the configured place
    assert database["DatabaseInput"]["Name"] == table["DatabaseName"] == naming.FLOW_LOGS_DATABASE
    assert table_input["Name"] == naming.FLOW_LOGS_TABLE
    assert table_input["TableType"] == "EXTERNAL_TABLE"
    assert storage["Location"] == LOCATION
    assert storage["SerdeInfo"]["SerializationLibrary"].endswith(".ParquetHiveSerDe")
    assert storage["InputFormat"].endswith(".MapredParquetInputFormat")
    # With the flow-log fields as the Parquet delivery types them
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == list(FLOW_LOG_COLUMNS)


def test_every_field_the_analysis_reads_is_a_column_of_the_table():
    columns = {name for name, _ in FLOW_LOG_COLUMNS}

    assert set(formats.STANDARD_COLUMNS) <= columns


def test_partition_projection_computes_the_hours_so_none_is_ever_registered(assembly):
    _, table = rendered(assembly, "AWS::Glue::Table")
    table_input = table["TableInput"]
    parameters = table_input["Parameters"]

    # Then year, month, day and hour are string partitions, projected as zero-padded integers
    assert table_input["PartitionKeys"] == [
        {"Name": name, "Type": "string"} for name in ("year", "month", "day", "hour")
    ]
    assert parameters["projection.enabled"] == "true"
    for name, interval, digits in PARTITIONS:
        assert parameters[f"projection.{name}.type"] == "integer"
        assert parameters[f"projection.{name}.range"] == interval
        assert parameters[f"projection.{name}.digits"] == str(digits)
    assert parameters["storage.location.template"] == (
        f"{LOCATION}year=${{year}}/month=${{month}}/day=${{day}}/hour=${{hour}}/"
    )


def test_the_workgroup_keeps_results_encrypted_in_its_bucket_and_enforces_it(assembly):
    bucket, _ = assembly.one(STACK, "AWS::S3::Bucket")
    _, workgroup = rendered(assembly, "AWS::Athena::WorkGroup")
    configuration = workgroup["WorkGroupConfiguration"]

    assert workgroup["Name"] == naming.BEACONS_WORKGROUP
    assert configuration["EnforceWorkGroupConfiguration"] is True
    assert configuration["ResultConfiguration"] == {
        "OutputLocation": f"s3://<AWS::S3::Bucket {bucket}>/queries/",
        "EncryptionConfiguration": {"EncryptionOption": "SSE_S3"},
        "ExpectedBucketOwner": "<AWS::AccountId>",
    }
    # And a query that would scan more than the configured gigabytes is cancelled
    scan_limit = CONTEXT_DEFAULTS["beacons_scan_limit_gb"] * (1 << 30)
    assert configuration["BytesScannedCutoffPerQuery"] == scan_limit
    assert configuration["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}
    assert configuration["PublishCloudWatchMetricsEnabled"] is True


def test_the_results_bucket_is_private_encrypted_ssl_only_and_short_lived(assembly):
    key, bucket = rendered(assembly, "AWS::S3::Bucket")

    assert bucket["BucketName"] == f"{naming.PREFIX}-athena-results-<AWS::AccountId>-<AWS::Region>"
    assert bucket["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
    }
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert (rule["ExpirationInDays"], rule["Status"]) == (7, "Enabled")
    assembly.assertions[STACK].has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": key},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_the_scan_runs_on_its_schedule(assembly):
    spec = FUNCTIONS["beacons"]
    stack, function = assembly.function(spec.name)
    _, rule = rendered(assembly, "AWS::Events::Rule")

    # Then the scan may run as long as Lambda allows, every few hours; a retried run publishes
    # the same findings at the same time, which the intake starts once
    assert stack == STACK
    assert (function["Timeout"], function["MemorySize"]) == (900, 1769)
    assert rule["ScheduleExpression"] == f"rate({CONTEXT_DEFAULTS['beacons_schedule_hours']} hours)"
    assert rule["Targets"] == [
        {
            "Arn": f"<AWS::Lambda::Function {spec.name}.Arn>",
            "Id": "Target0",
            "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 2},
        }
    ]


def test_the_project_bus_rule_takes_the_scans_findings_to_the_intake(assembly):
    # Given the ingest stack's rules on the project bus
    rules = [
        assembly.render(INGEST_STACK, resource["Properties"])
        for resource in assembly.resources(INGEST_STACK, "AWS::Events::Rule").values()
        if resource["Properties"].get("EventBusName") == naming.EVENT_BUS
    ]

    # Then the scan's findings (the project's source, GuardDuty's detail type) go to the intake
    (rule,) = rules
    assert naming.EVENT_SOURCE in rule["EventPattern"]["source"]
    assert naming.FINDING_DETAIL_TYPE in rule["EventPattern"]["detail-type"]
    assert rule["Targets"][0]["Arn"] == f"<AWS::SQS::Queue {naming.INTAKE_QUEUE}.Arn>"


def test_the_flow_logs_place_follows_the_context():
    settings = Settings.from_context(
        {
            "beacons_flow_logs_bucket": "org-flow-logs",
            "beacons_flow_logs_prefix": "vpc/{account}/{region}/",
        }
    )

    assert settings.beacons.location("111122223333", "eu-west-1") == (
        "org-flow-logs",
        "vpc/111122223333/eu-west-1/",
    )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"beacons_flow_logs_bucket": "Not_A_Bucket"}, r"beacons_flow_logs_bucket: 'Not_A_Bucket'"),
        ({"beacons_flow_logs_prefix": "logs/{acount}/"}, r"unknown placeholder\(s\) \['acount'\]"),
        ({"beacons_flow_logs_prefix": "logs"}, r"must not start with / and must end with /"),
        (
            {"beacons_window_hours": 2, "beacons_schedule_hours": 6},
            r"beacons_window_hours: 2 is shorter than beacons_schedule_hours \(6\)",
        ),
        ({"beacons_min_score": "high"}, r"beacons_min_score: 'high' is not a number"),
        ({"beacons_min_score": 1.5}, r"beacons_min_score: 1.5 is not from 0 to 1"),
        ({"beacons_max_findings": 0}, r"beacons_max_findings: 0 is not positive"),
    ],
)
def test_a_wrong_beacon_setting_fails_the_synth_naming_it(context, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_context(context)
