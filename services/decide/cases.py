"""TheHive: the case of an incident waiting for approval opens with a task asking to answer it.

The report step brings the case up to date when the execution ends (observables, ATT&CK,
the report's location) and closes the task once the approval is answered or has timed out.
"""

from __future__ import annotations

from datetime import datetime

from cloud_sniper.domain.approvals import ApprovalRecord
from services.decide.approval_request import ApprovalRequest
from services.report import thehive
from services.report.incident import PipelineState, ReportRequest, build_incident

# What the case says of the report before there is one.
REPORT_PENDING = "written when the execution ends"


def open_case(
    request: ApprovalRequest, record: ApprovalRecord, store: thehive.CaseStore, now: datetime
) -> thehive.SyncResult:
    """Create or update the incident's case, with a task for this pending approval."""
    state = PipelineState(
        incident_id=request.incident_id,
        finding=request.finding,
        decision=request.decision,
        approval=record.approval(),
    )
    incident = build_incident(
        ReportRequest(
            state=state,
            execution_name=request.execution_name,
            execution_started_at=record.requested_at,
        ),
        now,
    )
    return thehive.sync(incident, REPORT_PENDING, store)
