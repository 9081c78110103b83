"""The bundled demo: GuardDuty findings about the seeded estate, one for each pipeline path."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from cloud_sniper.local.faults import FaultRule

# The finding about this address meets a WAF changes queue that throttles every change asked
# for it, to show the retries and the failure report. (The IP sets themselves are written by the
# WAF writer, out of the execution: a throttled set write is retried there.)
THROTTLED_ADDRESS = "89.248.165.84"

DEMO_FAULTS = [
    FaultRule(service="sqs", operation="SendMessage", body_contains=THROTTLED_ADDRESS),
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
