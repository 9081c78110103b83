"""The report of an escalated approval: answered after the escalation, or timed out after it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from cloud_sniper.domain.models import Outcome
from services.report.incident import ReportRequest, build_incident
from services.report.nist import Timeline, incident_report
from services.report.nist_markdown import render_markdown

REPORTED_AT = datetime(2024, 5, 1, 12, 45, 0, tzinfo=UTC)
FIRST_TIMEOUT = {"Error": "States.Timeout", "Cause": ""}


def escalating(event) -> dict:
    """A report request whose decision escalated its approval, then waited again."""
    request = copy.deepcopy(event("report-request-mitigated.json"))
    state = request["state"]
    state["decision"].update(
        mode="approval", approval_timeout_seconds=3600, on_approval_timeout="escalate"
    )
    # The first wait's timeout stays in the state: the escalation's Catch took it there.
    state["approval_error"] = FIRST_TIMEOUT
    return request


def markdown_of(request: dict) -> tuple[Outcome, str]:
    incident = build_incident(ReportRequest.model_validate(request), REPORTED_AT)
    report = incident_report(incident, Timeline(missing="not read in this test"))
    return incident.outcome, render_markdown(report)


def test_an_escalation_nobody_answered_is_reported_as_timed_out_after_escalation(event):
    # Given an escalated approval whose escalation timed out too
    request = escalating(event)
    del request["state"]["mitigation"]

    # When it is reported, then it timed out, and the report says after the escalation
    outcome, markdown = markdown_of(request)
    assert outcome is Outcome.TIMED_OUT
    assert (
        "No one answered the approval request within 3600 s, nor its escalation within 3600 s "
        "more; it timed out after escalation."
    ) in markdown


def test_an_answer_to_the_escalation_decides_despite_the_first_timeout(event):
    # Given an escalated approval answered yes, then mitigated
    request = escalating(event)
    request["state"]["approval"] = {
        "approval_id": "apr-0123",
        "status": "approved",
        "requested_at": "2024-05-01T10:30:10Z",
        "escalated_at": "2024-05-01T11:30:11Z",
        "expires_at": "2024-05-01T12:30:11Z",
        "approver": "arn:aws:iam::111122223333:user/duty-manager",
        "reason": "confirmed",
        "answered_at": "2024-05-01T11:41:00Z",
    }

    # When it is reported, then the answer decides: mitigated, escalated at its time
    outcome, markdown = markdown_of(request)
    assert outcome is Outcome.MITIGATED
    assert "- Escalated: 2024-05-01" in markdown
    assert "timed out" not in markdown


def test_a_denying_policy_reports_a_plain_timeout(event):
    # Given an approval nobody answered, under a policy that denies on timeout
    request = escalating(event)
    request["state"]["decision"]["on_approval_timeout"] = "deny"
    del request["state"]["mitigation"]

    # When it is reported, then it timed out, with no word of an escalation
    outcome, markdown = markdown_of(request)
    assert outcome is Outcome.TIMED_OUT
    assert "No one answered the approval request within 3600 s; it timed out." in markdown
    assert "escalation" not in markdown
