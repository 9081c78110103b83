"""Resources of other stacks, found by their fixed names: never a CloudFormation export.

Each stack can then be deployed alone (`cdk deploy -e CloudSniper-Mitigate`); the names come
from cloud_sniper.domain.naming, which the services read too.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cloud_sniper.domain import naming


def table(scope: Construct, name: str) -> dynamodb.ITable:
    """A table of the data stack."""
    return dynamodb.Table.from_table_name(scope, f"Table-{name}", name)


def table_index_arn(scope: Construct, table_name: str, index_name: str) -> str:
    """The ARN of one index of a table of the data stack, and of nothing else."""
    return Stack.of(scope).format_arn(
        service="dynamodb", resource="table", resource_name=f"{table_name}/index/{index_name}"
    )


def reports_bucket(scope: Construct) -> s3.IBucket:
    """The reports bucket, named after the account and region it is deployed to."""
    stack = Stack.of(scope)
    name = naming.reports_bucket(stack.account, stack.region)
    return s3.Bucket.from_bucket_name(scope, "ReportsBucket", name)


def event_bus(scope: Construct) -> events.IEventBus:
    """The project's event bus."""
    return events.EventBus.from_event_bus_name(scope, "ProjectBus", naming.EVENT_BUS)


def function_arn(scope: Construct, role: str) -> str:
    """The ARN of a pipeline function, by its role in naming.FUNCTIONS."""
    return Stack.of(scope).format_arn(
        service="lambda",
        resource="function",
        resource_name=naming.FUNCTIONS[role],
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


def state_machine(scope: Construct) -> sfn.IStateMachine:
    """The pipeline state machine."""
    return sfn.StateMachine.from_state_machine_name(scope, "Pipeline", naming.STATE_MACHINE)
