"""Names, sizes and settings of the infrastructure, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_logs as logs

from cloud_sniper.domain import naming
from cloud_sniper.domain.nacl_rules import RuleRange

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Stack ids, also the CloudFormation stack names: `cdk deploy -e <id>` redeploys one alone.
DATA_STACK = "CloudSniper-Data"
INGEST_STACK = "CloudSniper-Ingest"
ENRICH_STACK = "CloudSniper-Enrich"
DECIDE_STACK = "CloudSniper-Decide"
MITIGATE_STACK = "CloudSniper-Mitigate"
REPORT_STACK = "CloudSniper-Report"
PIPELINE_STACK = "CloudSniper-Pipeline"
SERVICE_STACKS = (INGEST_STACK, ENRICH_STACK, DECIDE_STACK, MITIGATE_STACK, REPORT_STACK)
# Deployed to each member account (by a StackSet), never to the administrator's: the role
# mitigate and expire assume there.
MEMBER_ROLE_STACK = "CloudSniper-MemberRole"
# The construct ids of the functions acting in member accounts, in MITIGATE_STACK. CloudFormation
# names their roles "<stack>-<construct id>Role<hash>-<suffix>": the member role trusts those.
RESPONDERS = ("Mitigate", "Expire")

DEPENDENCIES_LAYER = f"{naming.PREFIX}-dependencies"
PIPELINE_LOG_GROUP = f"/aws/vendedlogs/states/{naming.STATE_MACHINE}"
WAF_SCOPE = "REGIONAL"


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function: the service bundle it runs from, its entry point and its size."""

    role: str  # its key in naming.FUNCTIONS
    service: str  # the services/<service>/ package shipped in its bundle
    handler: str
    timeout_seconds: int
    description: str
    memory_mb: int = 256

    @property
    def name(self) -> str:
        return naming.FUNCTIONS[self.role]

    @property
    def service_name(self) -> str:
        """POWERTOOLS_SERVICE_NAME: the function's name without the project prefix."""
        return self.name.removeprefix(f"{naming.PREFIX}-")

    @property
    def timeout(self) -> Duration:
        return Duration.seconds(self.timeout_seconds)


FUNCTIONS = {
    spec.role: spec
    for spec in (
        FunctionSpec(
            "receive",
            "ingest",
            "services.ingest.handler.receive",
            30,
            "Starts one pipeline execution per GuardDuty finding delivered to the intake queue",
        ),
        FunctionSpec(
            "ingest",
            "ingest",
            "services.ingest.handler.normalize",
            10,
            "Normalizes a GuardDuty finding delivery into a Finding",
        ),
        FunctionSpec(
            "enrich",
            "enrich",
            "services.enrich.handler.handler",
            15,
            "Records a finding's indicators and returns what was known of them",
        ),
        FunctionSpec(
            "decide",
            "decide",
            "services.decide.handler.decide",
            15,
            "Applies the response policy and the safety rules to a finding",
        ),
        FunctionSpec(
            "request_approval",
            "decide",
            "services.decide.handler.request_approval",
            15,
            "Asks a person to approve the planned actions and parks the task token",
        ),
        FunctionSpec(
            "mitigate",
            "mitigate",
            "services.mitigate.handler.mitigate",
            60,
            "Applies the planned blocks in WAF IP sets and network ACLs",
        ),
        FunctionSpec(
            "expire",
            "mitigate",
            "services.mitigate.handler.expire",
            300,
            "Removes the blocks whose time is up",
        ),
        FunctionSpec(
            "waf_writer",
            "mitigate",
            "services.mitigate.handler.waf_writer",
            60,
            "Applies the queued WAF IP set changes, one update per set per interval",
        ),
        FunctionSpec(
            "report",
            "report",
            "services.report.handler.report",
            30,
            "Writes the incident, its report and its event",
        ),
    )
}

# SQS redelivers a message whose processing outlives the visibility timeout; AWS advises six
# times the consumer's timeout so a retried batch cannot overlap the first attempt.
INTAKE_VISIBILITY_TIMEOUT = Duration.seconds(6 * FUNCTIONS["receive"].timeout_seconds)
INTAKE_RETENTION = Duration.days(4)
INTAKE_MAX_RECEIVE_COUNT = 5
INTAKE_BATCH_SIZE = 10
INTAKE_BATCHING_WINDOW = Duration.seconds(1)
DLQ_RETENTION = Duration.days(14)

# The WAF writer: one function, alone on its queue, takes a whole interval's changes at once.
WAF_WRITER_CONCURRENCY = 1
# Lambda's event source mapping polls with two pollers at the least; the one reserved
# concurrency throttles the second, whose batch returns to the queue, hence the receive count.
WAF_WRITER_POLLERS = 2
WAF_CHANGES_BATCH_SIZE = 10_000  # the most a standard queue's event source mapping takes
WAF_CHANGES_MAX_RECEIVE_COUNT = 10
WAF_CHANGES_RETENTION = Duration.days(4)

# EventBridge retries a failed delivery to the queue this often and this long, then dead-letters.
RULE_RETRY_ATTEMPTS = 8
RULE_MAX_EVENT_AGE = Duration.hours(2)

EXPIRY_SCHEDULE = Duration.minutes(15)
REPORT_VERSIONS_KEPT = Duration.days(90)

# The state machine's retry of a step: short, since a finding waits for it.
RETRY_ERRORS = [
    "TransientAwsError",
    "Lambda.ServiceException",
    "Lambda.TooManyRequestsException",
    "Lambda.SdkClientException",
]
RETRY_INTERVAL = Duration.seconds(1)
RETRY_MAX_ATTEMPTS = 4
RETRY_BACKOFF_RATE = 2

# CDK context keys and their defaults; cdk.json sets the same values (a test keeps them equal).
CONTEXT_DEFAULTS: dict[str, Any] = {
    "policy": "cloud_sniper/data/default-policy.yaml",
    "nacl_rule_range": "50-99",
    "nacl_entry_limit": 20,
    "block_ttl_seconds": 86400,
    "log_level": "INFO",
    "log_retention_days": 90,
    "alarm_period_minutes": 5,
    # The WAF writer's interval: how long its event source mapping gathers changes into a batch.
    "waf_writer_interval_seconds": 30,
}

_RETENTION = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A CDK context value is invalid; the message names the key."""


@dataclass(frozen=True)
class Settings:
    """The deployment's settings, read from the CDK context over the defaults above."""

    policy: Path
    nacl_rule_range: str
    nacl_entry_limit: int
    block_ttl_seconds: int
    log_level: str
    log_retention: logs.RetentionDays
    alarm_period: Duration
    waf_writer_interval: Duration = Duration.seconds(30)

    @property
    def waf_changes_visibility_timeout(self) -> Duration:
        """AWS's advice for a batching window: six times the consumer's timeout, plus the window."""
        timeout = FUNCTIONS["waf_writer"].timeout_seconds
        return Duration.seconds(6 * timeout + self.waf_writer_interval.to_seconds())

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Settings:
        """Validate the context at synth, so a typo fails here rather than in a Lambda."""
        values = {**CONTEXT_DEFAULTS, **{k: v for k, v in context.items() if v is not None}}

        policy = Path(str(values["policy"]))
        policy = policy if policy.is_absolute() else PROJECT_ROOT / policy
        if not policy.is_file():
            raise ConfigError(f"context policy: no such file {policy}")
        try:
            nacl_rule_range = str(RuleRange.parse(str(values["nacl_rule_range"])))
        except ValueError as exc:
            raise ConfigError(f"context nacl_rule_range: {exc}") from exc
        nacl_entry_limit = _positive_int(values, "nacl_entry_limit")
        if nacl_entry_limit > 40:
            raise ConfigError(
                f"context nacl_entry_limit: {nacl_entry_limit} is over 40, the most AWS allows"
            )
        log_level = str(values["log_level"]).upper()
        if log_level not in _LOG_LEVELS:
            raise ConfigError(f"context log_level: {log_level!r} is not one of {_LOG_LEVELS}")
        retention_days = _positive_int(values, "log_retention_days")
        if retention_days not in _RETENTION:
            raise ConfigError(
                f"context log_retention_days: {retention_days} is not one of {sorted(_RETENTION)}"
            )

        interval = _positive_int(values, "waf_writer_interval_seconds")
        if interval > 300:
            raise ConfigError(
                f"context waf_writer_interval_seconds: {interval} is over 300, the longest "
                "batching window Lambda allows"
            )

        return cls(
            policy=policy,
            nacl_rule_range=nacl_rule_range,
            nacl_entry_limit=nacl_entry_limit,
            block_ttl_seconds=_positive_int(values, "block_ttl_seconds"),
            log_level=log_level,
            log_retention=_RETENTION[retention_days],
            alarm_period=Duration.minutes(_positive_int(values, "alarm_period_minutes")),
            waf_writer_interval=Duration.seconds(interval),
        )


def _positive_int(values: Mapping[str, Any], key: str) -> int:
    # Context from the command line (-c key=value) arrives as a string.
    try:
        number = int(values[key])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"context {key}: {values[key]!r} is not a whole number") from exc
    if number <= 0:
        raise ConfigError(f"context {key}: {number} is not positive")
    return number
