"""An approval as the approvals table keeps it: the request, then its answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from cloud_sniper.domain.models import (
    Approval,
    ApprovalStatus,
    Indicator,
    Model,
    OnApprovalTimeout,
    PlannedAction,
    Refusal,
    Resource,
    SeverityLabel,
)


class FindingSummary(Model):
    """What an approver needs to know of the finding."""

    id: str
    type: str
    severity: float
    severity_label: SeverityLabel
    title: str = ""
    account_id: str
    region: str
    resource: Resource
    indicators: list[Indicator]


class ApprovalRecord(Model):
    """An item of the approvals table: the request, then its answer."""

    # Written here, answered by the CLI, read by the report: a field one of them adds must not
    # make the others fail.
    model_config = ConfigDict(extra="ignore")

    approval_id: str
    # Whoever holds the token can resume the execution: it stays out of dumps, logs and notices;
    # only the table keeps it, written there explicitly.
    token: str = Field(repr=False, exclude=True)
    status: ApprovalStatus
    incident_id: str
    execution_name: str
    finding: FindingSummary
    rule: str | None = None
    decision_reason: str
    actions: list[PlannedAction]
    refusals: list[Refusal] = []
    # What depends on each disruptive action's target, by action id, as the decision counted it.
    dependents: dict[str, list[str]] = {}
    on_timeout: OnApprovalTimeout = OnApprovalTimeout.DENY
    requested_at: datetime
    # When the current wait ends: the first one's end, then the escalation's.
    expires_at: datetime
    # When nobody had answered in time and the request went to the escalation topic.
    escalated_at: datetime | None = None
    approver: str | None = None
    reason: str | None = None
    answered_at: datetime | None = None

    def item(self) -> dict[str, Any]:
        """The record as stored in the approvals table, token included."""
        return {**self.model_dump(mode="json", exclude_none=True), "token": self.token}

    def approval(self) -> Approval:
        """The approval as the state machine receives it: no token, no request."""
        return Approval(
            approval_id=self.approval_id,
            status=self.status,
            requested_at=self.requested_at,
            expires_at=self.expires_at,
            approver=self.approver,
            reason=self.reason,
            answered_at=self.answered_at,
            escalated_at=self.escalated_at,
        )
