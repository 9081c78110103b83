"""A period's summary as a versioned JSON document, a Markdown report and a self-contained page."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import jinja2
import pygal
from markupsafe import Markup
from pygal.style import Style

from services.report.summary import (
    SUMMARY_SCHEMA,
    SUMMARY_VERSION,
    Count,
    Period,
    Summary,
    duration_text,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
SUMMARY_TEMPLATE = "summary.html.j2"

SEVERITY_COLORS = {
    "Low": "#5b8db8",
    "Medium": "#e0a526",
    "High": "#d9682b",
    "Critical": "#b3261e",
    "unknown": "#9e9e9e",
}
CHART_COLOR = "#2f6f8f"
CHART_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#d5dbe1",
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=13,
    major_label_font_size=13,
    value_font_size=13,
    title_font_size=15,
    colors=(CHART_COLOR,),
    opacity=".9",
    opacity_hover="1",
)

# The pygal config script needs pygal.js, which a self-contained page leaves out.
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TITLE = re.compile(r"<title>.*?</title>", re.DOTALL)
# What would make a browser fetch or run something, in an element, an attribute or a style.
_ACTIVE_ELEMENTS = frozenset({"script", "foreignObject", "iframe", "object", "embed"})
_REFERENCE_ATTRIBUTES = frozenset({"href", "src"})
_STYLE_REFERENCE = re.compile(r"url\(|@import", re.IGNORECASE)


class ChartError(RuntimeError):
    """A chart came out referring to something outside the page."""


# --- JSON -------------------------------------------------------------------------------------


def render_json(summary: Summary) -> str:
    """The summary as a versioned JSON document."""
    document = {
        "schema": SUMMARY_SCHEMA,
        "version": SUMMARY_VERSION,
        **summary.model_dump(mode="json"),
    }
    return json.dumps(document, indent=2) + "\n"


def read_json(text: str) -> Summary:
    """Read back a document written by render_json, refusing other schemas and versions."""
    document = json.loads(text)
    schema, version = document.pop("schema", None), document.pop("version", None)
    if (schema, version) != (SUMMARY_SCHEMA, SUMMARY_VERSION):
        raise ValueError(f"not a {SUMMARY_SCHEMA} v{SUMMARY_VERSION} document: {schema} v{version}")
    return Summary.model_validate(document)


# --- Markdown ---------------------------------------------------------------------------------


def render_markdown(summary: Summary) -> str:
    """The summary as a report a person reads from top to bottom."""
    times = summary.time_to_mitigation
    lines = [
        f"# Cloud Sniper summary: {period_text(summary)}",
        "",
        f"Generated {_when(summary.generated_at)}.",
        "",
        *_table(("Figure", "Value"), headline(summary)),
        "",
    ]
    for note in _notes(summary):
        lines += [f"> {note}", ""]
    sections = [
        ("Incidents by finding family", "Family", summary.by_family),
        ("Incidents by severity", "Severity", summary.by_severity),
        ("Incidents by decision mode", "Mode", summary.by_mode),
        ("Incidents by outcome", "Outcome", summary.by_outcome),
    ]
    for title, header, counts in sections:
        lines += [f"## {title}", "", *_counts_table(counts, header), ""]

    lines += ["## Time to mitigation", "", mitigation_sentence(summary), ""]
    if times.measured:
        lines += [*_counts_table(times.distribution, "Time to mitigation"), ""]

    lines += ["## Top indicators", ""]
    for group, title in (("address", "Addresses"), ("domain", "Domains"), ("key", "Access keys")):
        rows = [
            (_code(found.value), str(found.incidents))
            for found in summary.top_indicators
            if found.group == group
        ]
        lines += [f"### {title}", ""]
        lines += [*_table(("Indicator", "Incidents"), rows), ""] if rows else ["None.", ""]

    lines += ["## NIST CSF 2.0 functions", ""]
    rows = [
        (
            f"{function.name} ({function.id})",
            "yes" if function.covered else "no",
            ", ".join(f"{count.name}: {count.count}" for count in function.evidence),
        )
        for function in summary.nist_csf
    ]
    lines += _table(("Function", "Covered", "Evidence"), rows)

    if summary.unreadable_listed:
        lines += ["", "## Records not read", ""]
        rows = [(_code(item.record), _cell(item.reason)) for item in summary.unreadable_listed]
        lines += _table(("Record", "Why"), rows)
    return "\n".join(lines).rstrip() + "\n"


def headline(summary: Summary) -> list[tuple[str, str]]:
    """The figures a summary shows first, as (label, value)."""
    mitigated = summary.count_of("by_outcome", "mitigated") + summary.count_of(
        "by_outcome", "partially_mitigated"
    )
    times = summary.time_to_mitigation
    return [
        ("Incidents", str(summary.incidents)),
        ("Mitigated", str(mitigated)),
        ("Denied or timed out", str(_denied_or_timed_out(summary))),
        ("Failed", str(summary.count_of("by_outcome", "failed"))),
        ("Median time to mitigation", duration_text(times.median_seconds)),
        ("p95 time to mitigation", duration_text(times.p95_seconds)),
    ]


def mitigation_sentence(summary: Summary) -> str:
    """How the time to mitigation was measured, in one sentence a reader can check."""
    times = summary.time_to_mitigation
    if not times.measured:
        unmeasured = f" ({times.unmeasured} mitigated, not measurable)" if times.unmeasured else ""
        return f"No mitigated incident to measure{unmeasured}."
    basis = []
    if times.from_first_seen:
        basis.append(f"{times.from_first_seen} from the finding's first seen")
    if times.from_execution_start:
        basis.append(f"{times.from_execution_start} from the execution's start (no first seen)")
    unmeasured = (
        f"; {times.unmeasured} mitigated incident(s) could not be measured (no start, or mitigated "
        "by an earlier execution)"
        if times.unmeasured
        else ""
    )
    return (
        f"Median {duration_text(times.median_seconds)}, p95 (nearest rank) "
        f"{duration_text(times.p95_seconds)} over {times.measured} mitigated incident(s), "
        f"measured to the last action the execution applied: {', '.join(basis)}{unmeasured}."
    )


# --- HTML -------------------------------------------------------------------------------------


def render_html(summary: Summary) -> str:
    """The summary as one self-contained page: inline CSS and SVG charts, no script, no link."""
    times = summary.time_to_mitigation
    charts = [
        chart
        for chart in (
            _chart("Incidents by finding family", summary.by_family, horizontal=True),
            _chart(
                "Incidents by severity",
                summary.by_severity,
                colors=[
                    SEVERITY_COLORS.get(count.name, CHART_COLOR) for count in summary.by_severity
                ],
            ),
            _chart("Incidents by outcome", summary.by_outcome, horizontal=True),
            _chart("Incidents by decision mode", summary.by_mode),
            _chart("Time to mitigation", times.distribution) if times.measured else None,
        )
        if chart is not None
    ]
    indicators = {
        title: [found for found in summary.top_indicators if found.group == group]
        for group, title in (
            ("address", "Addresses"),
            ("domain", "Domains"),
            ("key", "Access keys"),
        )
    }
    return (
        _environment()
        .get_template(SUMMARY_TEMPLATE)
        .render(
            summary=summary,
            period=period_text(summary),
            generated=_when(summary.generated_at),
            headline=headline(summary),
            notes=_notes(summary),
            mitigation=mitigation_sentence(summary),
            charts=charts,
            indicators=indicators,
        )
    )


def svg_chart(
    title: str, counts: Sequence[Count], horizontal: bool = False, colors: Sequence[str] = ()
) -> str:
    """A bar chart of counts as inline SVG that refers to nothing outside itself."""
    height = max(200, 40 * len(counts) + 80) if horizontal else 300
    # Whole numbers on the axis: these are counts of incidents.
    top = max((count.count for count in counts), default=0)
    step = max(1, math.ceil(top / 5))
    chart_type = pygal.HorizontalBar if horizontal else pygal.Bar
    chart = chart_type(
        style=CHART_STYLE,
        js=[],
        disable_xml_declaration=True,
        show_legend=False,
        print_values=True,
        print_zeroes=False,
        width=520,
        height=height,
        margin=10,
        truncate_label=-1,
        y_labels=list(range(0, top + step, step)),
        range=(0, max(top, 1)),
    )
    if horizontal:
        # pygal stacks horizontal bars from the bottom up: the first count goes on top.
        counts, colors = list(reversed(counts)), list(reversed(colors))
    chart.x_labels = [count.name for count in counts]
    values = [
        {"value": count.count, "color": colors[index]} if index < len(colors) else count.count
        for index, count in enumerate(counts)
    ]
    chart.add(title, values)
    return self_contained(chart.render(is_unicode=True), title)


def self_contained(svg: str, title: str) -> str:
    """The SVG without pygal's script and comments, titled; refused if it refers elsewhere."""
    svg = _SCRIPT.sub("", svg)
    svg = _COMMENT.sub("", svg)
    svg = _TITLE.sub(lambda _: f"<title>{Markup.escape(title)}</title>", svg, count=1)
    found = _reference_in(svg)
    if found:
        raise ChartError(f"chart {title!r} refers to something outside the page: {found}")
    return svg


def _reference_in(svg: str) -> str | None:
    """The first thing in the SVG a browser would fetch or run, if any."""
    if "<?xml-stylesheet" in svg:
        return "xml-stylesheet"
    try:
        root = ElementTree.fromstring(svg)
    except ElementTree.ParseError as exc:
        return f"unreadable SVG ({exc})"
    for element in root.iter():
        tag = str(element.tag).rpartition("}")[2]
        if tag in _ACTIVE_ELEMENTS:
            return f"<{tag}>"
        for name, value in element.attrib.items():
            name = name.rpartition("}")[2]
            if name in _REFERENCE_ATTRIBUTES or _STYLE_REFERENCE.search(value) or "//" in value:
                return f'{name}="{value}"'
        if tag == "style" and _STYLE_REFERENCE.search(element.text or ""):
            return _STYLE_REFERENCE.search(element.text or "").group(0)
    return None


# --- helpers ----------------------------------------------------------------------------------


def _chart(
    title: str, counts: Sequence[Count], horizontal: bool = False, colors: Sequence[str] = ()
) -> dict[str, object] | None:
    if not any(count.count for count in counts):
        return None
    return {"title": title, "svg": Markup(svg_chart(title, counts, horizontal, colors))}


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _denied_or_timed_out(summary: Summary) -> int:
    return summary.count_of("by_outcome", "denied") + summary.count_of("by_outcome", "timed_out")


def _notes(summary: Summary) -> list[str]:
    notes = []
    if summary.dry_runs:
        notes.append(
            f"{summary.dry_runs} dry run(s) in the period are left out: they changed nothing."
        )
    if summary.unreadable:
        notes.append(
            f"{summary.unreadable} record(s) could not be read in full; their incidents count "
            "where their table record allowed."
        )
    return notes


def period_text(summary: Summary) -> str:
    """The period as the reports name it."""
    return f"{_when(summary.period.since)} to {_when(summary.period.until)}"


def _counts_table(counts: Iterable[Count], header: str) -> list[str]:
    rows = [(_cell(count.name), str(count.count)) for count in counts]
    if not rows:
        return ["None."]
    return _table((header, "Incidents"), rows)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# Names and indicators come from findings: they must not break a table's layout.
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def _cell(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text).strip().replace("|", "\\|") or "–"


def _code(text: str) -> str:
    text = _cell(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _when(at: datetime) -> str:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M UTC")


# --- files ------------------------------------------------------------------------------------

# Each format: how to render it, the file's suffix, its content type.
FORMATS: dict[str, tuple[Callable[[Summary], str], str, str]] = {
    "html": (render_html, ".html", "text/html; charset=utf-8"),
    "markdown": (render_markdown, ".md", "text/markdown; charset=utf-8"),
    "json": (render_json, ".json", "application/json"),
}


def summary_name(span: Period) -> str:
    """The file name of a period's summary, without suffix: the same for every run of it."""
    return f"summary-{span.since:%Y%m%dT%H%MZ}-{span.until:%Y%m%dT%H%MZ}"


def write_files(summary: Summary, directory: Path, formats: Iterable[str]) -> list[Path]:
    """Write the summary in each format under directory; return the files written."""
    written = []
    directory.mkdir(parents=True, exist_ok=True)
    for name in formats:
        if name not in FORMATS:
            raise ValueError(f"format {name!r} is not one of {sorted(FORMATS)}")
        render, suffix, _ = FORMATS[name]
        path = directory / f"{summary_name(summary.period)}{suffix}"
        path.write_text(render(summary), encoding="utf-8")
        written.append(path)
    return written
