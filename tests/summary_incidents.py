"""A week of incidents as the incidents table holds them, built by the report step's own code.

The items come from tests/events/report-request-mitigated.json through build_incident,
incident_report and incident_item, so they follow the incident report wherever it goes.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.report.incident import ReportRequest, build_incident, incident_item, report_keys
from services.report.nist import Timeline, incident_report
from services.report.summary import Period

EVENTS = Path(__file__).parent / "events"
SINCE = datetime(2024, 4, 28, tzinfo=UTC)
UNTIL = datetime(2024, 5, 5, tzinfo=UTC)
PERIOD = Period(since=SINCE, until=UNTIL)
GENERATED_AT = datetime(2024, 5, 5, 0, 5, tzinfo=UTC)
# The sample's finding was first seen at 09:58, its execution started at 10:30:08.512 and
# applied its WAF block at 10:30:12 (the network ACL block was in force already).
SAMPLE_FROM_FIRST_SEEN = timedelta(minutes=32, seconds=12).total_seconds()
SAMPLE_FROM_START = 3.488


def sample_request() -> dict[str, Any]:
    return json.loads((EVENTS / "report-request-mitigated.json").read_text())


def incident(
    number: int,
    finding_type: str = "UnauthorizedAccess:EC2/SSHBruteForce",
    severity: float = 5.0,
    mode: str = "auto",
    statuses: tuple[str, ...] = ("applied", "already_applied"),
    indicators: list[dict[str, Any]] | None = None,
    first_seen: bool = True,
    approval: str | None = None,
    dry_run: bool = False,
    reported_at: datetime = datetime(2024, 5, 1, 10, 31, tzinfo=UTC),
) -> dict[str, Any]:
    """One incidents table item: the sample incident, changed as asked."""
    request = sample_request()
    state = request["state"]
    finding = state["finding"]
    state["incident_id"] = f"inc-{number:016x}"
    state["dry_run"] = dry_run
    finding["id"] = f"{number:032x}"
    finding["type"] = finding_type
    finding["severity"] = severity
    finding["severity_label"] = _label(severity)
    if not first_seen:
        finding.pop("first_seen")
    if indicators is not None:
        finding["indicators"] = indicators
        state["enrichment"]["indicators"] = []
    state["decision"]["mode"] = mode
    if mode in ("notify", "ignore"):
        state["decision"]["actions"] = state["decision"]["refusals"] = []
        state.pop("mitigation")
    else:
        for result, status in zip(state["mitigation"]["results"], statuses, strict=True):
            result["status"] = status
    if approval is not None:
        state["approval"] = {
            "approval_id": f"apr-{number}",
            "status": approval,
            "requested_at": "2024-05-01T10:30:10Z",
            "expires_at": "2024-05-01T11:30:10Z",
            "approver": "alice@example.com",
            "reason": "checked with the owner",
            "answered_at": "2024-05-01T10:41:00Z",
        }
        if approval != "approved":
            state.pop("mitigation")
    request["execution_name"] = f"{finding['id']}-20240501T103000-{number:08x}"

    built = build_incident(ReportRequest.model_validate(copy.deepcopy(request)), reported_at)
    report = incident_report(built, Timeline(missing="no execution history in these tests"))
    item = incident_item(report, report_keys(report), None)
    assert item is not None
    return item


def address(value: str) -> dict[str, Any]:
    return {"kind": "ipv4", "value": value, "role": "attacker", "direction": "inbound"}


def week() -> list[dict[str, Any]]:
    """Seven incidents of the period, a dry run, and one reported before the period."""
    return [
        incident(1),
        incident(
            2,
            "Recon:EC2/PortProbeUnprotectedPort",
            severity=2.0,
            first_seen=False,
            reported_at=datetime(2024, 5, 2, 8, 0, tzinfo=UTC),
        ),
        incident(
            3,
            "Backdoor:EC2/C&CActivity.B",
            severity=8.0,
            mode="approval",
            approval="denied",
            indicators=[
                address("203.0.113.99"),
                {"kind": "domain", "value": "c2.bad.example", "role": "target"},
            ],
        ),
        incident(
            4,
            "Backdoor:EC2/C&CActivity.B!DNS",
            severity=8.0,
            mode="approval",
            approval="approved",
            indicators=[
                {"kind": "domain", "value": "c2.bad.example", "role": "target"},
                {"kind": "domain", "value": "c2.bad.example", "role": "observed"},
            ],
        ),
        incident(
            5,
            "Stealth:IAMUser/CloudTrailLoggingDisabled",
            severity=2.0,
            mode="notify",
            indicators=[{"kind": "access_key", "value": "AKIAEXAMPLEKEY000001"}],
        ),
        incident(6, "UnauthorizedAccess:EC2/RDPBruteForce", severity=8.0, statuses=("failed",) * 2),
        incident(
            7,
            "Software and Configuration Checks/Vulnerabilities/CVE",
            severity=9.5,
            mode="notify",
            indicators=[],
        ),
        incident(8, dry_run=True),
        incident(9, reported_at=SINCE - timedelta(seconds=1)),
    ]


def _label(severity: float) -> str:
    if severity >= 9:
        return "Critical"
    if severity >= 7:
        return "High"
    return "Medium" if severity >= 4 else "Low"
