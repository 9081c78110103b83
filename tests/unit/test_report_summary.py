"""The summary of a period: its counts, indicators, time to mitigation, CSF evidence, formats."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from services.report.summary import (
    SUMMARY_SCHEMA,
    SummaryError,
    finding_family,
    percentile,
    period,
    period_bound,
    summarize_period,
)
from services.report.summary_render import (
    ChartError,
    read_json,
    render_html,
    render_json,
    render_markdown,
    self_contained,
    summary_name,
    svg_chart,
    write_files,
)
from tests.summary_incidents import (
    GENERATED_AT,
    PERIOD,
    SAMPLE_FROM_FIRST_SEEN,
    SAMPLE_FROM_START,
    SINCE,
    UNTIL,
    address,
    incident,
    week,
)


def counts(entries) -> dict[str, int]:
    return {entry.name: entry.count for entry in entries}


@pytest.fixture(scope="module")
def summary():
    """The summary of the sample week."""
    return summarize_period(week(), PERIOD, GENERATED_AT)


# --- counts -----------------------------------------------------------------------------------


def test_incidents_are_counted_by_family_severity_mode_and_outcome(summary):
    # Given seven incidents reported in the week (one dry run and one older beside them)
    # Then each is counted once by each
    assert summary.incidents == 7
    assert counts(summary.by_family) == {
        "UnauthorizedAccess": 2,
        "Backdoor": 2,
        "Recon": 1,
        "Software and Configuration Checks": 1,
        "Stealth": 1,
    }
    # And every severity label is listed, in GuardDuty's order
    assert [(c.name, c.count) for c in summary.by_severity] == [
        ("Low", 2),
        ("Medium", 1),
        ("High", 3),
        ("Critical", 1),
    ]
    assert counts(summary.by_mode) == {"auto": 3, "approval": 2, "notify": 2}
    assert counts(summary.by_outcome) == {"mitigated": 3, "notified": 2, "denied": 1, "failed": 1}
    # And the most frequent come first
    assert summary.by_outcome[0].name == "mitigated"


def test_dry_runs_and_incidents_outside_the_period_are_left_out(summary):
    # Given a dry run in the week and an incident reported a second before it
    # Then the dry run is only counted as such, and the older one not at all
    assert summary.dry_runs == 1
    assert sum(c.count for c in summary.by_outcome) == summary.incidents == 7


def test_the_period_includes_since_and_excludes_until():
    # Given incidents reported exactly at the period's bounds
    items = [incident(1, reported_at=SINCE), incident(2, reported_at=UNTIL)]

    # When / Then only the one at its start is in it
    assert summarize_period(items, PERIOD, GENERATED_AT).incidents == 1


@pytest.mark.parametrize(
    ("finding_type", "family"),
    [
        ("UnauthorizedAccess:EC2/SSHBruteForce", "UnauthorizedAccess"),
        ("Backdoor:Runtime/C&CActivity.B!DNS", "Backdoor"),
        ("AttackSequence:S3/CompromisedData", "AttackSequence"),
        (
            "Software and Configuration Checks/Vulnerabilities/CVE",
            "Software and Configuration Checks",
        ),
        ("TTPs/Initial Access/UnauthorizedAccess:EC2-SSHBruteForce", "TTPs"),
        ("Custom", "Custom"),
        ("  ", "unknown"),
        (None, "unknown"),
    ],
)
def test_a_finding_family_is_the_threat_purpose_or_the_asff_namespace(finding_type, family):
    assert finding_family(finding_type) == family


# --- indicators -------------------------------------------------------------------------------


def test_top_indicators_count_incidents_not_mentions(summary):
    # Given an address in three incidents, a domain named twice by one finding and once by another
    found = {(i.group, i.value): i.incidents for i in summary.top_indicators}

    # Then each incident counts once for each indicator it names
    assert found == {
        ("address", "198.51.100.7"): 3,
        ("address", "203.0.113.99"): 1,
        ("domain", "c2.bad.example"): 2,
        ("key", "AKIAEXAMPLEKEY000001"): 1,
    }
    assert summary.top_indicators[0].value == "198.51.100.7"


def test_top_indicators_keep_the_first_ten_of_each_group():
    # Given twelve addresses, the last one in two incidents, and a domain
    items = [
        incident(n, indicators=[address(f"192.0.2.{n}"), address("192.0.2.200")])
        for n in range(1, 12)
    ]
    items.append(incident(12, indicators=[{"kind": "domain", "value": "a.example"}]))

    # When summarized
    found = summarize_period(items, PERIOD, GENERATED_AT).top_indicators

    # Then ten addresses are kept, the most frequent first, and the domain beside them
    addresses = [i.value for i in found if i.group == "address"]
    assert len(addresses) == 10
    assert addresses[0] == "192.0.2.200"
    assert [i.value for i in found if i.group == "domain"] == ["a.example"]


# --- time to mitigation -----------------------------------------------------------------------


def test_time_to_mitigation_says_from_what_it_was_measured(summary):
    # Given three mitigated incidents, one of them without the finding's first seen
    times = summary.time_to_mitigation

    # Then two are measured from the first seen and one from the execution's start
    assert (times.measured, times.from_first_seen, times.from_execution_start) == (3, 2, 1)
    assert times.unmeasured == 0
    assert times.median_seconds == pytest.approx(SAMPLE_FROM_FIRST_SEEN)
    assert times.p95_seconds == pytest.approx(SAMPLE_FROM_FIRST_SEEN)
    assert counts(times.distribution) == {
        "< 1 min": 1,
        "1-5 min": 0,
        "5-15 min": 0,
        "15-60 min": 2,
        "1-4 h": 0,
        "4-24 h": 0,
        ">= 1 day": 0,
    }


def test_the_execution_start_stands_in_for_a_missing_first_seen():
    # Given one mitigated incident whose finding has no first seen
    summary = summarize_period([incident(1, first_seen=False)], PERIOD, GENERATED_AT)

    # Then it is measured from the execution's start to its last effective action
    assert summary.time_to_mitigation.median_seconds == pytest.approx(SAMPLE_FROM_START)
    assert summary.time_to_mitigation.from_execution_start == 1


def test_a_partial_mitigation_is_measured_to_the_action_that_took_effect():
    # Given the WAF block applied at 10:30:12 and the network ACL block failed
    item = incident(1, statuses=("applied", "failed"), first_seen=False)

    # When summarized
    times = summarize_period([item], PERIOD, GENERATED_AT).time_to_mitigation

    # Then the end is the WAF block's time
    assert times.median_seconds == pytest.approx(3.488)


def test_a_later_delivery_finding_its_actions_in_force_is_not_measured():
    # Given a mitigated incident whose execution found every block in force already
    item = incident(1, statuses=("already_applied", "already_applied"))

    # When summarized
    summary = summarize_period([item], PERIOD, GENERATED_AT)

    # Then its mitigation came from an earlier execution: counted, not measured
    times = summary.time_to_mitigation
    assert (times.measured, times.unmeasured, times.median_seconds) == (0, 1, None)
    assert "No mitigated incident to measure (1 mitigated, not measurable)." in render_markdown(
        summary
    )


def test_percentile_is_the_nearest_rank():
    values = [float(n) for n in range(1, 21)]
    assert percentile(values, 95) == 19.0
    assert percentile(values, 50) == 10.0
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(SummaryError, match="no value"):
        percentile([], 95)


# --- NIST CSF 2.0 -----------------------------------------------------------------------------


def test_csf_functions_carry_their_evidence():
    # Given the week, two blocks lifted in it (one expired, one rolled back), one lifted after,
    # an isolation released, a credential revocation undone and an action expired
    at = "2024-05-03T12:00:00+00:00"
    blocks = [
        {"block_id": "waf#a", "kind": "waf_block", "status": "removed", "removed_at": at,
         "removed_reason": "expired"},
        {"block_id": "waf#b", "kind": "nacl_block", "status": "removed", "removed_at": at,
         "removed_reason": "rolled_back"},
        {"block_id": "waf#c", "kind": "waf_block", "status": "removed",
         "removed_at": "2024-05-06T00:00:00+00:00", "removed_reason": "expired"},
    ]  # fmt: skip
    actions = [
        {"record_id": "isolate_instance#i-1", "kind": "isolate_instance", "status": "undone",
         "undone_at": at},
        {"record_id": "revoke_credentials#AKIA", "kind": "revoke_credentials",
         "status": "undone", "undone_at": at},
        {"record_id": "c2_block#203.0.113.99", "kind": "c2_block", "status": "expired",
         "undone_at": at},
    ]  # fmt: skip

    # When summarized
    summary = summarize_period(week(), PERIOD, GENERATED_AT, blocks, actions)

    # Then Detect, Respond and Recover are covered, each with what shows it
    functions = {function.id: function for function in summary.nist_csf}
    assert [f.name for f in summary.nist_csf] == ["Detect", "Respond", "Recover"]
    assert all(function.covered for function in summary.nist_csf)
    assert counts(functions["DE"].evidence) == {
        "findings received": 7,
        "indicators named": 4,
        "indicators seen before": 1,
    }
    assert counts(functions["RS"].evidence) == {
        "decisions": 7,
        "approvals requested": 2,
        "approvals answered": 2,
        "actions taken": 6,
        "actions failed": 2,
    }
    assert counts(functions["RC"].evidence) == {
        "blocks expired": 1,
        "blocks rolled back": 1,
        "actions expired": 1,
        "actions rolled back": 1,
        "releases": 1,
    }


def test_recover_is_not_covered_when_nothing_was_undone(summary):
    recover = summary.nist_csf[2]
    assert recover.name == "Recover" and not recover.covered
    assert set(counts(recover.evidence).values()) == {0}


# --- unreadable records -----------------------------------------------------------------------


def test_an_unreadable_record_is_named_and_counted_as_far_as_it_goes():
    # Given an incident whose report is not JSON, and an item without its report time
    broken = incident(1) | {"report": "{not json"}
    timeless = {k: v for k, v in incident(2).items() if k != "reported_at"}

    # When summarized
    summary = summarize_period([broken, timeless], PERIOD, GENERATED_AT)

    # Then the first still counts by its table record, the second cannot be placed in time
    assert summary.incidents == 1
    assert counts(summary.by_outcome) == {"mitigated": 1}
    assert summary.time_to_mitigation.unmeasured == 1
    assert summary.unreadable == 2
    reasons = {item.record: item.reason for item in summary.unreadable_listed}
    assert reasons[broken["incident_id"]].startswith("report: ")
    assert reasons[timeless["incident_id"]].startswith("reported_at: ")


def test_a_report_of_another_schema_is_not_read():
    item = incident(1) | {"report": json.dumps({"schema": "someone/else", "version": 1})}
    summary = summarize_period([item], PERIOD, GENERATED_AT)
    assert summary.unreadable_listed[0].reason == "report: not an incident report"


# --- the period -------------------------------------------------------------------------------


NOW = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ],
)
def test_a_bound_is_a_time_ago_or_an_iso_time(text, expected):
    assert period_bound(text, NOW) == expected


def test_a_bad_bound_names_the_option_and_the_forms_it_takes():
    with pytest.raises(SummaryError, match=r"--until 'last week': not a time ago \(30m"):
        period_bound("last week", NOW, "--until")


def test_an_empty_period_is_refused():
    with pytest.raises(SummaryError, match="period: since 2024-05-08T12:00:00"):
        period(NOW, NOW)


# --- formats ----------------------------------------------------------------------------------


def test_the_json_document_is_versioned_and_reads_back(summary):
    text = render_json(summary)
    document = json.loads(text)
    assert (document["schema"], document["version"]) == (SUMMARY_SCHEMA, 1)
    assert read_json(text) == summary

    document["version"] = 2
    with pytest.raises(ValueError, match="not a cloud-sniper/summary-report v1 document"):
        read_json(json.dumps(document))


def test_the_markdown_report_leads_with_the_headline_figures(summary):
    text = render_markdown(summary)

    assert text.startswith("# Cloud Sniper summary: 2024-04-28 00:00 UTC to 2024-05-05 00:00 UTC\n")
    assert "| Incidents | 7 |" in text
    assert "| Mitigated | 3 |" in text
    assert "| Median time to mitigation | 32 min |" in text
    assert "2 from the finding's first seen, 1 from the execution's start" in text
    assert "| `198.51.100.7` | 3 |" in text
    assert "| Recover (RC) | no |" in text
    assert "> 1 dry run(s) in the period are left out" in text


def test_text_from_findings_cannot_break_the_markdown_tables():
    # Given a finding type and a domain with a table separator and a line break
    item = incident(
        1,
        finding_type="Evil|Family:EC2/X",
        indicators=[{"kind": "domain", "value": "a|b\nc.example"}],
    )
    text = render_markdown(summarize_period([item], PERIOD, GENERATED_AT))
    assert "| Evil\\|Family | 1 |" in text
    assert "| `a\\|b c.example` | 1 |" in text


def test_the_html_page_is_self_contained_with_its_charts(summary):
    page = render_html(summary)

    # Then it refers to nothing outside itself: no script, no link, no remote anything
    assert "<script" not in page
    assert "<link" not in page
    assert not re.search(r"\b(?:src|href)\s*=", page)
    assert "http" not in re.sub(r'xmlns(?::\w+)?="[^"]*"', "", page)
    # And it holds a chart for each count with data, time to mitigation included
    assert page.count("<svg") == 5
    assert "Incidents by finding family" in page and "Time to mitigation" in page


def test_an_empty_period_has_no_chart_and_says_so():
    empty = summarize_period([], PERIOD, GENERATED_AT)
    page = render_html(empty)
    assert "<svg" not in page
    assert "No incident was reported in this period." in page
    assert "No mitigated incident to measure." in render_markdown(empty)


def test_text_from_findings_is_escaped_in_the_page_and_its_charts():
    # Given a family and a domain written to inject markup
    hostile = "<img src=x onerror=alert(1)>"
    item = incident(
        1,
        finding_type=f"{hostile}:EC2/X",
        indicators=[{"kind": "domain", "value": f"{hostile}.example"}],
    )

    # When the page is rendered
    page = render_html(summarize_period([item], PERIOD, GENERATED_AT))

    # Then the markup is shown as text, never as markup
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.parametrize(
    ("inside", "named"),
    [
        ('<image href="https://x.example/a.png"/>', 'href="https://x.example/a.png"'),
        ('<a xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href="#x">a</a>', 'href="#x"'),
        ("<style>@import url(https://x.example/a.css);</style>", "@import"),
        ('<rect style="fill: url(//x.example/a.svg)"/>', 'style="fill: url(//x.example/a.svg)"'),
        ("<foreignObject><p>a</p></foreignObject>", "<foreignObject>"),
    ],
)
def test_a_chart_that_refers_outside_the_page_is_refused(inside, named):
    svg = f'<svg xmlns="http://www.w3.org/2000/svg">{inside}</svg>'
    with pytest.raises(ChartError, match=re.escape(f"outside the page: {named}")):
        self_contained(svg, "Incidents")


def test_text_in_a_chart_is_no_reference():
    # Given labels reading like markup and addresses, as a finding may name them
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><text>&lt;img src=x&gt; http://a.example</text></svg>'

    # Then they are text, and the chart is kept
    assert "http://a.example" in self_contained(svg, "Incidents")


def test_pygal_charts_come_out_without_its_script_and_comments():
    from services.report.summary import Count

    svg = svg_chart("By severity", [Count(name="Low", count=2), Count(name="High", count=1)])
    assert svg.startswith("<svg") and "<script" not in svg and "<!--" not in svg
    assert "<title>By severity</title>" in svg


def test_the_files_are_named_after_the_period(summary, tmp_path):
    written = write_files(summary, tmp_path, ["html", "markdown", "json"])

    name = "summary-20240428T0000Z-20240505T0000Z"
    assert summary_name(summary.period) == name
    assert [path.name for path in written] == [f"{name}.html", f"{name}.md", f"{name}.json"]
    assert read_json(written[2].read_text()) == summary
    with pytest.raises(ValueError, match="format 'pdf' is not one of"):
        write_files(summary, tmp_path, ["pdf"])
