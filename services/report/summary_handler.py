"""Lambda entry point of the scheduled summary: the last period's summary written to the bucket."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from cloud_sniper.domain import naming
from services.report import summary_render
from services.report.adapters import (
    ActionsTable,
    BlocksTable,
    IncidentsTable,
    ReportsBucket,
    dynamodb_table,
    s3_client,
)
from services.report.settings import SummarySettings
from services.report.summary import Period, Summary, period, summarize_period

logger = Logger()

SUMMARIES_PREFIX = "summaries/"


@dataclass(frozen=True)
class SummarySources:
    """The tables a summary reads."""

    incidents: IncidentsTable
    blocks: BlocksTable
    actions: ActionsTable

    @classmethod
    def from_session(cls, session: Any) -> SummarySources:
        """The project's tables, by their names, through a boto3 session (or a look-alike)."""
        dynamodb = session.resource("dynamodb")
        return cls(
            incidents=IncidentsTable(dynamodb.Table(naming.INCIDENTS_TABLE)),
            blocks=BlocksTable(dynamodb.Table(naming.BLOCKS_TABLE)),
            actions=ActionsTable(dynamodb.Table(naming.ACTIONS_TABLE)),
        )


class ScheduledEvent(BaseModel):
    """The schedule's event, of which only its time counts; since and until run a past period."""

    model_config = ConfigDict(extra="ignore")

    time: datetime | None = None
    since: datetime | None = None
    until: datetime | None = None


def summarize(sources: SummarySources, span: Period, now: datetime) -> Summary:
    """Read what the period holds from the tables and summarize it."""
    # TODO(summary-scan): no index orders the incidents by report time, so each summary scans
    # the whole table; an index on reported_at would read the period alone.
    return summarize_period(
        sources.incidents.reported_between(span.since, span.until),
        span,
        now,
        removed_blocks=sources.blocks.removed_between(span.since, span.until),
        undone_actions=sources.actions.undone_between(span.since, span.until),
    )


def summary_keys(span: Period) -> dict[str, str]:
    """The bucket key of each format of the period's summary."""
    name = summary_render.summary_name(span)
    return {
        name_of_format: f"{SUMMARIES_PREFIX}{name}{suffix}"
        for name_of_format, (_, suffix, _) in summary_render.FORMATS.items()
    }


@dataclass(frozen=True)
class Dependencies:
    """Where the summary reads and writes, and the length of its period."""

    sources: SummarySources
    bucket: ReportsBucket
    period: timedelta


@functools.cache
def _dependencies() -> Dependencies:
    # Built at the first invocation, not at import: the local runtime imports under moto.
    settings = SummarySettings.from_env()
    return Dependencies(
        sources=SummarySources(
            incidents=IncidentsTable(dynamodb_table(settings.incidents_table)),
            blocks=BlocksTable(dynamodb_table(settings.blocks_table)),
            actions=ActionsTable(dynamodb_table(settings.actions_table)),
        ),
        bucket=ReportsBucket(s3_client(), settings.reports_bucket),
        period=timedelta(days=settings.period_days),
    )


@logger.inject_lambda_context(clear_state=True)
def summary(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Write the summary of the period that ends at the schedule's time, in every format."""
    request = ScheduledEvent.model_validate(event or {})
    dependencies = _dependencies()
    now = datetime.now(UTC)
    until = request.until or request.time or now
    span = period(request.since or until - dependencies.period, until)
    logger.append_keys(since=span.since.isoformat(), until=span.until.isoformat())

    result = summarize(dependencies.sources, span, now)
    keys = summary_keys(span)
    for name_of_format, key in keys.items():
        render, _, content_type = summary_render.FORMATS[name_of_format]
        dependencies.bucket.put(key, render(result), content_type)

    if result.unreadable:
        logger.warning("records not read", extra={"unreadable": result.unreadable})
    logger.info(
        "summary written",
        extra={"incidents": result.incidents, "keys": sorted(keys.values())},
    )
    return {
        "since": span.since.isoformat(),
        "until": span.until.isoformat(),
        "incidents": result.incidents,
        "report_bucket": dependencies.bucket.name,
        "keys": keys,
    }
