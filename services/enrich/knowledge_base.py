"""The indicator knowledge base: what earlier findings taught about each indicator of a finding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cloud_sniper.domain.attack import mapping_for
from cloud_sniper.domain.models import Enrichment, Finding, Indicator, IndicatorHistory


@dataclass(frozen=True)
class Sighting:
    """One finding naming an indicator, as the knowledge base records it."""

    finding_id: str
    finding_type: str
    account_id: str
    at: datetime


class IndicatorStore(Protocol):
    """Where indicators are remembered between findings."""

    def record(self, indicator: Indicator, sighting: Sighting) -> Mapping[str, Any] | None:
        """Record the sighting and return the indicator's item as it was just before, if any."""
        ...


def sighting_of(finding: Finding, at: datetime) -> Sighting:
    """Describe the finding as one sighting of each of its indicators."""
    return Sighting(
        finding_id=finding.id,
        finding_type=finding.type,
        account_id=finding.account_id,
        at=at,
    )


def unique_indicators(finding: Finding) -> list[Indicator]:
    """The finding's indicators, once each, in the order the finding names them."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for indicator in finding.indicators:
        key = (indicator.kind.value, indicator.value)
        if key not in seen:
            seen.add(key)
            unique.append(indicator)
    return unique


def history(
    indicator: Indicator, before: Mapping[str, Any] | None, sighting: Sighting
) -> IndicatorHistory:
    """Tell what the knowledge base knew of the indicator before this finding.

    `before` is the stored item just before the store recorded this sighting. When the finding
    was already in it, this is a redelivery: its own sighting is taken back out, so a finding
    reads the same history however many times it arrives.
    """
    item = before or {}
    finding_ids = set(item.get("finding_ids") or ())
    sightings = int(item.get("sightings") or 0)
    if sighting.finding_id in finding_ids:
        sightings -= 1
    sightings = max(sightings, 0)

    # Types learned from this finding alone are not history.
    finding_types = sorted(item.get("finding_types") or ()) if sightings else []
    return IndicatorHistory(
        kind=indicator.kind,
        value=indicator.value,
        seen_before=sightings > 0,
        sightings=sightings,
        first_seen=_timestamp(item.get("first_seen"), sighting.at),
        last_seen=_timestamp(item.get("last_seen"), sighting.at),
        finding_types=finding_types,
        blocked_before=bool(item.get("blocked_before")),
        block_state=item.get("block_state") or None,
    )


def enrich(finding: Finding, store: IndicatorStore, now: datetime) -> Enrichment:
    """Record the finding against each of its indicators; return their history and its ATT&CK."""
    sighting = sighting_of(finding, now)
    histories = [
        history(indicator, store.record(indicator, sighting), sighting)
        for indicator in unique_indicators(finding)
    ]
    return Enrichment(indicators=histories, attack=mapping_for(finding.type))


def _timestamp(value: Any, default: datetime) -> datetime:
    # An item written only by the mitigate service has block attributes but no sighting times.
    if not value:
        return default
    return datetime.fromisoformat(str(value))
