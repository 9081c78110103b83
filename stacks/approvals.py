"""CloudSniper-Approvals: the approvals API, its function and the group of the approvers."""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from cloud_sniper.domain import naming
from stacks import references
from stacks.config import (
    APPROVALS_ACCESS_LOG_GROUP,
    APPROVALS_API_BURST_LIMIT,
    APPROVALS_API_RATE_LIMIT,
    APPROVALS_API_STAGE,
    FUNCTIONS,
    Settings,
)
from stacks.nag import acknowledge
from stacks.service_function import ServiceCode, ServiceFunction

# One line of JSON per request: who called what, and how it ended.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "userArn": "$context.identity.userArn",
    "sourceIp": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "error": "$context.error.message",
    "integrationError": "$context.integration.error",
}


class ApprovalsStack(Stack):
    """An API Gateway REST API, IAM-authorized on every method, in front of one function."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.approvers = iam.Group(self, "Approvers", group_name=naming.APPROVERS_GROUP)
        self.function = self._function(settings)
        self.api = self._api(settings)
        self._allow_approvers()

        # The API's own output of its URL, under a name the command looks for; never an export.
        output = self.api.node.find_child("Endpoint")
        assert isinstance(output, CfnOutput)
        output.override_logical_id(naming.APPROVALS_API_URL_OUTPUT)
        output.description = (
            "The approvals API's URL, where `cloud-sniper approvals` sends requests"
        )

    def _function(self, settings: Settings) -> ServiceFunction:
        function = ServiceFunction(
            self,
            "Approvals",
            spec=FUNCTIONS["approvals"],
            code=ServiceCode(self),
            settings=settings,
            environment={
                "APPROVALS_TABLE": naming.APPROVALS_TABLE,
                "APPROVERS_GROUP": naming.APPROVERS_GROUP,
                "APPROVER_ROLE_PATTERNS": ",".join(settings.approver_role_arns),
            },
        )
        approvals = references.table(self, naming.APPROVALS_TABLE)
        approvals.grant(function.role, "dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem")
        # The waiting tasks are the pipeline's: answered on it and on nothing else.
        function.allow(
            "AnswerTasks",
            ["states:SendTaskSuccess", "states:SendTaskFailure"],
            [references.state_machine(self).state_machine_arn],
        )
        function.allow("ReadApprovers", ["iam:GetGroup"], [self.approvers.group_arn])
        roles = function.allow(
            "ReadRoles",
            ["iam:GetRole"],
            [self.format_arn(service="iam", region="", resource="role", resource_name="*")],
        )
        acknowledge(
            roles,
            "AwsSolutions-IAM5",
            "A session names its role but not the role's path; the function reads the role's "
            "ARN, path included, to match it against the approver role patterns. GetRole reads "
            "a role's description, never its credentials.",
            "Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:role/*",
        )
        return function

    def _api(self, settings: Settings) -> apigateway.RestApi:
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            log_group_name=APPROVALS_ACCESS_LOG_GROUP,
            retention=settings.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        api = apigateway.RestApi(
            self,
            "Api",
            rest_api_name=naming.APPROVALS_API,
            description="Cloud Sniper approvals: list, read, approve and deny (IAM authorization)",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # API Gateway writes its logs through the account's role for it (one per region).
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigateway.StageOptions(
                stage_name=APPROVALS_API_STAGE,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT)),
                throttling_rate_limit=APPROVALS_API_RATE_LIMIT,
                throttling_burst_limit=APPROVALS_API_BURST_LIMIT,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                tracing_enabled=True,
                metrics_enabled=True,
            ),
            default_method_options=apigateway.MethodOptions(
                authorization_type=apigateway.AuthorizationType.IAM
            ),
        )
        integration = apigateway.LambdaIntegration(self.function.function, allow_test_invoke=False)
        approvals = api.root.add_resource("approvals")
        approval = approvals.add_resource("{id}")
        methods = [
            approvals.add_method("GET", integration),
            approval.add_method("GET", integration),
            approval.add_resource("approve").add_method("POST", integration),
            approval.add_resource("deny").add_method("POST", integration),
        ]
        self._acknowledge_api(api, methods)
        return api

    def _allow_approvers(self) -> None:
        """The approvers group may call the API; the function checks membership again."""
        invoke = iam.Policy(
            self,
            "InvokeApprovals",
            statements=[
                iam.PolicyStatement(
                    actions=["execute-api:Invoke"],
                    resources=[
                        self.format_arn(
                            service="execute-api",
                            resource=self.api.rest_api_id,
                            resource_name=f"{APPROVALS_API_STAGE}/*/approvals*",
                            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
                        )
                    ],
                )
            ],
            groups=[self.approvers],
        )
        acknowledge(
            invoke,
            "AwsSolutions-IAM5",
            "Approvers call every method of the approvals API's stage, and only those: the "
            "wildcards stand for the HTTP method and the approval's id in the path.",
            f"Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:"
            f"<ApiF70053CD>/{APPROVALS_API_STAGE}/*/approvals*",
        )

    def _acknowledge_api(self, api: apigateway.RestApi, methods: list[apigateway.Method]) -> None:
        acknowledge(
            api.node.find_child("Resource"),
            "AwsSolutions-APIG2",
            "The function validates each body itself and answers 400 with the field at fault; "
            "a gateway validator would answer first, with a message that names nothing.",
        )
        acknowledge(
            api.deployment_stage,
            "AwsSolutions-APIG3",
            "Every method needs a SigV4 signature of an IAM principal allowed to invoke it, and "
            "the stage is throttled; a WAF web ACL would add cost and no caller.",
        )
        for method in methods:
            acknowledge(
                method,
                "AwsSolutions-COG4",
                "IAM authorization on purpose: approvers are IAM users of the approvers group "
                "or roles of the organization's sign-in, not users of a Cognito pool.",
            )
        acknowledge(
            api.node.find_child("CloudWatchRole"),
            "AwsSolutions-IAM4",
            "API Gateway's own role for writing logs to CloudWatch uses the managed policy AWS "
            "made for it (AmazonAPIGatewayPushToCloudWatchLogs).",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs",
        )
