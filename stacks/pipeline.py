"""CloudSniper-Pipeline: the state machine that carries a finding from ingest to report."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from cloud_sniper.domain import naming
from stacks import config, references
from stacks.config import PIPELINE_LOG_GROUP, Settings
from stacks.nag import acknowledge

JsonPath = sfn.JsonPath


class PipelineStack(Stack):
    """Ingest, Enrich, Decide, then Mitigate at once or after approval, and Report always."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self._functions: dict[str, lambda_.IFunction] = {}

        report_failed = sfn.Fail(
            self,
            "ReportFailed",
            comment="The incident could not be written; the execution's history keeps its state",
            error_path="$.report_error.Error",
            cause_path="$.report_error.Cause",
        )
        report = self._task(
            "Report",
            "report",
            {
                # The whole document: approval, mitigation, failure and approval_error are each
                # absent on some paths, and a JsonPath to a missing field fails the state.
                "state": JsonPath.entire_payload,
                "execution_name": JsonPath.execution_name,
                "execution_started_at": JsonPath.execution_start_time,
                # Its ARN: the report reads the execution's history for its timeline.
                "execution_arn": JsonPath.execution_id,
            },
            result_path="$.report",
        )
        report.add_catch(report_failed, errors=[sfn.Errors.ALL], result_path="$.report_error")

        mitigate = self._step(
            "Mitigate",
            "mitigate",
            {
                "finding": JsonPath.object_at("$.finding"),
                "decision": JsonPath.object_at("$.decision"),
                "dry_run": JsonPath.object_at("$.dry_run"),
                "incident_id": JsonPath.string_at("$.incident_id"),
            },
            result_path="$.mitigation",
            on_failure=report,
        ).next(report)

        approved = (
            sfn.Choice(self, "Approved?")
            .when(sfn.Condition.string_equals("$.approval.status", "approved"), mitigate)
            .otherwise(report)
        )
        request_approval = self._request_approval(report, approved)
        mode = (
            sfn.Choice(self, "Mode?")
            .when(sfn.Condition.string_equals("$.decision.mode", "auto"), mitigate)
            .when(sfn.Condition.string_equals("$.decision.mode", "approval"), request_approval)
            # notify and ignore: nothing to do but report.
            .otherwise(report)
        )

        definition = (
            self._step(
                "Ingest",
                "ingest",
                # incident_id only labels the function's logs.
                {
                    "event": JsonPath.object_at("$.event"),
                    "incident_id": JsonPath.string_at("$.incident_id"),
                },
                result_path="$.finding",
                on_failure=report,
            )
            .next(
                self._step(
                    "Enrich",
                    "enrich",
                    {"finding": JsonPath.object_at("$.finding")},
                    result_path="$.enrichment",
                    on_failure=report,
                )
            )
            .next(
                self._step(
                    "Decide",
                    "decide",
                    {
                        "finding": JsonPath.object_at("$.finding"),
                        "enrichment": JsonPath.object_at("$.enrichment"),
                        # A dry run spends no budget; a retried Decide counts once.
                        "dry_run": JsonPath.object_at("$.dry_run"),
                        "execution": JsonPath.string_at("$$.Execution.Name"),
                    },
                    result_path="$.decision",
                    on_failure=report,
                )
            )
            .next(mode)
        )
        self.state_machine = self._state_machine(definition, settings)
        self._acknowledge_role()

    def _function(self, role: str) -> lambda_.IFunction:
        # The functions live in the service stacks: referred to by name, never by export.
        if role not in self._functions:
            self._functions[role] = lambda_.Function.from_function_arn(
                self, f"Function-{role}", references.function_arn(self, role)
            )
        return self._functions[role]

    def _task(
        self, state: str, role: str, payload: dict, *, result_path: str
    ) -> tasks.LambdaInvoke:
        """A Lambda task whose Resource is the function's ARN, with the step's retry."""
        task = tasks.LambdaInvoke(
            self,
            state,
            lambda_function=self._function(role),
            payload=sfn.TaskInput.from_object(payload),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path=result_path,
        )
        _retry(task)
        return task

    def _step(
        self,
        state: str,
        role: str,
        payload: dict,
        *,
        result_path: str,
        on_failure: sfn.IChainable,
    ) -> tasks.LambdaInvoke:
        task = self._task(state, role, payload, result_path=result_path)
        task.add_catch(on_failure, errors=[sfn.Errors.ALL], result_path="$.failure")
        return task

    def _request_approval(self, report: sfn.IChainable, answered: sfn.IChainable) -> sfn.Chain:
        """Ask for approval and wait for the answer, sent back with the task token.

        Unanswered in time, the policy decides: deny (report the timeout), or escalate once (ask
        the escalation topic, as long again, under the same approval); a second timeout is final.
        """
        escalate = self._wait_for_answer(
            "EscalateApproval", escalated=True, timed_out=report, report=report
        ).next(answered)

        on_timeout = "$.decision.on_approval_timeout"
        unanswered = (
            sfn.Choice(self, "Escalate?")
            .when(
                # Absent in a decision of a version before escalation: denied, as then.
                sfn.Condition.and_(
                    sfn.Condition.is_present(on_timeout),
                    sfn.Condition.string_equals(on_timeout, "escalate"),
                ),
                escalate,
            )
            .otherwise(report)
        )
        return self._wait_for_answer(
            "RequestApproval", escalated=False, timed_out=unanswered, report=report
        ).next(answered)

    def _wait_for_answer(
        self,
        state: str,
        *,
        escalated: bool,
        timed_out: sfn.IChainable,
        report: sfn.IChainable,
    ) -> tasks.LambdaInvoke:
        """A request-approval task that waits for its token, as long as the decision says."""
        payload = {
            "token": JsonPath.task_token,
            "finding": JsonPath.object_at("$.finding"),
            "decision": JsonPath.object_at("$.decision"),
            "incident_id": JsonPath.string_at("$.incident_id"),
            "execution_name": JsonPath.execution_name,
        }
        if escalated:
            payload["escalated"] = True
        task = tasks.LambdaInvoke(
            self,
            state,
            lambda_function=self._function("request_approval"),
            integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
            payload=sfn.TaskInput.from_object(payload),
            # The decision carries the matched rule's timeout, else the policy's default.
            task_timeout=sfn.Timeout.at("$.decision.approval_timeout_seconds"),
            retry_on_service_exceptions=False,
            result_path="$.approval",
        )
        _retry(task)
        task.add_catch(timed_out, errors=[sfn.Errors.TIMEOUT], result_path="$.approval_error")
        # A denial fails the task (SendTaskFailure), the answered approval as its cause.
        denied = self._denied(report)
        task.add_catch(denied, errors=[naming.APPROVAL_DENIED_ERROR], result_path="$.approval")
        task.add_catch(report, errors=[sfn.Errors.ALL], result_path="$.failure")
        return task

    def _denied(self, report: sfn.IChainable) -> sfn.IChainable:
        """Put a denial's approval, read from the caught error's cause, back in $.approval."""
        existing = self.node.try_find_child("ReadDenial")
        if isinstance(existing, sfn.Pass):
            return existing
        read = sfn.Pass(
            self,
            "ReadDenial",
            parameters={"answer": JsonPath.string_to_json(JsonPath.string_at("$.approval.Cause"))},
            result_path="$.approval",
        )
        denied = sfn.Pass(
            self, "ApprovalDenied", input_path="$.approval.answer", result_path="$.approval"
        )
        read.next(denied).next(report)
        return read

    def _state_machine(self, definition: sfn.IChainable, settings: Settings) -> sfn.StateMachine:
        log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=PIPELINE_LOG_GROUP,
            retention=settings.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        state_machine = sfn.StateMachine(
            self,
            "Pipeline",
            state_machine_name=naming.STATE_MACHINE,
            state_machine_type=sfn.StateMachineType.STANDARD,
            comment="Cloud Sniper: a GuardDuty finding from ingest to report",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=log_group,
                level=sfn.LogLevel.ALL,
                # States' inputs hold the approval task token; the execution history keeps them.
                include_execution_data=False,
            ),
        )
        cloudwatch.Alarm(
            self,
            "FailedExecutions",
            alarm_name=f"{naming.STATE_MACHINE}-failed",
            alarm_description="An execution failed: its incident may not have been reported",
            metric=state_machine.metric_failed(period=settings.alarm_period, statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        return state_machine

    def _acknowledge_role(self) -> None:
        policy = self.state_machine.role.node.find_child("DefaultPolicy")
        acknowledge(
            policy,
            "AwsSolutions-IAM5",
            "Log delivery to CloudWatch Logs and X-Ray tracing accept no resource but '*'.",
            "Resource::*",
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5",
            "Invoking a function by ARN is allowed for its versions and aliases too (ARN:*): "
            "the tasks call the unqualified ARN, and a qualifier would need a redeploy here.",
            *(
                "Resource::arn:<AWS::Partition>:lambda:<AWS::Region>:<AWS::AccountId>:function:"
                f"{naming.FUNCTIONS[role]}:*"
                for role in sorted(self._functions)
            ),
        )


def _retry(task: sfn.TaskStateBase) -> None:
    task.add_retry(
        errors=config.RETRY_ERRORS,
        interval=config.RETRY_INTERVAL,
        max_attempts=config.RETRY_MAX_ATTEMPTS,
        backoff_rate=config.RETRY_BACKOFF_RATE,
        jitter_strategy=sfn.JitterType.FULL,
    )
