"""Stand-ins for the pipeline steps around the approval, run in-process as Lambda handlers.

The approval path of the real state machine runs with the real request-approval function; the
steps before and after it only hand over what the test set here, and record what they got.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# What Decide returns: set by the test before it starts an execution.
DECISION: dict[str, Any] = {}
# Every input the Mitigate and Report stand-ins received, in order.
MITIGATED: list[dict[str, Any]] = []
REPORTED: list[dict[str, Any]] = []


def ingest(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The execution's input carries the finding already normalized."""
    return event["event"]


def enrich(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {}


def decide(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return DECISION


def mitigate(event: dict[str, Any], context: Any) -> dict[str, Any]:
    MITIGATED.append(event)
    at = datetime.now(UTC).isoformat()
    results = [
        {
            "action_id": action["id"],
            "kind": action["kind"],
            "target": action["target"],
            "status": "applied",
            "at": at,
        }
        for action in event["decision"]["actions"]
    ]
    return {"results": results}


def report(event: dict[str, Any], context: Any) -> dict[str, Any]:
    REPORTED.append(event)
    return {"reported": True}
