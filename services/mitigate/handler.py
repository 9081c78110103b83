"""Lambda entry points: mitigate (a state of the pipeline) and expire (on a schedule)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger

from cloud_sniper.domain.models import Decision, Finding, Model
from services.mitigate.actions import Ports, apply_actions, expire_blocks
from services.mitigate.adapters import build_ports
from services.mitigate.settings import load_settings

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
