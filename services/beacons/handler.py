"""Lambda entry point of the scheduled beacon scan: Athena over the flow logs, findings out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloud_sniper.domain.errors import TransientAwsError
from services.beacons import service
from services.beacons.adapters import build_ports
from services.beacons.service import BeaconScanError, Ports
from services.beacons.settings import Settings

logger = Logger()

# Kept back from the function's timeout for reading the results and publishing the findings.
RESERVE_SECONDS = 60


@cache
def _settings() -> Settings:
    return Settings.from_env()


@cache
def _ports() -> Ports:
    # Built at the first invocation, not at import: the local runtime imports under moto.
    return build_ports(_settings())


def clear_caches() -> None:
    """Forget the settings and the clients, as a cold start would."""
    _settings.cache_clear()
    _ports.cache_clear()


@logger.inject_lambda_context(clear_state=True)
def scan(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Scan the window ending at the schedule's time; publish a finding per beacon found."""
    at = _scheduled_time(event)
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - RESERVE_SECONDS
    logger.info("scan started", extra={"at": at.isoformat()})
    try:
        outcome = service.scan(_ports(), _settings(), at, deadline)
    except TransientAwsError as exc:
        logger.warning("scan will be retried", extra={"error": str(exc)})
        raise
    except BeaconScanError as exc:
        logger.error("scan failed", extra={"error": str(exc)})
        raise
    logger.info(
        "scan finished",
        extra={
            "query_id": outcome.query_id,
            "scanned_bytes": outcome.scanned_bytes,
            "candidates": outcome.candidates,
            "beacons": outcome.beacons,
            "published": outcome.published,
        },
    )
    if outcome.beacons > outcome.published:
        logger.warning(
            "findings capped",
            extra={"beacons": outcome.beacons, "published": outcome.published},
        )
    return outcome.model_dump(mode="json")


def _scheduled_time(event: Any) -> datetime:
    """The schedule's time (EventBridge's `time`), so a retried event scans the same window."""
    stamp = event.get("time") if isinstance(event, dict) else None
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            logger.warning("event time unreadable", extra={"time": stamp[:40]})
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.now(UTC)
