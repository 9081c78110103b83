"""The incident: its outcome on every path, its reports, and its table record."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import Incident, Outcome
from services.report.incident import (
    ReportRequest,
    build_incident,
    event_detail,
    incident_item,
    report_keys,
    wants_blocks_in_force,
    with_blocks_in_force,
)
from services.report.nist import (
    REPORT_SCHEMA,
    IncidentReport,
    Timeline,
    failure_message,
    incident_report,
    read_json,
    render_json,
)
from services.report.nist_markdown import render_markdown as render_report_markdown

REPORTED_AT = datetime(2024, 5, 1, 10, 30, 15, tzinfo=UTC)
APPROVAL = {
    "approval_id": "apr-0123",
    "status": "approved",
    "requested_at": "2024-05-01T10:30:10Z",
    "expires_at": "2024-05-01T11:30:10Z",
    "approver": "alice@example.com",
    "reason": "known scanner | keeps coming back",
    "answered_at": "2024-05-01T10:41:00Z",
}


@pytest.fixture
def mitigated(event):
    """A report request for an automatic block that was applied."""
    return lambda: copy.deepcopy(event("report-request-mitigated.json"))


def incident_from(request: dict) -> Incident:
    return build_incident(ReportRequest.model_validate(request), REPORTED_AT)


def report_of(incident: Incident) -> IncidentReport:
    """The incident's report, its execution's history unread."""
    return incident_report(incident, Timeline(missing="not read in this test"))


def render_markdown(incident: Incident) -> str:
    return render_report_markdown(report_of(incident))


def set_statuses(request: dict, *statuses: str) -> dict:
    for result, status in zip(request["state"]["mitigation"]["results"], statuses, strict=True):
        result["status"] = status
    return request


def test_applied_and_already_applied_actions_mitigate(mitigated):
    # Given every action applied or already in place
    # When the incident is built
    incident = incident_from(mitigated())

    # Then it is mitigated and carries what the execution learned
    assert incident.outcome is Outcome.MITIGATED
    assert incident.failure is None
    assert incident.incident_id == "inc-0f1e2d3c4b5a6978"
    assert [action.status.value for action in incident.actions] == ["applied", "already_applied"]
    assert incident.event is None
    assert incident.execution_started_at == datetime(2024, 5, 1, 10, 30, 8, 512000, tzinfo=UTC)


def test_some_actions_applied_is_partial(mitigated):
    # Given one action applied and one that failed
    request = set_statuses(mitigated(), "applied", "failed")

    # When / Then
    assert incident_from(request).outcome is Outcome.PARTIALLY_MITIGATED


def test_an_action_without_a_result_is_not_applied(mitigated):
    # Given two planned actions and a single result
    request = mitigated()
    request["state"]["mitigation"]["results"].pop()

    # When / Then
    assert incident_from(request).outcome is Outcome.PARTIALLY_MITIGATED


def test_no_action_applied_fails_with_the_reasons(mitigated):
    # Given no action that took effect
    request = set_statuses(mitigated(), "not_found", "unavailable")

    # When the incident is built
    incident = incident_from(request)

    # Then it failed, and says which action failed how
    assert incident.outcome is Outcome.FAILED
    assert incident.failure.error == "NoActionApplied"
    assert "waf_block 198.51.100.7: not_found" in incident.failure.cause
    assert "nacl_block 198.51.100.7: unavailable (rule 51" in incident.failure.cause


def test_dry_run_is_planned(mitigated):
    # Given a dry run whose actions were only planned
    request = set_statuses(mitigated(), "planned", "planned")
    request["state"]["dry_run"] = True

    # When the incident is built
    incident = incident_from(request)

    # Then it is planned, and the report says nothing changed
    assert incident.outcome is Outcome.PLANNED
    assert "Dry run" in render_markdown(incident)


def test_a_failed_step_fails_the_incident(mitigated):
    # Given a step that failed after retries
    request = mitigated()
    del request["state"]["mitigation"]
    request["state"]["failure"] = {"Error": "TransientAwsError", "Cause": "wafv2 UpdateIPSet"}

    # When the incident is built
    incident = incident_from(request)

    # Then it failed with the step's error
    assert incident.outcome is Outcome.FAILED
    assert (incident.failure.error, incident.failure.cause) == (
        "TransientAwsError",
        "wafv2 UpdateIPSet",
    )


def failed_mitigation(request: dict) -> dict:
    """The request turned into one whose mitigate step failed after its retries."""
    del request["state"]["mitigation"]
    request["state"]["failure"] = {"Error": "TransientAwsError", "Cause": "wafv2 UpdateIPSet"}
    return request


def block_item(block_id: str, created_at: str, **fields) -> dict:
    """A blocks table item as DynamoDB returns it: numbers as Decimal, attributes of its own."""
    item = {
        "block_id": block_id,
        "kind": "nacl_block",
        "target": "198.51.100.7",
        "cidr": "198.51.100.7/32",
        "ip_version": Decimal(4),
        "nacl_id": "acl-0123456789abcdef0",
        "subnet_ids": ["subnet-0a1b2c3d"],
        "rule_number": Decimal(51),
        "incident_id": "inc-0f1e2d3c4b5a6978",
        "finding_id": "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1",
        "action_id": "act-nacl-1",
        "created_at": created_at,
        "expires_at": "2024-05-02T10:30:11+00:00",
        "expires_at_epoch": Decimal(1714645811),
        "status": "active",
    }
    return {**item, **fields}


def test_only_a_real_failed_execution_looks_for_blocks_in_force(mitigated):
    # Given a mitigated execution, a failed one and a failed dry run
    failed = failed_mitigation(mitigated())
    dry = failed_mitigation(mitigated())
    dry["state"]["dry_run"] = True

    # When / Then only the real failure may have left a block no result shows
    assert not wants_blocks_in_force(incident_from(mitigated()))
    assert wants_blocks_in_force(incident_from(failed))
    assert not wants_blocks_in_force(incident_from(dry))


def test_a_failed_mitigation_shows_the_blocks_it_left_in_force(mitigated):
    # Given Mitigate failed after its retries, its first attempt having applied the NACL block,
    # and a WAF block from an earlier execution of the same incident, written by the WAF writer
    incident = incident_from(failed_mitigation(mitigated()))
    items = [
        block_item("nacl#acl-0123456789abcdef0#198.51.100.7/32", "2024-05-01T10:30:11Z"),
        block_item(
            "waf#cloud-sniper-blocked-ipv4#198.51.100.7/32",
            "2024-05-01T08:00:00Z",
            kind="waf_block",
            action_id="act-waf-1",
            nacl_id=None,
            rule_number=None,
            ip_set="cloud-sniper-blocked-ipv4",
            expires_at="2024-05-02T08:00:00Z",
            written_at="2024-05-01T08:00:30Z",
        ),
    ]

    # When the blocks in force are added and the report rendered
    incident = with_blocks_in_force(report_of(incident), items)
    markdown = render_report_markdown(incident)

    # Then the incident still failed, and lists both, oldest first, with where and until when
    assert incident.outcome is Outcome.FAILED
    assert [(block.kind.value, block.status.value) for block in incident.blocks_in_force] == [
        ("waf_block", "applied"),
        ("nacl_block", "applied"),
    ]
    assert "No action was run." not in markdown
    assert "No action result reached the report." in markdown
    assert "#### Blocks in force" in markdown
    assert (
        "| nacl_block | `198.51.100.7` | in force | 2024-05-01 10:30:11 UTC | 198.51.100.7/32 "
        "denied by rule 51 of acl-0123456789abcdef0, in force from an earlier attempt | "
        "accepted by AWS when written | expires on its own; sooner: `cloud-sniper rollback "
        "inc-0f1e2d3c4b5a6978 --action nacl#acl-0123456789abcdef0#198.51.100.7/32 --reason "
        "TEXT` (deletes the network ACL deny entry) | 2024-05-02 10:30:11 UTC |" in markdown
    )
    assert (
        "| waf_block | `198.51.100.7` | in force | 2024-05-01 08:00:00 UTC | 198.51.100.7/32 in "
        "cloud-sniper-blocked-ipv4, in force from an earlier execution |" in markdown
    )
    assert "| 2024-05-01 10:30:11 UTC | nacl_block 198.51.100.7: applied, still in force |" in (
        markdown
    )

    # And the JSON report reads back with them
    assert read_json(render_json(incident)) == incident


def test_a_block_an_action_result_shows_is_not_listed_twice(mitigated):
    # Given no action that took effect, one of them naming a block still recorded
    incident = incident_from(set_statuses(mitigated(), "not_found", "unavailable"))
    items = [block_item("blk-2", "2024-05-01T10:30:13Z")]

    # When the blocks in force are added / Then the result is the only mention of it
    assert with_blocks_in_force(incident, items).blocks_in_force == []


def test_without_blocks_in_force_nothing_was_run(mitigated):
    # Given a failed mitigation that left no block
    incident = with_blocks_in_force(incident_from(failed_mitigation(mitigated())), [])

    # When / Then the report says no action ran, and lists no blocks
    markdown = render_markdown(incident)
    assert "No action was run." in markdown
    assert "Blocks in force" not in markdown


def test_an_unread_delivery_is_reported_from_the_raw_event(event):
    # Given an execution whose ingest step failed
    request = event("report-request-ingest-failed.json")

    # When the incident is built and rendered
    incident = incident_from(request)
    markdown = render_markdown(incident)

    # Then the report keeps the raw event and reads what it can from it
    assert incident.outcome is Outcome.FAILED
    assert incident.finding is None
    assert incident.event["detail"]["id"] == "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1"
    assert "UnauthorizedAccess:EC2/SSHBruteForce" in markdown
    assert "| Severity | 5 (Medium) |" in markdown
    assert "Instance i-0abc1234def567890" in markdown
    assert "InvalidFindingError: detail.resource: field required" in markdown
    assert "stackTrace" not in markdown


def test_incident_id_is_derived_from_the_raw_event_when_missing(event):
    # Given an unread delivery and a state without incident id
    request = event("report-request-ingest-failed.json")
    del request["state"]["incident_id"]

    # When / Then the id is the one receive derives from the finding
    expected = naming.incident_id("aws.guardduty", "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1")
    assert incident_from(request).incident_id == expected


def test_approval_timeout_is_timed_out(mitigated):
    # Given an approval request nobody answered
    request = mitigated()
    state = request["state"]
    state["decision"].update(mode="approval", approval_timeout_seconds=3600)
    del state["mitigation"]
    state["approval_error"] = {"Error": "States.Timeout", "Cause": ""}

    # When the incident is built
    incident = incident_from(request)

    # Then it timed out, and the report says after how long
    assert incident.outcome is Outcome.TIMED_OUT
    assert incident.failure is None
    assert "timed out" in render_markdown(incident)
    assert "3600 s" in render_markdown(incident)


def test_denied_approval_is_denied(mitigated):
    # Given an approval request answered no
    request = mitigated()
    state = request["state"]
    state["decision"]["mode"] = "approval"
    del state["mitigation"]
    state["approval"] = dict(APPROVAL, status="denied", reason="false positive")

    # When the incident is built
    incident = incident_from(request)

    # Then it is denied, and the report names who said no and why
    assert incident.outcome is Outcome.DENIED
    markdown = render_markdown(incident)
    assert "- Status: **denied**" in markdown
    assert "- By: alice@example.com" in markdown
    assert "- Why: false positive" in markdown


def test_approved_approval_goes_by_the_actions(mitigated):
    # Given an approved request whose actions were applied
    request = mitigated()
    request["state"]["decision"]["mode"] = "approval"
    request["state"]["approval"] = APPROVAL

    # When the incident is built and rendered
    incident = incident_from(request)
    markdown = render_markdown(incident)

    # Then it is mitigated, and the approval's who, when and why are in the report
    assert incident.outcome is Outcome.MITIGATED
    assert "### Approval" in markdown
    assert "- Status: **approved**" in markdown
    assert "- By: alice@example.com" in markdown
    assert "- Answered: 2024-05-01 10:41:00 UTC" in markdown
    assert "- Why: known scanner | keeps coming back" in markdown
    assert "- Waited: 10 min 50 s" in markdown
    assert "| 2024-05-01 10:41:00 UTC | approval answered: approved |" in markdown


@pytest.mark.parametrize(("mode", "outcome"), [("ignore", "ignored"), ("notify", "notified")])
def test_modes_without_actions(mitigated, mode, outcome):
    # Given a decision not to act
    request = mitigated()
    request["state"]["decision"].update(mode=mode, actions=[], refusals=[])
    del request["state"]["mitigation"]

    # When / Then
    assert incident_from(request).outcome is Outcome(outcome)


def test_every_action_refused_is_refused(mitigated):
    # Given a decision whose every action a safety rule refused
    request = mitigated()
    request["state"]["decision"].update(mode="notify", actions=[])
    del request["state"]["mitigation"]

    # When the incident is built
    incident = incident_from(request)

    # Then it is refused, and the report gives each refusal's reason
    assert incident.outcome is Outcome.REFUSED
    markdown = render_markdown(incident)
    assert "#### Refusals" in markdown
    assert (
        "| waf_block | `203.0.113.10` | the address belongs to this account (Elastic IP) |"
        in markdown
    )


def test_markdown_reads_as_an_incident_report(mitigated):
    # Given a mitigated incident
    incident = incident_from(mitigated())

    # When it is rendered
    markdown = render_markdown(incident)

    # Then the summary, indicators with history, decision, actions and timeline are there
    assert markdown.startswith("# Incident inc-0f1e2d3c4b5a6978: mitigated\n")
    assert "| Type | UnauthorizedAccess:EC2/SSHBruteForce |" in markdown
    assert "| Severity | 5 (Medium) |" in markdown
    assert "| Resource | Instance i-0abc1234def567890 |" in markdown
    assert "| Outcome | **mitigated** |" in markdown
    assert (
        "| `198.51.100.7` | ipv4 | attacker | – | yes | 2 | 2024-04-20 08:00:00 UTC "
        "| 2024-04-28 12:00:00 UTC | yes | expired |" in markdown
    )
    assert "- Rule: `block-repeat-ssh-bruteforce`" in markdown
    assert (
        "| waf_block | `198.51.100.7` | applied | 2024-05-01 10:30:12 UTC | added "
        "198.51.100.7/32 to cloud-sniper-blocked-ipv4 | accepted by AWS when written |" in markdown
    )
    assert "| 2024-05-01 10:30:07 UTC | finding received |" in markdown
    assert "| 2024-05-01 10:30:08 UTC | execution started |" in markdown
    assert "| 2024-05-01 10:30:15 UTC | reported: mitigated |" in markdown
    assert "### Failure" not in markdown


def test_table_cells_escape_pipes_and_line_breaks(mitigated):
    # Given an action detail with a pipe and a line break
    request = mitigated()
    request["state"]["mitigation"]["results"][0]["detail"] = "a | b\nc"

    # When / Then the table keeps its columns
    assert "| a \\| b c |" in render_markdown(incident_from(request))


def test_json_report_is_versioned_and_reads_back(mitigated):
    # Given an incident's report
    report = report_of(incident_from(mitigated()))

    # When it is rendered as JSON
    document = json.loads(render_json(report))

    # Then it names its schema and version first, keeps the incident's fields as they are
    # recorded, and reads back to the same report
    assert list(document)[:2] == ["schema", "version"]
    assert document["schema"] == REPORT_SCHEMA == "cloud-sniper/incident-report"
    assert document["version"] == 2
    assert document["outcome"] == "mitigated"
    assert document["finding"]["id"] == "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1"
    assert read_json(render_json(report)) == report
    assert read_json(render_json(report)).incident() == incident_from(mitigated())


def test_another_schema_version_is_refused(mitigated):
    # Given a document of the version before, and one of a version this code does not know
    document = json.loads(render_json(report_of(incident_from(mitigated()))))

    # When / Then each is refused, naming what it is
    for version in (1, 3):
        document["version"] = version
        with pytest.raises(ValueError, match=f"incident-report v{version}"):
            read_json(json.dumps(document))


def test_failure_message_shortens_lambda_errors():
    # Given a Lambda error's cause and a plain one
    cause = json.dumps({"errorType": "KeyError", "errorMessage": "'finding'", "stackTrace": []})

    # When / Then
    assert failure_message(cause) == "KeyError: 'finding'"
    assert failure_message("States.Timeout") == "States.Timeout"


def test_event_detail_summarizes_the_incident(mitigated):
    # Given an incident and its report keys
    incident = incident_from(mitigated())
    keys = report_keys(incident)

    # When the event detail is built
    detail = event_detail(incident, keys, "reports-bucket")

    # Then it names the incident, finding, decision, outcome, actions and reports
    assert keys.json == (
        "reports/inc-0f1e2d3c4b5a6978/"
        "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1-20240501T103000-1a2b3c4d.json"
    )
    assert keys.markdown == keys.json.removesuffix(".json") + ".md"
    assert keys.html == keys.json.removesuffix(".json") + ".html"
    assert detail["finding"] == {
        "id": "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1",
        "type": "UnauthorizedAccess:EC2/SSHBruteForce",
        "severity": 5.0,
    }
    assert (detail["decision_mode"], detail["outcome"]) == ("auto", "mitigated")
    assert detail["actions"][0] == {
        "kind": "waf_block",
        "target": "198.51.100.7",
        "status": "applied",
    }
    assert detail["report_keys"] == {
        "json": keys.json,
        "markdown": keys.markdown,
        "html": keys.html,
    }
    assert detail["report_bucket"] == "reports-bucket"


def with_execution(request: dict, name: str, started_at: str, dry_run: bool = False) -> Incident:
    request = copy.deepcopy(request)
    request.update(execution_name=name, execution_started_at=started_at)
    request["state"]["dry_run"] = dry_run
    return incident_from(request)


def item_for(incident: Incident, previous: dict | None) -> dict | None:
    return incident_item(report_of(incident), report_keys(incident), previous)


def test_each_execution_counts_once_in_deliveries(mitigated):
    # Given a first report of the incident
    first = with_execution(mitigated(), "run-1", "2024-05-01T10:30:00Z")
    item = item_for(first, None)
    assert item["deliveries"] == 1

    # When the same execution reports again, then a later one does
    retried = item_for(first, item)
    later = item_for(with_execution(mitigated(), "run-2", "2024-05-01T16:30:00Z"), retried)

    # Then the retry is not counted and the later execution is shown
    assert retried["deliveries"] == 1
    assert later["deliveries"] == 2
    assert later["execution_name"] == "run-2"
    assert later["execution_names"] == {"run-1", "run-2"}
    assert later["report_json_key"].endswith("/run-2.json")
    assert json.loads(later["report"])["execution_name"] == "run-2"


def test_an_older_execution_reporting_late_keeps_the_newer_record(mitigated):
    # Given a record of a later execution
    newer = item_for(with_execution(mitigated(), "run-2", "2024-05-01T16:30:00Z"), None)

    # When an execution started before it reports
    item = item_for(with_execution(mitigated(), "run-1", "2024-05-01T10:30:00Z"), newer)

    # Then it is counted, but the record still shows the newer execution
    assert item["deliveries"] == 2
    assert item["execution_name"] == "run-2"


def test_a_dry_run_never_replaces_a_real_record(mitigated):
    # Given a record of a real execution
    real = item_for(with_execution(mitigated(), "run-1", "2024-05-01T10:30:00Z"), None)

    # When a dry run of the same finding reports / Then the record stays
    dry = with_execution(mitigated(), "dry-run-9", "2024-05-02T10:30:00Z", dry_run=True)
    assert item_for(dry, real) is None

    # And a real execution replaces a dry run's record, counting afresh
    dry_item = item_for(dry, None)
    replaced = item_for(with_execution(mitigated(), "run-1", "2024-05-01T10:30:00Z"), dry_item)
    assert (replaced["dry_run"], replaced["deliveries"]) == (False, 1)


def test_the_record_holds_the_summary_and_the_report(mitigated):
    # Given an incident
    incident = incident_from(mitigated())

    # When its item is built
    item = item_for(incident, None)

    # Then the summary fields are typed for DynamoDB and the report is the JSON document
    assert item["incident_id"] == "inc-0f1e2d3c4b5a6978"
    assert item["outcome"] == "mitigated"
    assert item["finding_type"] == "UnauthorizedAccess:EC2/SSHBruteForce"
    assert str(item["severity"]) == "5.0"
    assert item["decision_mode"] == "auto"
    assert item["report_html_key"].endswith(".html")
    assert read_json(item["report"]) == report_of(incident)
    assert None not in item.values()


def test_the_record_lists_the_last_deliveries_and_counts_them_all(mitigated):
    # Given a finding delivered 55 times, an update an hour, its count growing
    item = None
    for hour in range(55):
        request = mitigated()
        finding = request["state"]["finding"]
        updated_at = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(hours=hour)
        finding.update(updated_at=updated_at.isoformat(), count=hour + 1)
        request.update(execution_name=f"run-{hour}", execution_started_at=updated_at.isoformat())
        item = item_for(incident_from(request), item)

    # When / Then the record counts all of them, lists the last 50 and keeps the first seen
    assert item["deliveries"] == 55
    history = item["delivery_history"]
    assert [delivery["execution_name"] for delivery in history] == [
        f"run-{hour}" for hour in range(5, 55)
    ]
    assert item["count"] == 55
    assert item["first_seen"] == "2024-05-01T09:58:00+00:00"
    markdown = render_report_markdown(read_json(item["report"]))
    assert "The last 50 of 55 deliveries:" in markdown


def test_an_unread_delivery_counts_but_keeps_the_count(mitigated, event):
    # Given a record of a read delivery
    item = item_for(incident_from(mitigated()), None)

    # When a delivery of the finding that could not be read reports
    request = event("report-request-ingest-failed.json")
    request.update(execution_name="run-unread", execution_started_at="2024-05-01T11:00:00Z")
    item = item_for(incident_from(request), item)

    # Then it is counted, and the count and last seen stay the read one's
    assert item["deliveries"] == 2
    assert (item["count"], item["last_seen"]) == (4, "2024-05-01T10:29:00+00:00")
    assert "updated_at" not in item["delivery_history"][0]


def test_the_report_shows_the_attack_mapping_and_what_is_not_yet_available(mitigated):
    # Given an incident whose enrichment maps its type to ATT&CK, and whose decision planned an
    # isolation this version does not carry out
    from cloud_sniper.domain.attack import mapping_for

    request = mitigated()
    finding_type = request["state"]["finding"]["type"]
    request["state"]["enrichment"]["attack"] = mapping_for(finding_type).model_dump(mode="json")
    request["state"]["decision"]["unavailable"] = [
        {"id": "isolate_instance:i-1", "kind": "isolate_instance", "target": "i-1"}
    ]
    request["state"]["decision"]["priority"] = "high"

    # When it is rendered
    markdown = render_markdown(incident_from(request))

    # Then the report names the tactics and techniques, the version and why, and the plan
    assert "### MITRE ATT&CK" in markdown
    assert "ATT&CK Enterprise 18.1" in markdown
    for technique in mapping_for(finding_type).techniques:
        assert technique.id in markdown and technique.name in markdown
    assert "#### Planned, not yet available" in markdown
    assert "| isolate_instance | `i-1` |" in markdown
    assert "- Priority: **high**" in markdown
