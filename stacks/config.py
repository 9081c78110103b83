"""Names, sizes and settings of the infrastructure, in one place."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aws_cdk import Duration
from aws_cdk import aws_logs as logs

from cloud_sniper.domain import naming
from cloud_sniper.domain.nacl_rules import RuleRange
from services.approvals.access import check_role_pattern

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Stack ids, also the CloudFormation stack names: `cdk deploy -e <id>` redeploys one alone.
DATA_STACK = "CloudSniper-Data"
INGEST_STACK = "CloudSniper-Ingest"
ENRICH_STACK = "CloudSniper-Enrich"
DECIDE_STACK = "CloudSniper-Decide"
MITIGATE_STACK = "CloudSniper-Mitigate"
REPORT_STACK = "CloudSniper-Report"
PIPELINE_STACK = "CloudSniper-Pipeline"
# The approvals API: `cloud-sniper approvals` finds it by this stack's output.
APPROVALS_STACK = naming.APPROVALS_API_STACK
# The scheduled beacon scan: Athena over the flow logs, its findings onto the project bus.
BEACONS_STACK = naming.BEACONS_STACK
SERVICE_STACKS = (
    INGEST_STACK,
    ENRICH_STACK,
    DECIDE_STACK,
    MITIGATE_STACK,
    REPORT_STACK,
    APPROVALS_STACK,
    BEACONS_STACK,
)
# Deployed to each member account (by a StackSet), never to the administrator's: the role
# mitigate and expire assume there.
MEMBER_ROLE_STACK = "CloudSniper-MemberRole"
# The construct ids of the functions acting in member accounts, in MITIGATE_STACK. CloudFormation
# names their roles "<stack>-<construct id>Role<hash>-<suffix>": the member role trusts those.
RESPONDERS = ("Mitigate", "Expire")

DEPENDENCIES_LAYER = f"{naming.PREFIX}-dependencies"
PIPELINE_LOG_GROUP = f"/aws/vendedlogs/states/{naming.STATE_MACHINE}"
WAF_SCOPE = "REGIONAL"
# The approvals API's one stage, and its throttling: a few people answering, never a flood.
APPROVALS_API_STAGE = "v1"
APPROVALS_API_RATE_LIMIT = 5  # requests per second, steady
APPROVALS_API_BURST_LIMIT = 10
APPROVALS_ACCESS_LOG_GROUP = f"/aws/apigateway/{naming.APPROVALS_API}"


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
            # Room for Security Hub and TheHive, each bounded to well under 20 s.
            60,
            "Writes the incident, its report and its event",
        ),
        FunctionSpec(
            "summary",
            "report",
            "services.report.summary_handler.summary",
            120,
            "Writes the summary of the last period's incidents to the reports bucket",
            memory_mb=512,
        ),
        FunctionSpec(
            "approvals",
            "approvals",
            "services.approvals.handler.handler",
            15,
            "Lists and answers approvals for the approvals API, resuming the waiting executions",
        ),
        FunctionSpec(
            "beacons",
            "beacons",
            "services.beacons.handler.scan",
            # Athena's query over a day of an estate's flow logs takes minutes, not seconds.
            900,
            "Scans the flow logs for beacons with Athena, verifies the best; each one goes on "
            "the project bus as a finding",
            # Lambda's CPU grows with memory: a full vCPU for the verification's transforms.
            memory_mb=1769,
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
    # The scheduled summary: every so many days, of the days since the last one.
    "summary_period_days": 7,
    # Security Hub: each reported finding's workflow status and note (BatchUpdateFindings).
    "security_hub_updates": True,
    # TheHive 5, off unless both are set: its URL, and the name of the Secrets Manager secret
    # holding its API key.
    "thehive_url": None,
    "thehive_api_key_secret": None,
    # The name of the Secrets Manager secret holding a Slack incoming webhook's URL, to which
    # approval requests are posted too; empty, nothing goes to Slack.
    "slack_webhook_secret": "",
    # Role ARN patterns (comma separated, `*` and `?` as in the shell) of the roles whose
    # sessions may answer approvals, beside the IAM users of the approvers group; empty, none.
    "approver_role_arns": "",
    # The beacon scan: the bucket holding the VPC Flow Logs (Parquet, Hive-compatible prefixes,
    # hourly partitions; empty: cloud-sniper-flow-logs-<account>-<region>) and the prefix above
    # the year=/month=/day=/hour= folders, where {account} and {region} are this deployment's.
    "beacons_flow_logs_bucket": "",
    "beacons_flow_logs_prefix": (
        "AWSLogs/aws-account-id={account}/aws-service=vpcflowlogs/aws-region={region}/"
    ),
    # How often it runs, over how many hours back, and what it reports.
    "beacons_schedule_hours": 6,
    "beacons_window_hours": 24,
    "beacons_min_score": 0.7,
    "beacons_max_findings": 25,
    # Athena cancels a query that would scan more than this: a cap on a run's cost.
    "beacons_scan_limit_gb": 200,
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
_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# Secrets Manager's secret names: an ARN is refused, the stack makes it from the name.
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")


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
    summary_period_days: int = 7
    security_hub_updates: bool = True
    thehive_url: str | None = None
    thehive_api_key_secret: str | None = None
    slack_webhook_secret: str | None = None
    approver_role_arns: tuple[str, ...] = ()
    beacons: BeaconSettings = field(default_factory=lambda: BeaconSettings())

    @property
    def summary_schedule(self) -> Duration:
        """How often the summary runs: once a period, so the summaries cover every day once."""
        return Duration.days(self.summary_period_days)

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
            summary_period_days=_positive_int(values, "summary_period_days"),
            security_hub_updates=_flag(values, "security_hub_updates"),
            **_thehive(values),
            slack_webhook_secret=_slack_webhook_secret(values),
            approver_role_arns=_approver_role_arns(values),
            beacons=_beacons(values),
        )


def _flag(values: Mapping[str, Any], key: str) -> bool:
    value = values[key]
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in _FLAGS:
        return _FLAGS[str(value).strip().lower()]
    raise ConfigError(f"context {key}: {value!r} is not true or false")


def _thehive(values: Mapping[str, Any]) -> dict[str, str | None]:
    url = str(values.get("thehive_url") or "").strip() or None
    secret = str(values.get("thehive_api_key_secret") or "").strip() or None
    if url is None and secret is None:
        return {"thehive_url": None, "thehive_api_key_secret": None}
    if url is None or secret is None:
        missing = "thehive_url" if url is None else "thehive_api_key_secret"
        raise ConfigError(f"context {missing}: missing; TheHive needs its URL and its key's secret")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"context thehive_url: {url!r} is not an https:// URL")
    if not _SECRET_NAME.match(secret):
        raise ConfigError(
            f"context thehive_api_key_secret: {secret!r} is not a Secrets Manager secret name"
        )
    return {"thehive_url": url.rstrip("/"), "thehive_api_key_secret": secret}


def _slack_webhook_secret(values: Mapping[str, Any]) -> str | None:
    secret = str(values.get("slack_webhook_secret") or "").strip() or None
    if secret is not None and not _SECRET_NAME.match(secret):
        raise ConfigError(
            f"context slack_webhook_secret: {secret!r} is not a Secrets Manager secret name"
        )
    return secret


@dataclass(frozen=True)
class BeaconSettings:
    """The beacon scan's settings: where the flow logs are, how often and how far back."""

    flow_logs_bucket: str = ""  # empty: naming.flow_logs_bucket of the deployment
    flow_logs_prefix: str = CONTEXT_DEFAULTS["beacons_flow_logs_prefix"]
    schedule_hours: int = 6
    window_hours: int = 24
    min_score: float = 0.7
    max_findings: int = 25
    scan_limit_gb: int = 200

    def location(self, account: str, region: str) -> tuple[str, str]:
        """The bucket and the prefix of this deployment's flow logs."""
        bucket = self.flow_logs_bucket or naming.flow_logs_bucket(account, region)
        return bucket, self.flow_logs_prefix.format(account=account, region=region)


# An S3 bucket name, and the prefix's placeholders.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_FIELDS = re.compile(r"\{([^{}]*)\}")


def _beacons(values: Mapping[str, Any]) -> BeaconSettings:
    bucket = str(values.get("beacons_flow_logs_bucket") or "").strip()
    if bucket and not _BUCKET_NAME.match(bucket):
        raise ConfigError(f"context beacons_flow_logs_bucket: {bucket!r} is not a bucket name")
    prefix = str(values["beacons_flow_logs_prefix"]).strip()
    unknown = set(_PREFIX_FIELDS.findall(prefix)) - {"account", "region"}
    if unknown:
        raise ConfigError(
            f"context beacons_flow_logs_prefix: unknown placeholder(s) {sorted(unknown)}; "
            "only {account} and {region} are replaced"
        )
    if prefix.startswith("/") or (prefix and not prefix.endswith("/")):
        raise ConfigError(
            f"context beacons_flow_logs_prefix: {prefix!r} must not start with / and must end "
            "with /"
        )
    schedule = _positive_int(values, "beacons_schedule_hours")
    window = _positive_int(values, "beacons_window_hours")
    if window > 24 * 31:
        raise ConfigError(f"context beacons_window_hours: {window} is over 744 (31 days)")
    if window < schedule:
        raise ConfigError(
            f"context beacons_window_hours: {window} is shorter than beacons_schedule_hours "
            f"({schedule}): some hours would never be scanned"
        )
    try:
        min_score = float(values["beacons_min_score"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"context beacons_min_score: {values['beacons_min_score']!r} is not a number"
        ) from exc
    if not 0.0 <= min_score <= 1.0:
        raise ConfigError(f"context beacons_min_score: {min_score} is not from 0 to 1")
    max_findings = _positive_int(values, "beacons_max_findings")
    if max_findings > 1000:
        raise ConfigError(f"context beacons_max_findings: {max_findings} is over 1000")
    return BeaconSettings(
        flow_logs_bucket=bucket,
        flow_logs_prefix=prefix,
        schedule_hours=schedule,
        window_hours=window,
        min_score=min_score,
        max_findings=max_findings,
        scan_limit_gb=_positive_int(values, "beacons_scan_limit_gb"),
    )


def _approver_role_arns(values: Mapping[str, Any]) -> tuple[str, ...]:
    value = values.get("approver_role_arns") or ""
    patterns = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(check_role_pattern(str(p).strip()) for p in patterns if str(p).strip())
    except ValueError as exc:
        raise ConfigError(f"context approver_role_arns: {exc}") from exc


def _positive_int(values: Mapping[str, Any], key: str) -> int:
    # Context from the command line (-c key=value) arrives as a string.
    try:
        number = int(values[key])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"context {key}: {values[key]!r} is not a whole number") from exc
    if number <= 0:
        raise ConfigError(f"context {key}: {number} is not positive")
    return number
