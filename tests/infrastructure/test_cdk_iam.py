"""Each function's role allows exactly the AWS calls the contract lists, on the resources named."""

from __future__ import annotations

import pytest

from cloud_sniper.domain import naming
from services.mitigate.catalogue import catalogue

ACCOUNT = "<AWS::Region>:<AWS::AccountId>"
TABLE = "arn:<AWS::Partition>:dynamodb:" + ACCOUNT + ":table/{}"
NETWORK_ACLS = f"arn:<AWS::Partition>:ec2:{ACCOUNT}:network-acl/*"
POLICY_PARAMETER = f"<AWS::SSM::Parameter {naming.POLICY_PARAMETER}>"
WAF_SETS = (
    f"<AWS::WAFv2::IPSet {naming.WAF_IPV4_SET}.Arn>",
    f"<AWS::WAFv2::IPSet {naming.WAF_IPV6_SET}.Arn>",
)


WAF_CHANGES_QUEUE = f"<AWS::SQS::Queue {naming.WAF_CHANGES_QUEUE}.Arn>"
# The member role of any account, to act on a finding of a member account there.
MEMBER_ROLE = (
    ("sts:AssumeRole",),
    (f"arn:<AWS::Partition>:iam::*:role/{naming.MEMBER_ROLE}",),
)


def blocks_statements(*nacl_actions: str, discards: bool = False) -> set:
    """What mitigate and expire share: the blocks, the WAF writer's queue, the network ACLs.

    Neither writes a WAF IP set: they ask the WAF writer, by its queue.
    """
    block_actions = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem")
    if discards:
        block_actions = tuple(sorted((*block_actions, "dynamodb:DeleteItem")))
    return {
        (("sqs:SendMessage",), (WAF_CHANGES_QUEUE,)),
        (("ec2:DescribeNetworkAcls",), ("*",)),
        (nacl_actions, (NETWORK_ACLS,)),
        (block_actions, (TABLE.format(naming.BLOCKS_TABLE),)),
        (("dynamodb:UpdateItem",), (TABLE.format(naming.INDICATORS_TABLE),)),
    }


def catalogue_statements(*, expiring_only: bool) -> set:
    """What each action of the response catalogue declares it needs, and the actions table."""
    table = TABLE.format(naming.ACTIONS_TABLE)
    table_actions = (
        ("dynamodb:PutItem", "dynamodb:Scan")
        if expiring_only
        else (
            "dynamodb:GetItem",
            "dynamodb:PutItem",
        )
    )
    statements = {(table_actions, (table,))}
    for action in catalogue().values():
        if expiring_only and not action.expires:
            continue
        for permission in action.permissions:
            resources = tuple(
                resource.format(
                    partition="<AWS::Partition>", region="<AWS::Region>", account="<AWS::AccountId>"
                )
                for resource in permission.resources
            )
            statements.add((tuple(sorted(permission.actions)), tuple(sorted(resources))))
    return statements


EXPECTED = {
    "receive": {
        (
            (
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ),
            (f"<AWS::SQS::Queue {naming.INTAKE_QUEUE}.Arn>",),
        ),
        (
            ("states:StartExecution",),
            (f"arn:<AWS::Partition>:states:{ACCOUNT}:stateMachine:{naming.STATE_MACHINE}",),
        ),
        (("sqs:SendMessage",), (f"<AWS::SQS::Queue {naming.INTAKE_DLQ}.Arn>",)),
    },
    "ingest": set(),
    "enrich": {
        (
            ("dynamodb:UpdateItem",),
            (TABLE.format(naming.INDICATORS_TABLE),),
        )
    },
    "decide": {
        (("ec2:DescribeAddresses", "ec2:DescribeNatGateways"), ("*",)),
        # What depends on a target, before an automatic disruptive action on it.
        (
            (
                "autoscaling:DescribeAutoScalingInstances",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetHealth",
            ),
            ("*",),
        ),
        (("s3:GetBucketWebsite",), ("arn:<AWS::Partition>:s3:::*",)),
        (("dynamodb:UpdateItem",), (TABLE.format(naming.BUDGET_TABLE),)),
        # The policy parameter alone, by its own ARN.
        (
            ("ssm:GetParameter",),
            (f"arn:<AWS::Partition>:ssm:{ACCOUNT}:parameter{POLICY_PARAMETER}",),
        ),
    },
    "request_approval": {
        # PutItem for a request, UpdateItem for its escalation.
        (("dynamodb:PutItem", "dynamodb:UpdateItem"), (TABLE.format(naming.APPROVALS_TABLE),)),
        (
            ("sns:Publish",),
            (
                f"<AWS::SNS::Topic {naming.APPROVAL_ESCALATION_TOPIC}>",
                f"<AWS::SNS::Topic {naming.APPROVAL_TOPIC}>",
            ),
        ),
    },
    "mitigate": blocks_statements(
        "ec2:CreateNetworkAclEntry", "ec2:DeleteNetworkAclEntry", discards=True
    )
    | catalogue_statements(expiring_only=False)
    | {MEMBER_ROLE},
    "expire": blocks_statements("ec2:DeleteNetworkAclEntry")
    | catalogue_statements(expiring_only=True)
    | {MEMBER_ROLE},
    # The one writer of the WAF IP sets: the two sets alone, its queue, and the blocks it marks.
    "waf_writer": {
        (("wafv2:GetIPSet", "wafv2:UpdateIPSet"), WAF_SETS),
        (("wafv2:ListIPSets",), ("*",)),
        (
            (
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ),
            (WAF_CHANGES_QUEUE,),
        ),
        (
            ("dynamodb:BatchGetItem", "dynamodb:UpdateItem"),
            (TABLE.format(naming.BLOCKS_TABLE),),
        ),
    },
    "report": {
        (
            ("dynamodb:GetItem", "dynamodb:PutItem"),
            (TABLE.format(naming.INCIDENTS_TABLE),),
        ),
        (
            ("dynamodb:UpdateItem",),
            (TABLE.format(naming.APPROVALS_TABLE),),
        ),
        # The blocks an incident left in force: the index alone, never the table itself.
        (
            ("dynamodb:Query",),
            (TABLE.format(f"{naming.BLOCKS_TABLE}/index/{naming.BLOCKS_BY_INCIDENT_INDEX}"),),
        ),
        (
            ("s3:PutObject",),
            (
                f"arn:<AWS::Partition>:s3:::{naming.PREFIX}-reports-<AWS::AccountId>-<AWS::Region>/*",
            ),
        ),
        (
            ("events:PutEvents",),
            (f"arn:<AWS::Partition>:events:{ACCOUNT}:event-bus/{naming.EVENT_BUS}",),
        ),
        # The finding's workflow status and note: on by default, TheHive off by default.
        (
            ("securityhub:BatchUpdateFindings",),
            (f"arn:<AWS::Partition>:securityhub:{ACCOUNT}:hub/default",),
        ),
        # Its own execution's history, for the report's timeline: the pipeline's executions only.
        (
            ("states:GetExecutionHistory",),
            (f"arn:<AWS::Partition>:states:{ACCOUNT}:execution:{naming.STATE_MACHINE}:*",),
        ),
    },
    # Reads by scan, writes under summaries/ alone.
    "summary": {
        (
            ("dynamodb:Scan",),
            tuple(
                sorted(
                    TABLE.format(name)
                    for name in (
                        naming.ACTIONS_TABLE,
                        naming.BLOCKS_TABLE,
                        naming.INCIDENTS_TABLE,
                    )
                )
            ),
        ),
        (
            ("s3:PutObject",),
            (
                f"arn:<AWS::Partition>:s3:::{naming.PREFIX}-reports-<AWS::AccountId>-"
                "<AWS::Region>/summaries/*",
            ),
        ),
    },
    # Reads and answers approvals, resumes the pipeline's waiting tasks, reads the approvers.
    "approvals": {
        (
            ("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"),
            (TABLE.format(naming.APPROVALS_TABLE),),
        ),
        (
            ("states:SendTaskFailure", "states:SendTaskSuccess"),
            (f"arn:<AWS::Partition>:states:{ACCOUNT}:stateMachine:{naming.STATE_MACHINE}",),
        ),
        (("iam:GetGroup",), (f"<AWS::IAM::Group {naming.APPROVERS_GROUP}.Arn>",)),
        (("iam:GetRole",), ("arn:<AWS::Partition>:iam::<AWS::AccountId>:role/*",)),
    },
    # Runs the scan's queries in its workgroup (Athena reads the flow logs and writes the
    # results with the function's credentials), finds the sources' instances, publishes.
    "beacons": {
        (
            (
                "athena:GetQueryExecution",
                "athena:GetQueryResults",
                "athena:StartQueryExecution",
                "athena:StopQueryExecution",
            ),
            (f"arn:<AWS::Partition>:athena:{ACCOUNT}:workgroup/{naming.BEACONS_WORKGROUP}",),
        ),
        (
            ("glue:GetDatabase", "glue:GetTable"),
            (
                f"arn:<AWS::Partition>:glue:{ACCOUNT}:catalog",
                f"arn:<AWS::Partition>:glue:{ACCOUNT}:database/{naming.FLOW_LOGS_DATABASE}",
                f"arn:<AWS::Partition>:glue:{ACCOUNT}:table/{naming.FLOW_LOGS_DATABASE}/"
                f"{naming.FLOW_LOGS_TABLE}",
            ),
        ),
        (
            ("s3:GetObject",),
            (
                f"arn:<AWS::Partition>:s3:::{naming.PREFIX}-flow-logs-<AWS::AccountId>-"
                "<AWS::Region>/AWSLogs/aws-account-id=<AWS::AccountId>/aws-service=vpcflowlogs/"
                "aws-region=<AWS::Region>/*",
            ),
        ),
        (
            ("s3:GetBucketLocation", "s3:ListBucket"),
            (
                f"arn:<AWS::Partition>:s3:::{naming.PREFIX}-flow-logs-<AWS::AccountId>-<AWS::Region>",
            ),
        ),
        (
            (
                "s3:AbortMultipartUpload",
                "s3:GetObject",
                "s3:ListMultipartUploadParts",
                "s3:PutObject",
            ),
            ("<AWS::S3::Bucket QueryResults655BC675.Arn>/queries/*",),
        ),
        (
            ("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"),
            ("<AWS::S3::Bucket QueryResults655BC675.Arn>",),
        ),
        (("ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces"), ("*",)),
        (
            ("events:PutEvents",),
            (f"arn:<AWS::Partition>:events:{ACCOUNT}:event-bus/{naming.EVENT_BUS}",),
        ),
    },
}


@pytest.mark.parametrize("role", sorted(naming.FUNCTIONS))
def test_function_role_allows_exactly_the_contract_calls(assembly, role):
    name = naming.FUNCTIONS[role]

    # Given the statements of every policy attached to the function's role
    statements = assembly.statements(name)

    # Then besides writing its own log group and its traces, it may do what the contract says
    running = {
        (
            ("logs:CreateLogStream", "logs:PutLogEvents"),
            (f"<AWS::Logs::LogGroup /aws/lambda/{name}.Arn>",),
        ),
        (("xray:PutTelemetryRecords", "xray:PutTraceSegments"), ("*",)),
    }
    assert statements == running | EXPECTED[role]


@pytest.mark.parametrize("role", sorted(naming.FUNCTIONS))
def test_function_role_has_no_managed_policy_and_trusts_only_lambda(assembly, role):
    stack, function = assembly.function(naming.FUNCTIONS[role])
    role_id = function["Role"]["Fn::GetAtt"][0]
    properties = assembly.templates[stack]["Resources"][role_id]["Properties"]

    assert "ManagedPolicyArns" not in properties
    assert properties["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
        }
    ]
