"""The incident report page in headless Chromium: no error, nothing fetched, markup as text."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from services.report import nist
from services.report.incident import ReportRequest, build_incident
from services.report.nist_html import render_html
from tests.browser import render_in_chromium

TITLE = "<script>alert(1)</script> is probing i-0abc1234def567890"
ARN = "arn:aws:states:us-east-1:111122223333:execution:cloud-sniper-pipeline:run-1"


def test_a_report_with_a_script_in_its_title_renders_it_as_text(event, tmp_path):
    # Given the report of an execution whose finding's title holds a script, with its timeline
    request = copy.deepcopy(event("report-request-mitigated.json"))
    request["state"]["finding"]["title"] = TITLE
    incident = build_incident(
        ReportRequest.model_validate(request), datetime(2024, 5, 1, 10, 41, 5, tzinfo=UTC)
    )
    history = event("execution-history-approved.json")["events"]
    timeline = nist.timeline_from(ARN, [nist.history_event(item) for item in history])
    page = tmp_path / "incident.html"
    page.write_text(render_html(nist.incident_report(incident, timeline)), encoding="utf-8")

    # When Chromium loads the page
    rendered = render_in_chromium(page, "incident-report-script-title")

    # Then nothing failed, nothing was fetched, and the title shows as the text it is
    assert rendered.console_errors == []
    assert rendered.page_errors == []
    assert rendered.blocked_requests == []
    assert TITLE in rendered.text
    assert "Containment, eradication and recovery" in rendered.text
    assert rendered.screenshot.is_file()
