"""Lambda entry points: mitigate (a state of the pipeline), expire (on a schedule), waf_writer."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger

from cloud_sniper.domain.models import Decision, Finding, Model
from services.mitigate.actions import Ports, apply_actions, expire_blocks
from services.mitigate.adapters import build_ports, build_writer_ports
from services.mitigate.settings import load_settings, load_writer_settings
from services.mitigate.waf_writer import WriterPorts, parse_records, write_changes

logger = Logger()


class MitigateRequest(Model):
    """The Mitigate task's input, picked from the execution state."""

    finding: Finding
    decision: Decision
    incident_id: str
    dry_run: bool = False


@cache
def ports() -> Ports:
    """The adapters, built at first use so the local runtime can run this under moto."""
    return build_ports(load_settings())


@cache
def writer_ports() -> WriterPorts:
    """The WAF writer's adapters, built at first use as ports() is."""
    return build_writer_ports(load_writer_settings())


def mitigate(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Apply the decision's actions: {"finding","decision","dry_run","incident_id"} → results."""
    request = MitigateRequest.model_validate(event)
    logger.append_keys(incident_id=request.incident_id, finding_id=request.finding.id)
    logger.info("mitigation started", extra={"dry_run": request.dry_run})

    results = apply_actions(
        request.finding,
        request.decision,
        request.incident_id,
        request.dry_run,
        datetime.now(UTC),
        ports(),
    )

    return {"results": [result.model_dump(mode="json") for result in results]}


def expire(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lift the blocks whose expiry has passed; return how many were checked, lifted and left."""
    report = expire_blocks(datetime.now(UTC), ports())
    return {
        "checked": report.checked,
        "expired": len(report.expired),
        "remaining": report.remaining,
        "failed": len(report.failed),
        "failed_blocks": sorted(report.failed),
    }


def waf_writer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Apply a batch of the WAF changes queue: SQS records → the messages to hand back."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise ValueError("event: not an SQS batch, it has no Records list")

    queued, invalid = parse_records(records)
    report = write_changes(queued, writer_ports(), datetime.now(UTC))

    failed = list(dict.fromkeys([*invalid, *report.failed]))
    logger.info(
        "waf changes done",
        extra={
            "messages": len(records),
            "writes": report.writes,
            "added": report.added,
            "removed": report.removed,
            "stale": report.stale,
            "refused": report.refused,
            "invalid": len(invalid),
            "failed": len(failed),
        },
    )
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
