"""Lambda entry point of the enrich step: a finding in, its indicators' history out."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloud_sniper.domain.models import Finding, Model
from services.enrich import knowledge_base
from services.enrich.adapters import DynamoIndicatorStore, indicators_table
from services.enrich.settings import Settings

logger = Logger()


class EnrichRequest(Model):
    """The enrich task's input, as the state machine passes it."""

    finding: Finding


@functools.cache
def _store() -> DynamoIndicatorStore:
    # Built at the first invocation, not at import: the local runtime imports under moto.
    settings = Settings.from_env()
    return DynamoIndicatorStore(indicators_table(settings.indicators_table))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Record the finding in the knowledge base and return the Enrichment of its indicators."""
    finding = EnrichRequest.model_validate(event).finding
    logger.append_keys(finding_id=finding.id)

    enrichment = knowledge_base.enrich(finding, _store(), datetime.now(UTC))

    logger.info(
        "finding enriched",
        extra={
            "indicators": len(enrichment.indicators),
            "known_indicators": enrichment.known_indicators,
        },
    )
    return enrichment.model_dump(mode="json")
