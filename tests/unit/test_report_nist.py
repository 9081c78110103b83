"""The incident report by NIST SP 800-61's phases: timeline, phases, JSON schema, Markdown, HTML."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_sniper import build
from cloud_sniper.domain.models import ActionKind, ActionResult, ActionStatus, Incident
from services.report import nist
from services.report.incident import ReportRequest, build_incident, with_blocks_in_force
from services.report.nist_html import render_html
from services.report.nist_markdown import render_markdown
from services.report.nist_playbook import ENDINGS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DOC = ROOT / "docs" / "incident-report.schema.json"
REPORTED_AT = datetime(2024, 5, 1, 10, 41, 5, tzinfo=UTC)
ARN = "arn:aws:states:us-east-1:111122223333:execution:cloud-sniper-pipeline:run-1"
APPROVAL = {
    "approval_id": "apr-0123",
    "status": "approved",
    "requested_at": "2024-05-01T10:30:10Z",
    "expires_at": "2024-05-01T11:30:10Z",
    "approver": "arn:aws:iam::111122223333:user/alice",
    "reason": "known scanner",
    "answered_at": "2024-05-01T10:41:00Z",
}
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def history(event):
    """The history of an approved execution, as GetExecutionHistory returns it."""
    return event("execution-history-approved.json")["events"]


@pytest.fixture
def approved(event):
    """A report request for an approved block, whose actions were applied."""
    request = copy.deepcopy(event("report-request-mitigated.json"))
    request["state"]["decision"]["mode"] = "approval"
    request["state"]["approval"] = APPROVAL
    return request


def incident_from(request: dict) -> Incident:
    return build_incident(ReportRequest.model_validate(request), REPORTED_AT)


def report_from(request: dict, history: list[dict] | None = None) -> nist.IncidentReport:
    timeline = nist.Timeline(missing="not read in this test")
    if history is not None:
        timeline = nist.timeline_from(ARN, [nist.history_event(e) for e in history])
    return nist.incident_report(incident_from(request), timeline)


# --- the timeline -------------------------------------------------------------------------------


def test_the_timeline_has_each_state_entered_and_exited_with_its_attempts(history):
    # Given the history of an execution approved, then mitigated on a second attempt
    events = [nist.history_event(event) for event in history]

    # When its timeline is read
    timeline = nist.timeline_from(ARN, events)

    # Then every state is there in order, with its times, and the report's own still runs
    assert [visit.name for visit in timeline.states] == [
        "Ingest",
        "Enrich",
        "Decide",
        "Mode?",
        "RequestApproval",
        "Approved?",
        "Mitigate",
        "Report",
    ]
    assert timeline.started_at == datetime(2024, 5, 1, 10, 30, 8, 512000, tzinfo=UTC)
    mitigate = timeline.states[6]
    assert (mitigate.type, mitigate.attempts, mitigate.failures) == ("Task", 2, 1)
    assert mitigate.seconds == 3.5
    assert timeline.states[3].type == "Choice"
    report = timeline.states[-1]
    assert (report.exited_at, report.seconds, report.attempts) == (None, None, 1)


def test_the_history_is_copied_without_inputs_or_outputs(history, approved):
    # Given a history whose inputs and outputs hold the approval's task token
    [scheduled] = [event for event in history if event["type"] == "TaskScheduled"]
    token = json.loads(scheduled["taskScheduledEventDetails"]["parameters"])["Payload"]["token"]

    # When the report is written in every format
    report = report_from(approved, history)
    written = render_json(report) + render_markdown(report) + render_html(report)

    # Then only state names, event types and times were kept: the token is nowhere
    assert set(nist.HistoryEvent.model_fields) == {"type", "timestamp", "state"}
    assert token not in written
    assert "taskToken" not in written and "token" not in written.lower()


def render_json(report: nist.IncidentReport) -> str:
    return nist.render_json(report)


def test_response_times_run_from_the_start_and_from_the_first_seen(history, approved):
    # Given an approved execution decided 1.488 s after its start, mitigated 10 min later
    report = report_from(approved, history)

    # When / Then each time is measured from both starts
    times = report.response_times
    assert times.decided_at == datetime(2024, 5, 1, 10, 30, 10, tzinfo=UTC)
    assert times.to_decision_from_start == 1.488
    # The finding was first seen at 09:58:00
    assert times.to_decision_from_first_seen == 32 * 60 + 10
    assert times.to_mitigation_from_start == 655.388
    assert times.to_mitigation_from_first_seen == 43 * 60 + 3.9
    assert times.approval_wait == 650.2


def test_an_incident_not_mitigated_has_no_time_to_mitigation(history, approved):
    # Given a mitigation whose every action failed
    for result in approved["state"]["mitigation"]["results"]:
        result["status"] = "failed"

    # When / Then Mitigate ran, but nothing was mitigated
    times = report_from(approved, history).response_times
    assert times.to_mitigation_from_start is None
    assert times.to_decision_from_start == 1.488


def test_a_history_that_cannot_be_read_leaves_the_reason(approved):
    # Given a history read that fails, and a request without an execution ARN
    def denied(arn: str) -> list[nist.HistoryEvent]:
        raise nist.HistoryUnavailableError("states GetExecutionHistory: AccessDeniedException")

    # When the timelines are read
    unreadable = nist.read_timeline(ARN, denied)
    unnamed = nist.read_timeline(None, denied)

    # Then each says why it is missing, and the report says it too
    assert unreadable.missing == "states GetExecutionHistory: AccessDeniedException"
    assert (unreadable.execution_arn, unreadable.states) == (ARN, [])
    assert unnamed.missing == "the report task was given no execution ARN"
    report = nist.incident_report(incident_from(approved), unreadable)
    assert report.response_times.to_decision_from_start is None
    assert (
        "The execution's history could not be read: states GetExecutionHistory: "
        "AccessDeniedException." in render_markdown(report)
    )
    assert "AccessDeniedException" in render_html(report)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "–"), (1.488, "1.5 s"), (42, "42 s"), (650.2, "10 min 50 s"), (7500, "2 h 05 min")],
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert nist.duration(seconds) == text


# --- the phases ---------------------------------------------------------------------------------


def test_detection_and_analysis_holds_the_finding_its_indicators_and_their_history(approved):
    # Given an incident whose indicator the knowledge base saw before
    approved["state"]["finding"]["indicators"][0]["threat_lists"] = ["ProofPoint"]

    # When / Then the phase has the finding's facts and each indicator with its history
    analysis = report_from(approved).detection_and_analysis
    facts = analysis.finding
    assert facts.read
    assert (facts.type, facts.severity, facts.severity_label) == (
        "UnauthorizedAccess:EC2/SSHBruteForce",
        5.0,
        "Medium",
    )
    assert (facts.account_id, facts.region) == ("111122223333", "us-east-1")
    assert facts.resource == "Instance i-0abc1234def567890"
    assert facts.first_seen == datetime(2024, 5, 1, 9, 58, tzinfo=UTC)
    [indicator] = analysis.indicators
    assert (indicator.value, indicator.role.value) == ("198.51.100.7", "attacker")
    assert (indicator.history.sightings, indicator.history.block_state) == (2, "expired")
    assert analysis.threat_lists == ["ProofPoint"]
    assert (analysis.enriched, analysis.known_indicators) == (True, 1)


def test_containment_holds_the_approval_and_each_action_verified_and_undone(approved):
    # When the containment phase of an approved, applied block is read
    containment = report_from(approved).containment_eradication_recovery

    # Then the approval names who, when and why, and how long it took
    approval = containment.approval
    assert approval.approver == "arn:aws:iam::111122223333:user/alice"
    assert approval.answered_at == datetime(2024, 5, 1, 10, 41, tzinfo=UTC)
    assert (approval.reason, approval.waited) == ("known scanner", 650.0)
    assert containment.strategy.rule == "block-repeat-ssh-bruteforce"

    # And each action has its time, outcome, verification and undo
    waf, nacl = containment.actions
    assert (waf.status, waf.at) == (
        ActionStatus.APPLIED,
        datetime(2024, 5, 1, 10, 30, 12, tzinfo=UTC),
    )
    assert waf.verification == "accepted by AWS when written"
    assert waf.undo.expires
    assert waf.undo.command == (
        "cloud-sniper rollback inc-0f1e2d3c4b5a6978 --action blk-1 --reason TEXT"
    )
    assert nacl.verification == "already in force; its record was found"


def result(kind: ActionKind, status: ActionStatus, target: str = "i-0abc") -> ActionResult:
    at = datetime(2024, 5, 1, 10, 41, 2, tzinfo=UTC)
    return ActionResult(
        action_id=f"{kind.value}:{target}", kind=kind, target=target, status=status, at=at
    )


@pytest.mark.parametrize(
    ("status", "verified"),
    [
        (ActionStatus.APPLIED, "checked in the account once applied"),
        (ActionStatus.ALREADY_APPLIED, "in force from before, checked again in the account"),
        (ActionStatus.PLANNED, "dry run: nothing was changed, nothing to verify"),
        (ActionStatus.NOT_FOUND, "not applied: the target does not exist in the account"),
        (ActionStatus.FAILED, "not in force: it failed (see the detail)"),
    ],
)
def test_a_catalogue_action_is_verified_in_the_account(status, verified):
    assert nist.verification(result(ActionKind.ISOLATE_INSTANCE, status)) == verified


def test_an_isolation_never_expires_and_is_released(approved):
    # Given an isolation applied, and a WAF block still queued
    approved["state"]["mitigation"]["results"] = [
        result(ActionKind.ISOLATE_INSTANCE, ActionStatus.APPLIED).model_dump(mode="json"),
        {
            **result(ActionKind.WAF_BLOCK, ActionStatus.QUEUED, "198.51.100.7").model_dump(
                mode="json"
            ),
            "expires_at": "2024-05-02T10:41:02Z",
            "block_id": "waf#cloud-sniper-blocked-ipv4#198.51.100.7/32",
        },
    ]

    # When the report is read
    report = report_from(approved)
    isolation, waf = report.containment_eradication_recovery.actions

    # Then the isolation ends only by release, the block at its expiry or by rollback
    assert not isolation.undo.expires
    assert isolation.undo.command == "cloud-sniper release i-0abc --reason TEXT"
    assert waf.verification.startswith("queued: the WAF writer writes the IP set")
    expiries = report.post_incident_activity.expiries
    assert [(e.kind, e.expires_at) for e in expiries] == [
        (ActionKind.WAF_BLOCK, datetime(2024, 5, 2, 10, 41, 2, tzinfo=UTC)),
        (ActionKind.ISOLATE_INSTANCE, None),
    ]
    markdown = render_markdown(report)
    assert "| isolate_instance | `i-0abc` | never | only by `cloud-sniper release i-0abc" in (
        markdown
    )


def test_every_kind_of_action_says_how_it_ends():
    assert set(ENDINGS) == set(ActionKind)


def test_a_block_left_by_an_earlier_attempt_is_shown_as_from_before(event):
    # Given a mitigation that failed after an earlier attempt applied a block
    request = copy.deepcopy(event("report-request-mitigated.json"))
    del request["state"]["mitigation"]
    request["state"]["failure"] = {"Error": "TransientAwsError", "Cause": "wafv2 UpdateIPSet"}
    block = {
        "block_id": "nacl#acl-1#198.51.100.7/32",
        "kind": "nacl_block",
        "target": "198.51.100.7",
        "action_id": "act-nacl-1",
        "cidr": "198.51.100.7/32",
        "nacl_id": "acl-1",
        "rule_number": 51,
        "created_at": "2024-05-01T10:30:11Z",
        "expires_at": "2024-05-02T10:30:11Z",
    }

    # When the report is built with it
    report = with_blocks_in_force(report_from(request), [block])

    # Then it is evidence from before, and its expiry is listed
    [action] = report.containment_eradication_recovery.actions
    assert action.from_before
    assert action.record_id == "nacl#acl-1#198.51.100.7/32"
    [expiry] = report.post_incident_activity.expiries
    assert expiry.expires_at == datetime(2024, 5, 2, 10, 30, 11, tzinfo=UTC)


def test_post_incident_activity_lists_the_family_checks(approved):
    # When / Then an SSH brute force asks for its family's checks
    activity = report_from(approved).post_incident_activity
    assert activity.family == "brute-force-inbound"
    assert any("successful login" in check for check in activity.checks)
    markdown = render_markdown(report_from(approved))
    assert "### What to check next: password guessing against an instance" in markdown
    assert "1. Search the instance's login logs" in markdown


def test_an_unread_finding_gets_the_family_of_its_raw_type(event):
    # Given an execution whose ingest failed: the report has the raw event only
    report = report_from(event("report-request-ingest-failed.json"))

    # When / Then its family comes from the raw type, and the facts say they are raw
    assert report.post_incident_activity.family == "brute-force-inbound"
    assert not report.detection_and_analysis.finding.read
    assert report.detection_and_analysis.finding.type == "UnauthorizedAccess:EC2/SSHBruteForce"


# --- the formats --------------------------------------------------------------------------------


def test_the_markdown_follows_the_phases_in_order(history, approved):
    # When the report of an approved execution is rendered
    markdown = render_markdown(report_from(approved, history))

    # Then the phases come in NIST's order, then the timeline
    headings = re.findall(r"^## (.+)$", markdown, flags=re.MULTILINE)
    assert headings == [
        "Detection and analysis",
        "Containment, eradication and recovery",
        "Post-incident activity",
        "Timeline",
    ]
    assert "| Time to decision | 1.5 s from the execution's start, 32 min 10 s from" in markdown
    assert (
        "| Mitigate | Task | 2024-05-01 10:41:00 UTC | 2024-05-01 10:41:03 UTC | 3.5 s | 2 |"
        in (markdown)
    )
    assert "| Report | Task | 2024-05-01 10:41:04 UTC | running | – | 1 |" in markdown
    assert "- Waiting for approval: 10 min 50 s" in markdown


def test_the_json_document_has_the_phases_and_reads_back(history, approved):
    # Given an approved execution's report
    report = report_from(approved, history)

    # When it is written as JSON
    document = json.loads(nist.render_json(report))

    # Then it holds the phases, the timeline and the times, and reads back to the same report
    assert document["version"] == nist.REPORT_VERSION == 2
    assert document["detection_and_analysis"]["finding"]["type"] == (
        "UnauthorizedAccess:EC2/SSHBruteForce"
    )
    actions = document["containment_eradication_recovery"]["actions"]
    assert actions[0]["undo"]["command"].startswith("cloud-sniper rollback")
    assert document["post_incident_activity"]["family"] == "brute-force-inbound"
    assert document["timeline"]["states"][6]["seconds"] == 3.5
    assert document["response_times"]["to_decision_from_start"] == 1.488
    assert nist.read_json(nist.render_json(report)) == report


def test_the_schema_doc_is_the_one_the_model_gives():
    # Given the JSON Schema kept in the docs, when it is generated again from the model,
    # then it is the same: a change of the document shows in the docs or fails here
    assert SCHEMA_DOC.read_text() == nist.json_schema(), (
        "docs/incident-report.schema.json is stale: run `.venv/bin/python -m "
        "services.report.nist > docs/incident-report.schema.json`"
    )


def test_the_schema_names_the_phases_and_forbids_unknown_fields():
    schema = json.loads(nist.json_schema())

    assert schema["properties"]["version"]["const"] == 2
    assert schema["properties"]["schema"]["const"] == "cloud-sniper/incident-report"
    for phase in (
        "detection_and_analysis",
        "containment_eradication_recovery",
        "post_incident_activity",
        "timeline",
        "response_times",
    ):
        assert phase in schema["required"], phase
    assert schema["additionalProperties"] is False


def test_a_script_in_the_title_is_text_on_the_page(approved):
    # Given a finding whose title and detail hold markup
    approved["state"]["finding"]["title"] = SCRIPT
    approved["state"]["mitigation"]["results"][0]["detail"] = '<img src="x" onerror="alert(2)">'

    # When the page is rendered
    html = render_html(report_from(approved))

    # Then each is escaped: shown as text, never markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert SCRIPT not in html
    assert "<img" not in html and "&lt;img src=&#34;x&#34;" in html


def test_the_page_is_self_contained(history, approved):
    # When the page is rendered
    html = render_html(report_from(approved, history))

    # Then it has its style inline, no script, nothing to fetch, and a policy forbidding both
    assert html.startswith("<!doctype html>")
    assert "<style>" in html and "<script" not in html.lower()
    assert not re.search(r"<link|\ssrc=|\shref=|@import|url\(", html, flags=re.IGNORECASE)
    assert "default-src 'none'" in html
    assert '<h2 id="detection">Detection and analysis</h2>' in html
    assert "Post-incident activity" in html


def test_the_markdown_shows_markup_as_text(approved):
    # Given a title with markup and a link
    approved["state"]["finding"]["title"] = f"{SCRIPT} [click](javascript:alert(1))"

    # When / Then a Markdown viewer shows them as text
    markdown = render_markdown(report_from(approved))
    assert "| Title | \\<script\\>alert(1)\\</script\\> \\[click\\](javascript:alert(1)) |" in (
        markdown
    )


def test_the_lambda_bundle_ships_the_templates():
    # Given the report service's bundle, when its files are listed, then the page's template
    # and stylesheet are in it, beside the code
    files = build.bundle_sources("report")

    assert "services/report/templates/incident.html.j2" in files
    assert "services/report/templates/report.css" in files


def test_the_wait_for_approval_includes_its_escalation(approved):
    # Given a request nobody answered in time, escalated, then answered
    at = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)

    def event(kind: str, seconds: float, state: str | None = None) -> nist.HistoryEvent:
        return nist.HistoryEvent(type=kind, timestamp=at + timedelta(seconds=seconds), state=state)

    events = [
        event("ExecutionStarted", 0),
        event("TaskStateEntered", 1, "RequestApproval"),
        event("TaskTimedOut", 3601),
        event("TaskStateExited", 3601, "RequestApproval"),
        event("ChoiceStateEntered", 3601, "Escalate?"),
        event("ChoiceStateExited", 3601, "Escalate?"),
        event("TaskStateEntered", 3602, "EscalateApproval"),
        event("TaskStateExited", 4000, "EscalateApproval"),
    ]

    # When / Then the wait runs from the first request to the escalated one's answer
    timeline = nist.timeline_from(ARN, events)
    assert timeline.states[0].failures == 1
    report = nist.incident_report(incident_from(approved), timeline)
    assert report.response_times.approval_wait == 3999
