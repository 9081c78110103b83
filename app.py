"""The CDK app: wires the Cloud Sniper stacks together and makes no AWS call at synth.

`cdk synth` runs this file (see cdk.json); tests and the local runtime call build_app through
cloud_sniper.synth.synthesize.
"""

from __future__ import annotations

import os

import aws_cdk as cdk

from stacks import config
from stacks.approvals import ApprovalsStack
from stacks.beacons import BeaconsStack
from stacks.data import DataStack
from stacks.decide import DecideStack
from stacks.enrich import EnrichStack
from stacks.ingest import IngestStack
from stacks.member_role import MemberRoleStack
from stacks.mitigate import MitigateStack
from stacks.nag import apply_checks
from stacks.pipeline import PipelineStack
from stacks.report import ReportStack

_SERVICE_STACKS = {
    config.INGEST_STACK: IngestStack,
    config.ENRICH_STACK: EnrichStack,
    config.DECIDE_STACK: DecideStack,
    config.MITIGATE_STACK: MitigateStack,
    config.REPORT_STACK: ReportStack,
    config.APPROVALS_STACK: ApprovalsStack,
    config.BEACONS_STACK: BeaconsStack,
}


def environment() -> cdk.Environment | None:
    """The CLI's account and region when it knows them, else an environment-agnostic app."""
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEFAULT_REGION")
    if account and region:
        return cdk.Environment(account=account, region=region)
    return None


def build_app(app: cdk.App) -> dict[str, cdk.Stack]:
    """Add every stack to the app, with cdk-nag's AwsSolutions checks; return them by id."""
    settings = config.Settings.from_context(
        {key: app.node.try_get_context(key) for key in config.CONTEXT_DEFAULTS}
    )
    env = environment()

    data = DataStack(app, config.DATA_STACK, env=env, description="Cloud Sniper: shared state")
    stacks: dict[str, cdk.Stack] = {config.DATA_STACK: data}
    for stack_id, stack_class in _SERVICE_STACKS.items():
        stack = stack_class(
            app, stack_id, settings=settings, env=env, description=f"Cloud Sniper: {stack_id}"
        )
        # Order for `cdk deploy --all` only: the stacks share names, never exports.
        stack.add_stack_dependency(data)
        stacks[stack_id] = stack

    pipeline = PipelineStack(
        app,
        config.PIPELINE_STACK,
        settings=settings,
        env=env,
        description="Cloud Sniper: the pipeline state machine",
    )
    for stack_id in config.SERVICE_STACKS:
        pipeline.add_stack_dependency(stacks[stack_id])
    stacks[config.PIPELINE_STACK] = pipeline

    # For the member accounts (a StackSet deploys it): environment-agnostic, depending on
    # nothing of the administrator's stacks.
    stacks[config.MEMBER_ROLE_STACK] = MemberRoleStack(
        app,
        config.MEMBER_ROLE_STACK,
        description="Cloud Sniper: the role its functions assume in a member account",
    )

    apply_checks(app)
    return stacks


if __name__ == "__main__":
    cdk_app = cdk.App()
    build_app(cdk_app)
    cdk_app.synth()
