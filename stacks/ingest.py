"""CloudSniper-Ingest: GuardDuty and Security Hub findings into the intake queue, and readers."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cloud_sniper.domain import asff, naming
from stacks import config, references
from stacks.config import FUNCTIONS, Settings
from stacks.queues import queue_with_dead_letters
from stacks.service_function import ServiceCode, ServiceFunction


class IngestStack(Stack):
    """From a GuardDuty or Security Hub finding on either bus to a started pipeline execution."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.dead_letter_queue, self.intake_queue = self._build_queues()
        self._build_rules()

        code = ServiceCode(self)
        pipeline = references.state_machine(self)
        self.receive = ServiceFunction(
            self,
            "Receive",
            spec=FUNCTIONS["receive"],
            code=code,
            settings=settings,
            environment={
                "STATE_MACHINE_ARN": pipeline.state_machine_arn,
                "QUARANTINE_QUEUE_URL": self.dead_letter_queue.queue_url,
            },
        )
        self.receive.function.add_event_source(
            sources.SqsEventSource(
                self.intake_queue,
                batch_size=config.INTAKE_BATCH_SIZE,
                max_batching_window=config.INTAKE_BATCHING_WINDOW,
                report_batch_item_failures=True,
            )
        )
        pipeline.grant_start_execution(self.receive.role)
        # Invalid events are set aside with the error as a message attribute.
        self.dead_letter_queue.grant(self.receive.role, "sqs:SendMessage")

        self.ingest = ServiceFunction(
            self, "Ingest", spec=FUNCTIONS["ingest"], code=code, settings=settings
        )
        self._build_alarm(settings)

    def _build_queues(self) -> tuple[sqs.Queue, sqs.Queue]:
        return queue_with_dead_letters(
            self,
            "Intake",
            queue_name=naming.INTAKE_QUEUE,
            dead_letter_queue_name=naming.INTAKE_DLQ,
            visibility_timeout=config.INTAKE_VISIBILITY_TIMEOUT,
            retention_period=config.INTAKE_RETENTION,
            max_receive_count=config.INTAKE_MAX_RECEIVE_COUNT,
        )

    def _build_rules(self) -> None:
        target = targets.SqsQueue(
            self.intake_queue,
            dead_letter_queue=self.dead_letter_queue,
            retry_attempts=config.RULE_RETRY_ATTEMPTS,
            max_event_age=config.RULE_MAX_EVENT_AGE,
        )
        events.Rule(
            self,
            "GuardDutyFindings",
            description="GuardDuty findings of this account and region, into the intake queue",
            event_pattern=events.EventPattern(
                source=["aws.guardduty"], detail_type=[naming.FINDING_DETAIL_TYPE]
            ),
            targets=[target],
        )
        # GuardDuty's findings come this way too, as the same incident and execution as above.
        # Resolved, suppressed and archived findings are left out by receive, not here: a rule
        # matches an event when any of its findings matches, and the local runtime's emulated
        # rules cannot read into the findings array.
        events.Rule(
            self,
            "SecurityHubFindings",
            description="Security Hub findings imported in this account and region, into the "
            "intake queue",
            event_pattern=events.EventPattern(
                source=[asff.SECURITY_HUB_SOURCE], detail_type=[asff.IMPORTED_DETAIL_TYPE]
            ),
            targets=[target],
        )
        events.Rule(
            self,
            "ProjectBusFindings",
            description="Findings and replays sent to the Cloud Sniper bus, into the intake queue",
            event_bus=references.event_bus(self),
            event_pattern=events.EventPattern(
                source=[naming.EVENT_SOURCE],
                detail_type=[naming.FINDING_DETAIL_TYPE, naming.REPLAY_DETAIL_TYPE],
            ),
            targets=[target],
        )

    def _build_alarm(self, settings: Settings) -> None:
        cloudwatch.Alarm(
            self,
            "DeadLetters",
            alarm_name=f"{naming.INTAKE_DLQ}-not-empty",
            alarm_description="Findings could not be delivered or read: see the messages' error",
            metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=settings.alarm_period, statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
