"""Lambda entry points of the ingest service: receive deliveries, then ingest them as findings."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloud_sniper.domain.errors import InvalidFindingError, TransientAwsError
from services.ingest import intake
from services.ingest.adapters import AwsPipeline
from services.ingest.settings import ReceiveSettings

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS)


@functools.cache
def _pipeline() -> AwsPipeline:
    # Built at the first invocation, not at import: the local runtime imports under moto.
    settings = ReceiveSettings.from_env()
    return AwsPipeline(settings.state_machine_arn, settings.quarantine_queue_url)


@logger.inject_lambda_context(clear_state=True)
def receive(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Start one execution per finding in an SQS batch; report the deliveries to retry."""
    return process_partial_response(
        event=event, record_handler=_receive_record, processor=processor, context=context
    )


def _receive_record(record: SQSRecord) -> None:
    keys = {"message_id": record.message_id}
    try:
        receipts = intake.receive(
            record.body,
            source=intake.record_source(record.get("eventSourceARN"), record.message_id),
            received_at=intake.received_at(record.attributes.get("SentTimestamp")),
            pipeline=_pipeline(),
        )
    except TransientAwsError as exc:
        logger.warning("delivery will be retried", extra={**keys, "error": str(exc)})
        raise
    except Exception:
        logger.exception("delivery failed", extra=keys)
        raise

    for receipt in receipts:
        _log_receipt(receipt, {**keys, "source": receipt.source})


def _log_receipt(receipt: intake.Receipt, keys: dict[str, Any]) -> None:
    admission = receipt.admission
    if admission is None:
        logger.warning("delivery quarantined", extra={**keys, "error": receipt.error})
        return
    keys = {
        **keys,
        "outcome": receipt.outcome.value,
        "finding_id": admission.finding.id,
        "finding_type": admission.finding.type,
        "incident_id": admission.incident_id,
        "execution_name": admission.execution_name,
        "dry_run": admission.dry_run,
    }
    if receipt.outcome is intake.Outcome.SKIPPED:
        logger.info("finding skipped", extra={**keys, "reason": receipt.error})
        return
    logger.info("delivery received", extra=keys)


@logger.inject_lambda_context(clear_state=True)
def normalize(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Ingest state: STATE in, its delivery normalized to a Finding out."""
    if isinstance(event, dict):
        logger.append_keys(incident_id=event.get("incident_id"))
    try:
        finding = intake.ingest(event)
    except InvalidFindingError as exc:
        logger.warning("finding invalid", extra={"error": str(exc)})
        raise

    logger.append_keys(finding_id=finding.id, finding_type=finding.type)
    logger.info(
        "finding normalized",
        extra={"resource_kind": finding.resource.kind, "indicators": len(finding.indicators)},
    )
    return finding.model_dump(mode="json")
