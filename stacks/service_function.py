"""A service function: one pipeline Lambda with its role, log group, layer and settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cloud_sniper import build
from stacks.config import DEPENDENCIES_LAYER, FunctionSpec, Settings
from stacks.nag import acknowledge


class ServiceCode:
    """The assets of one stack's functions: a bundle per service and the dependencies layer.

    One asset per bundle however many functions of the stack run from it. With a policy, the
    bundles carry it compiled to JSON (only the decide stack passes one).
    """

    def __init__(self, scope: Construct, policy: Path | None = None) -> None:
        self._scope = scope
        self._policy = policy
        self._bundles: dict[str, lambda_.Code] = {}
        self._layer: lambda_.ILayerVersion | None = None

    def bundle(self, service: str) -> lambda_.Code:
        """The staged bundle of services/<service>, as the code of a function."""
        if service not in self._bundles:
            path = build.stage_service(service, policy=self._policy)
            self._bundles[service] = lambda_.Code.from_asset(str(path))
        return self._bundles[service]

    def layer(self) -> lambda_.ILayerVersion:
        """The stack's version of the dependencies layer, built by pip once per machine."""
        if self._layer is None:
            path, digest = build.stage_layer()
            self._layer = lambda_.LayerVersion(
                self._scope,
                "Dependencies",
                layer_version_name=DEPENDENCIES_LAYER,
                description="aws-lambda-powertools and pydantic for the Cloud Sniper functions",
                code=lambda_.Code.from_asset(str(path), asset_hash=digest),
                compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
                compatible_architectures=[lambda_.Architecture.X86_64],
                removal_policy=RemovalPolicy.RETAIN,
            )
        return self._layer


class ServiceFunction(Construct):
    """A pipeline function whose role starts with nothing but its own log group and tracing."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: FunctionSpec,
        code: ServiceCode,
        settings: Settings,
        environment: Mapping[str, str] | None = None,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{spec.name}",
            retention=settings.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # A role of our own rather than AWSLambdaBasicExecutionRole, whose logs:* on every log
        # group is more than a function writing to one group needs.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs {spec.name}: {spec.description}"[:1000],
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=spec.name,
            description=spec.description,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            handler=spec.handler,
            code=code.bundle(spec.service),
            layers=[code.layer()],
            memory_size=spec.memory_mb,
            timeout=spec.timeout,
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
            environment={
                "POWERTOOLS_SERVICE_NAME": spec.service_name,
                "LOG_LEVEL": settings.log_level,
                **(environment or {}),
            },
        )
        self.log_group.grant(self.role, "logs:CreateLogStream", "logs:PutLogEvents")

        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "Python 3.12 on purpose: the dependencies layer is built by pip for CPython 3.12 "
            "wheels (build.LAYER_PLATFORM); moving the runtime means rebuilding the layer.",
        )
        acknowledge(
            self.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "X-Ray's PutTraceSegments and PutTelemetryRecords (active tracing) accept no "
            "resource but '*'.",
            "Resource::*",
        )

    def allow(
        self, construct_id: str, actions: Sequence[str], resources: Sequence[str]
    ) -> iam.Policy:
        """Attach a policy of its own, so a wildcard is acknowledged on it and nowhere else."""
        return iam.Policy(
            self,
            construct_id,
            statements=[iam.PolicyStatement(actions=list(actions), resources=list(resources))],
            roles=[self.role],
        )
