"""The incident report as one self-contained HTML page: inline CSS, no script, nothing to fetch.

Rendered with Jinja2 with autoescape on: every value from a finding, an approver or AWS is
text on the page, never markup. The page's Content-Security-Policy forbids scripts and any
request, so even markup that slipped through could neither run nor reach the network.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from services.report.nist import (
    IncidentReport,
    duration,
    failure_message,
    milestones,
    summarize,
    when,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "incident.html.j2"


def render_html(report: IncidentReport) -> str:
    """The report as an HTML page."""
    failure = report.failure
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            report=report,
            summary=summarize(report),
            analysis=report.detection_and_analysis,
            containment=report.containment_eradication_recovery,
            activity=report.post_incident_activity,
            times=report.response_times,
            milestones=milestones(report),
            failure_text=(failure_message(failure.cause) or "no cause given") if failure else None,
        )
    )


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = lambda at: when(at) if at else "–"
    environment.filters["duration"] = duration
    return environment
