"""The bundled demo: GuardDuty findings about the seeded estate, one for each pipeline path."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from cloud_sniper.local.faults import FaultRule

# The finding about this address meets a WAF that throttles every write, to show the retries and
# the failure report.
THROTTLED_ADDRESS = "89.248.165.84"

DEMO_FAULTS = [
    FaultRule(service="wafv2", operation="UpdateIPSet", body_contains=THROTTLED_ADDRESS),
]


def demo_findings(estate: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """The demo's findings, their placeholders filled with the seeded estate's identifiers."""
    folder = resources.files("cloud_sniper.demo") / "findings"
    documents = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".json"):
            continue
        text = entry.read_text()
        for role, identifier in estate.items():
            text = text.replace("{{" + role + "}}", identifier)
        documents.append((f"demo/{entry.name}", json.loads(text)))
    return documents
