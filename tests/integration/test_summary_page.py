"""The summary page as a browser shows it: headless Chromium, no error, charts drawn."""

from __future__ import annotations

from services.report.summary import summarize_period
from services.report.summary_render import render_html
from tests.browser import render_in_chromium
from tests.summary_incidents import GENERATED_AT, PERIOD, week


def test_the_summary_page_renders_in_chromium_with_its_charts(tmp_path):
    # Given the page of the sample week
    page = tmp_path / "summary.html"
    page.write_text(render_html(summarize_period(week(), PERIOD, GENERATED_AT)), encoding="utf-8")

    # When Chromium loads it
    rendered = render_in_chromium(page, "summary-week", count=["figure.chart svg", "svg rect"])

    # Then nothing failed and nothing was fetched
    assert rendered.console_errors == []
    assert rendered.page_errors == []
    assert rendered.blocked_requests == []
    # And the five charts are drawn, with their bars
    assert rendered.counts["figure.chart svg"] == rendered.visible["figure.chart svg"] == 5
    assert rendered.visible["svg rect"] >= 5
    # And the headline figures are on the page
    text = rendered.text
    for figure in ("7\nIncidents", "3\nMitigated", "32 min\nMedian time to mitigation"):
        assert figure in text
    assert "198.51.100.7" in text and "Recover (RC)" in text
    assert rendered.screenshot.stat().st_size > 10_000


def test_an_empty_period_renders_without_charts(tmp_path):
    page = tmp_path / "empty.html"
    page.write_text(render_html(summarize_period([], PERIOD, GENERATED_AT)), encoding="utf-8")

    rendered = render_in_chromium(page, "summary-empty", count=["svg"])

    assert rendered.console_errors == rendered.page_errors == []
    assert rendered.counts["svg"] == 0
    assert "No incident was reported in this period." in rendered.text
