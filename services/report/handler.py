"""Lambda entry point of the report step: the incident recorded, written up and announced."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloud_sniper.domain import naming
from services.report import incident as incidents
from services.report import integrations, nist, nist_html, nist_markdown
from services.report.adapters import (
    ApprovalsTable,
    BlocksTable,
    EventBus,
    ExecutionHistory,
    IncidentsTable,
    ReportsBucket,
    dynamodb_table,
    events_client,
    s3_client,
    stepfunctions_client,
)
from services.report.settings import Settings

if TYPE_CHECKING:
    from services.report.security_hub_adapter import SecurityHubFindings
    from services.report.thehive_adapter import TheHiveCases

logger = Logger()


@dataclass(frozen=True)
class Dependencies:
    """Where the report step reads and writes."""

    incidents: IncidentsTable
    approvals: ApprovalsTable
    blocks: BlocksTable
    bucket: ReportsBucket
    bus: EventBus
    history: ExecutionHistory
    # The integrations, None when off.
    security_hub: SecurityHubFindings | None = None
    thehive: TheHiveCases | None = None


@functools.cache
def _dependencies() -> Dependencies:
    # Built at the first invocation, not at import: the local runtime imports under moto.
    settings = Settings.from_env()
    return Dependencies(
        incidents=IncidentsTable(dynamodb_table(settings.incidents_table)),
        approvals=ApprovalsTable(dynamodb_table(settings.approvals_table)),
        blocks=BlocksTable(dynamodb_table(settings.blocks_table)),
        bucket=ReportsBucket(s3_client(), settings.reports_bucket),
        bus=EventBus(events_client(), settings.event_bus_name),
        history=ExecutionHistory(stepfunctions_client()),
        security_hub=integrations.security_hub_of(settings),
        thehive=integrations.thehive_of(settings),
    )


@logger.inject_lambda_context(clear_state=True)
def report(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Record the execution's incident, write its reports and announce it on the project bus."""
    request = incidents.ReportRequest.model_validate(event)
    incident = incidents.build_incident(request, datetime.now(UTC))
    logger.append_keys(incident_id=incident.incident_id, execution_name=request.execution_name)
    if request.state.model_extra:
        logger.warning(
            "unknown state keys ignored", extra={"keys": sorted(request.state.model_extra)}
        )
    dependencies = _dependencies()
    timeline = nist.read_timeline(request.execution_arn, dependencies.history.events)
    if timeline.missing:
        logger.warning("execution history not read", extra={"reason": timeline.missing})
    incident = nist.incident_report(incident, timeline)

    # An escalated approval answered in time keeps its first wait's timeout beside the answer.
    if request.state.approval_error is not None and request.state.approval is None:
        timed_out = dependencies.approvals.time_out(request.execution_name, incident.reported_at)
        logger.info("approval timed out", extra={"approval_id": timed_out})
    if incidents.wants_blocks_in_force(incident):
        items = dependencies.blocks.in_force(incident.incident_id)
        incident = incidents.with_blocks_in_force(incident, items)
        if incident.blocks_in_force:
            blocks = [block.block_id for block in incident.blocks_in_force]
            logger.warning("blocks in force after a failure", extra={"block_ids": blocks})

    # The reports show the finding's activity over every delivery recorded so far.
    previous = dependencies.incidents.get(incident.incident_id)
    incident = incidents.with_deliveries(incident, previous)

    keys = incidents.report_keys(incident)
    dependencies.bucket.put(keys.json, nist.render_json(incident), "application/json")
    dependencies.bucket.put(
        keys.markdown, nist_markdown.render_markdown(incident), "text/markdown; charset=utf-8"
    )
    dependencies.bucket.put(keys.html, nist_html.render_html(incident), "text/html; charset=utf-8")
    item = dependencies.incidents.upsert(
        incident.incident_id, lambda previous: incidents.incident_item(incident, keys, previous)
    )
    dependencies.bus.publish(
        naming.INCIDENT_REPORTED_DETAIL_TYPE,
        incidents.event_detail(incident, keys, dependencies.bucket.name),
    )
    # Last, once the incident is recorded and announced: neither can fail the report.
    delivered = integrations.deliver(
        incident,
        request.state.event,
        integrations.report_location(dependencies.bucket.name, keys.markdown),
        hub=dependencies.security_hub,
        cases=dependencies.thehive,
    )

    logger.info(
        "incident reported",
        extra={
            "outcome": incident.outcome.value,
            "deliveries": item["deliveries"] if item else None,
            "record_kept": item is None,
        },
    )
    return {
        "incident_id": incident.incident_id,
        "outcome": incident.outcome.value,
        "report_keys": keys.as_dict(),
        **({"integrations": delivered} if delivered else {}),
    }
