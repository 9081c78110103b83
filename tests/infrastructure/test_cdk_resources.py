"""The stacks' resources: names, intake, data at rest, functions and their settings."""

from __future__ import annotations

import importlib
import json

import pytest
from aws_cdk.assertions import Match

from cloud_sniper.domain import naming
from stacks import config
from stacks.config import (
    DATA_STACK,
    DECIDE_STACK,
    FUNCTIONS,
    INGEST_STACK,
    MEMBER_ROLE_STACK,
    MITIGATE_STACK,
    PIPELINE_STACK,
    SERVICE_STACKS,
)

INTAKE_QUEUE_ARN = f"<AWS::SQS::Queue {naming.INTAKE_QUEUE}.Arn>"
DLQ_ARN = f"<AWS::SQS::Queue {naming.INTAKE_DLQ}.Arn>"
INTAKE_TARGET = {
    "Arn": INTAKE_QUEUE_ARN,
    "DeadLetterConfig": {"Arn": DLQ_ARN},
    "Id": "Target0",
    "RetryPolicy": {"MaximumEventAgeInSeconds": 7200, "MaximumRetryAttempts": 8},
}
REGION = "<AWS::Region>:<AWS::AccountId>"


def test_app_has_the_data_stack_a_stack_per_service_the_pipeline_and_the_member_role(assembly):
    expected = [DATA_STACK, *SERVICE_STACKS, PIPELINE_STACK, MEMBER_ROLE_STACK]
    assert assembly.stack_ids == sorted(expected)


def test_no_stack_exports_or_imports_a_value(assembly):
    # Stacks refer to each other by fixed names, so each can be deployed alone
    for stack, template in assembly.templates.items():
        text = json.dumps(template)
        assert "Fn::ImportValue" not in text, stack
        assert all("Export" not in output for output in template.get("Outputs", {}).values())


def test_stacks_depend_only_for_deployment_order(assembly):
    manifest = json.loads((assembly.directory / "manifest.json").read_text())
    dependencies = {
        stack: {
            d
            for d in manifest["artifacts"][stack].get("dependencies", [])
            if d in assembly.stack_ids
        }
        for stack in assembly.stack_ids
    }

    assert dependencies[DATA_STACK] == set()
    assert all(dependencies[stack] == {DATA_STACK} for stack in SERVICE_STACKS)
    assert dependencies[PIPELINE_STACK] == set(SERVICE_STACKS)
    # Deployed to other accounts: it depends on nothing of the administrator's
    assert dependencies[MEMBER_ROLE_STACK] == set()


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "default bus",
            {
                "EventPattern": {"source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"]},
            },
        ),
        (
            "security hub, default bus",
            {
                "EventPattern": {
                    "source": ["aws.securityhub"],
                    "detail-type": ["Security Hub Findings - Imported"],
                },
            },
        ),
        (
            "project bus",
            {
                "EventBusName": naming.EVENT_BUS,
                "EventPattern": {
                    "source": [naming.EVENT_SOURCE],
                    "detail-type": [naming.FINDING_DETAIL_TYPE, naming.REPLAY_DETAIL_TYPE],
                },
            },
        ),
    ],
)
def test_finding_rules_deliver_to_the_intake_queue_with_retries_and_a_dlq(assembly, rule, expected):
    # Given the rule listening on one bus
    rules = assembly.resources(INGEST_STACK, "AWS::Events::Rule").values()
    found = [
        assembly.render(INGEST_STACK, r["Properties"])
        for r in rules
        if r["Properties"].get("EventBusName") == expected.get("EventBusName")
        and r["Properties"]["EventPattern"]["source"] == expected["EventPattern"]["source"]
    ]
    assert len(found) == 1
    properties = found[0]

    # Then it matches the findings and hands them to the queue, retrying a bounded time
    assert properties["EventPattern"] == expected["EventPattern"]
    assert properties["State"] == "ENABLED"
    assert properties["Targets"] == [INTAKE_TARGET]


def test_event_bridge_may_send_to_the_intake_queue_and_its_dlq_only_from_the_rules(assembly):
    policies = assembly.resources(INGEST_STACK, "AWS::SQS::QueuePolicy").values()
    rendered = [assembly.render(INGEST_STACK, p["Properties"]) for p in policies]
    rule_arns = {
        f"<AWS::Events::Rule {logical_id}.Arn>"
        for logical_id in assembly.resources(INGEST_STACK, "AWS::Events::Rule")
    }

    for queue_arn in (INTAKE_QUEUE_ARN, DLQ_ARN):
        (document,) = [
            p["PolicyDocument"]
            for p in rendered
            if p["PolicyDocument"]["Statement"][0]["Resource"] == queue_arn
        ]
        allowed = [s for s in document["Statement"] if s["Effect"] == "Allow"]
        assert {s["Condition"]["ArnEquals"]["aws:SourceArn"] for s in allowed} == rule_arns
        assert all(s["Principal"] == {"Service": "events.amazonaws.com"} for s in allowed)


@pytest.mark.parametrize(
    ("stack", "queue"),
    [
        (INGEST_STACK, naming.INTAKE_QUEUE),
        (INGEST_STACK, naming.INTAKE_DLQ),
        (MITIGATE_STACK, naming.WAF_CHANGES_QUEUE),
        (MITIGATE_STACK, naming.WAF_CHANGES_DLQ),
    ],
)
def test_queues_are_encrypted_and_refuse_plain_http(assembly, stack, queue):
    template = assembly.assertions[stack]

    template.has_resource_properties(
        "AWS::SQS::Queue", {"QueueName": queue, "SqsManagedSseEnabled": True}
    )
    (key, _) = assembly.one(stack, "AWS::SQS::Queue", QueueName=queue)
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": key}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "sqs:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_intake_queue_dead_letters_after_repeated_failures(assembly):
    _, queue = assembly.one(INGEST_STACK, "AWS::SQS::Queue", QueueName=naming.INTAKE_QUEUE)
    properties = assembly.render(INGEST_STACK, queue["Properties"])

    assert properties["RedrivePolicy"] == {"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": 5}
    # Six times the receive function's timeout: a retried batch never overlaps the first.
    assert properties["VisibilityTimeout"] == 6 * FUNCTIONS["receive"].timeout_seconds


def test_receive_reads_the_intake_queue_in_batches_with_partial_failures(assembly):
    _, mapping = assembly.one(INGEST_STACK, "AWS::Lambda::EventSourceMapping")
    properties = assembly.render(INGEST_STACK, mapping["Properties"])

    assert properties["EventSourceArn"] == INTAKE_QUEUE_ARN
    assert properties["FunctionName"] == f"<AWS::Lambda::Function {naming.FUNCTIONS['receive']}>"
    assert properties["BatchSize"] == 10
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_waf_writer_reads_its_queue_one_interval_at_a_time_alone(assembly):
    # Given the WAF writer's event source mapping, queue and function
    writer = naming.FUNCTIONS["waf_writer"]
    _, mapping = assembly.one(
        MITIGATE_STACK, "AWS::Lambda::EventSourceMapping", MaximumBatchingWindowInSeconds=30
    )
    properties = assembly.render(MITIGATE_STACK, mapping["Properties"])
    _, queue = assembly.one(MITIGATE_STACK, "AWS::SQS::Queue", QueueName=naming.WAF_CHANGES_QUEUE)
    queue_properties = assembly.render(MITIGATE_STACK, queue["Properties"])
    _, function = assembly.function(writer)

    # Then it takes an interval's changes (30 s, up to 10,000 of them) in one batch, handing
    # back only a failed set's messages
    assert properties["EventSourceArn"] == f"<AWS::SQS::Queue {naming.WAF_CHANGES_QUEUE}.Arn>"
    assert properties["FunctionName"] == f"<AWS::Lambda::Function {writer}>"
    assert properties["BatchSize"] == 10_000
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    # And one writer runs at a time
    assert function["ReservedConcurrentExecutions"] == 1
    assert properties["ScalingConfig"] == {"MaximumConcurrency": 2}

    # And a batch held for the window and the run never shows again meanwhile, and a change
    # that keeps failing ends in the dead-letter queue, watched by an alarm
    timeout = FUNCTIONS["waf_writer"].timeout_seconds
    assert queue_properties["VisibilityTimeout"] == 6 * timeout + 30
    assert queue_properties["RedrivePolicy"] == {
        "deadLetterTargetArn": f"<AWS::SQS::Queue {naming.WAF_CHANGES_DLQ}.Arn>",
        "maxReceiveCount": 10,
    }
    assembly.one(
        MITIGATE_STACK, "AWS::CloudWatch::Alarm", AlarmName=f"{naming.WAF_CHANGES_DLQ}-not-empty"
    )


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        (naming.INDICATORS_TABLE, [("kind", "HASH"), ("value", "RANGE")]),
        (naming.INCIDENTS_TABLE, [("incident_id", "HASH")]),
        (naming.BLOCKS_TABLE, [("block_id", "HASH")]),
        (naming.ACTIONS_TABLE, [("record_id", "HASH")]),
        (naming.BUDGET_TABLE, [("window", "HASH")]),
        (naming.APPROVALS_TABLE, [("approval_id", "HASH")]),
    ],
)
def test_tables_are_on_demand_encrypted_recoverable_and_retained(assembly, table, keys):
    _, resource = assembly.one(DATA_STACK, "AWS::DynamoDB::Table", TableName=table)
    properties = resource["Properties"]

    assert [(k["AttributeName"], k["KeyType"]) for k in properties["KeySchema"]] == keys
    assert all(a["AttributeType"] == "S" for a in properties["AttributeDefinitions"])
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["SSESpecification"] == {"SSEEnabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert resource["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize(
    ("table", "indexes"),
    [
        (naming.INDICATORS_TABLE, None),
        (naming.INCIDENTS_TABLE, None),
        (naming.BLOCKS_TABLE, [(naming.BLOCKS_BY_INCIDENT_INDEX, [("incident_id", "HASH")])]),
        (
            naming.ACTIONS_TABLE,
            [(naming.ACTIONS_BY_INCIDENT_INDEX, [("incident_id", "HASH")])],
        ),
        (naming.APPROVALS_TABLE, None),
    ],
)
def test_tables_have_the_indexes_the_services_query(assembly, table, indexes):
    _, resource = assembly.one(DATA_STACK, "AWS::DynamoDB::Table", TableName=table)
    properties = resource["Properties"]

    found = properties.get("GlobalSecondaryIndexes")
    if indexes is None:
        assert found is None
        return
    assert [
        (index["IndexName"], [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]])
        for index in found
    ] == indexes
    # The report reads every attribute of a block from the index, with no read of the table.
    assert all(index["Projection"] == {"ProjectionType": "ALL"} for index in found)


def test_reports_bucket_is_private_encrypted_versioned_and_ssl_only(assembly):
    template = assembly.assertions[DATA_STACK]
    key, bucket = assembly.one(DATA_STACK, "AWS::S3::Bucket")
    properties = assembly.render(DATA_STACK, bucket["Properties"])

    assert properties["BucketName"] == f"{naming.PREFIX}-reports-<AWS::AccountId>-<AWS::Region>"
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
    }
    template.has_resource_properties(
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


def test_project_event_bus_is_named(assembly):
    assembly.assertions[DATA_STACK].has_resource_properties(
        "AWS::Events::EventBus", {"Name": naming.EVENT_BUS}
    )


def test_approval_topic_is_encrypted_and_ssl_only(assembly):
    template = assembly.assertions[DECIDE_STACK]
    key, topic = assembly.one(DECIDE_STACK, "AWS::SNS::Topic", TopicName=naming.APPROVAL_TOPIC)

    assert assembly.render(DECIDE_STACK, topic["Properties"]["KmsMasterKeyId"]) == (
        "arn:<AWS::Partition>:kms:<AWS::Region>:<AWS::AccountId>:alias/aws/sns"
    )
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": key}],
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


@pytest.mark.parametrize(
    ("name", "version"), [(naming.WAF_IPV4_SET, "IPV4"), (naming.WAF_IPV6_SET, "IPV6")]
)
def test_waf_ip_sets_are_regional_and_start_empty(assembly, name, version):
    _, ip_set = assembly.one(MITIGATE_STACK, "AWS::WAFv2::IPSet", Name=name)

    assert ip_set["Properties"]["Scope"] == "REGIONAL"
    assert ip_set["Properties"]["IPAddressVersion"] == version
    assert ip_set["Properties"]["Addresses"] == []


def test_expiry_sweep_runs_every_quarter_hour(assembly):
    rules = assembly.resources(MITIGATE_STACK, "AWS::Events::Rule").values()
    (rule,) = [assembly.render(MITIGATE_STACK, r["Properties"]) for r in rules]

    assert rule["ScheduleExpression"] == "rate(15 minutes)"
    (target,) = rule["Targets"]
    assert target["Arn"] == f"<AWS::Lambda::Function {naming.FUNCTIONS['expire']}.Arn>"


@pytest.mark.parametrize("role", sorted(naming.FUNCTIONS))
def test_function_runs_python_312_with_the_layer_tracing_and_its_log_group(assembly, role):
    spec = FUNCTIONS[role]
    stack, properties = assembly.function(spec.name)
    properties = assembly.render(stack, properties)

    assert properties["Runtime"] == "python3.12"
    assert properties["Architectures"] == ["x86_64"]
    assert properties["Handler"] == spec.handler
    assert properties["Timeout"] == spec.timeout_seconds
    assert properties["MemorySize"] == spec.memory_mb
    assert properties["TracingConfig"] == {"Mode": "Active"}
    assert properties["Layers"] == [f"<AWS::Lambda::LayerVersion {config.DEPENDENCIES_LAYER}>"]
    assert properties["LoggingConfig"] == {
        "LogGroup": f"<AWS::Logs::LogGroup /aws/lambda/{spec.name}>"
    }
    # Only the WAF writer holds a reserved concurrency: one, so that it is the one writer.
    reserved = config.WAF_WRITER_CONCURRENCY if role == "waf_writer" else None
    assert properties.get("ReservedConcurrentExecutions") == reserved

    _, log_group = assembly.one(
        stack, "AWS::Logs::LogGroup", LogGroupName=f"/aws/lambda/{spec.name}"
    )
    assert (
        log_group["Properties"]["RetentionInDays"] == config.CONTEXT_DEFAULTS["log_retention_days"]
    )


@pytest.mark.parametrize("role", sorted(naming.FUNCTIONS))
def test_function_handler_is_a_callable_of_its_service_package(role):
    # The handler string names a function the bundle of its service holds
    spec = FUNCTIONS[role]
    module_name, _, attribute = spec.handler.rpartition(".")

    assert module_name.startswith(f"services.{spec.service}.")
    assert callable(getattr(importlib.import_module(module_name), attribute))


MITIGATION_ENV = {
    "BLOCKS_TABLE": naming.BLOCKS_TABLE,
    "ACTIONS_TABLE": naming.ACTIONS_TABLE,
    "NACL_ENTRY_LIMIT": "20",
    "INDICATORS_TABLE": naming.INDICATORS_TABLE,
    "WAF_SCOPE": "REGIONAL",
    "WAF_IPV4_SET_NAME": naming.WAF_IPV4_SET,
    "WAF_IPV6_SET_NAME": naming.WAF_IPV6_SET,
    "NACL_RULE_RANGE": "50-99",
    "DEFAULT_BLOCK_TTL_SECONDS": "86400",
    "WAF_CHANGES_QUEUE_URL": f"<AWS::SQS::Queue {naming.WAF_CHANGES_QUEUE}>",
}
ENVIRONMENT = {
    "receive": {
        "STATE_MACHINE_ARN": (
            f"arn:<AWS::Partition>:states:{REGION}:stateMachine:{naming.STATE_MACHINE}"
        ),
        "QUARANTINE_QUEUE_URL": f"<AWS::SQS::Queue {naming.INTAKE_DLQ}>",
    },
    "ingest": {},
    "enrich": {"INDICATORS_TABLE": naming.INDICATORS_TABLE},
    "decide": {
        "POLICY_PARAMETER": naming.POLICY_PARAMETER,
        "BUDGET_TABLE": naming.BUDGET_TABLE,
    },
    "request_approval": {
        "APPROVALS_TABLE": naming.APPROVALS_TABLE,
        "APPROVAL_TOPIC_ARN": f"<AWS::SNS::Topic {naming.APPROVAL_TOPIC}>",
        "ESCALATION_TOPIC_ARN": f"<AWS::SNS::Topic {naming.APPROVAL_ESCALATION_TOPIC}>",
    },
    "mitigate": MITIGATION_ENV,
    "expire": MITIGATION_ENV,
    "waf_writer": {
        "BLOCKS_TABLE": naming.BLOCKS_TABLE,
        "WAF_SCOPE": "REGIONAL",
        "WAF_IPV4_SET_NAME": naming.WAF_IPV4_SET,
        "WAF_IPV6_SET_NAME": naming.WAF_IPV6_SET,
    },
    "report": {
        "INCIDENTS_TABLE": naming.INCIDENTS_TABLE,
        "APPROVALS_TABLE": naming.APPROVALS_TABLE,
        "BLOCKS_TABLE": naming.BLOCKS_TABLE,
        "REPORTS_BUCKET": f"{naming.PREFIX}-reports-<AWS::AccountId>-<AWS::Region>",
        "EVENT_BUS_NAME": naming.EVENT_BUS,
        # On by default; TheHive's settings only when its context is given.
        "SECURITY_HUB_UPDATES": "true",
    },
    "summary": {
        "INCIDENTS_TABLE": naming.INCIDENTS_TABLE,
        "BLOCKS_TABLE": naming.BLOCKS_TABLE,
        "ACTIONS_TABLE": naming.ACTIONS_TABLE,
        "REPORTS_BUCKET": f"{naming.PREFIX}-reports-<AWS::AccountId>-<AWS::Region>",
        "SUMMARY_PERIOD_DAYS": "7",
    },
    "approvals": {
        "APPROVALS_TABLE": naming.APPROVALS_TABLE,
        "APPROVERS_GROUP": naming.APPROVERS_GROUP,
        "APPROVER_ROLE_PATTERNS": "",
    },
    "beacons": {
        "ATHENA_WORKGROUP": naming.BEACONS_WORKGROUP,
        "GLUE_DATABASE": naming.FLOW_LOGS_DATABASE,
        "FLOW_LOGS_TABLE": naming.FLOW_LOGS_TABLE,
        "EVENT_BUS_NAME": naming.EVENT_BUS,
        "WINDOW_HOURS": "24",
        "MIN_SCORE": "0.7",
        "MAX_FINDINGS": "25",
    },
}


@pytest.mark.parametrize("role", sorted(naming.FUNCTIONS))
def test_function_environment_is_the_contract(assembly, role):
    spec = FUNCTIONS[role]
    stack, properties = assembly.function(spec.name)

    variables = assembly.render(stack, properties["Environment"]["Variables"])

    assert variables == {
        "POWERTOOLS_SERVICE_NAME": spec.name.removeprefix(f"{naming.PREFIX}-"),
        "LOG_LEVEL": "INFO",
        **ENVIRONMENT[role],
    }
