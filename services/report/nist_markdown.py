"""The incident report in Markdown, by the phases of NIST SP 800-61, for a person to read."""

from __future__ import annotations

import re
from collections.abc import Iterable

from cloud_sniper.domain.models import Deliveries, Mode, Outcome
from services.report.nist import (
    ActionEvidence,
    IncidentReport,
    IndicatorEvidence,
    duration,
    failure_message,
    milestones,
    summarize,
    when,
)


def render_markdown(report: IncidentReport) -> str:
    """The report as a Markdown document read from top to bottom."""
    sections = [
        _summary_section(report),
        "## Detection and analysis",
        _indicators_section(report),
        _attack_section(report),
        _deliveries_section(report),
        "## Containment, eradication and recovery",
        _decision_section(report),
        _approval_section(report),
        _actions_section(report),
        _failure_section(report),
        "## Post-incident activity",
        _checks_section(report),
        _expiry_section(report),
        _timeline_section(report),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _summary_section(report: IncidentReport) -> str:
    summary = summarize(report)
    decision = report.decision
    severity = "–"
    if summary.severity is not None:
        severity = f"{summary.severity:g}"
        if summary.severity_label:
            severity += f" ({summary.severity_label})"
    times = report.response_times

    rows = [
        ("Finding", _code(summary.id)),
        ("Type", _cell(summary.type)),
        ("Severity", severity),
        ("Title", _cell(summary.title)),
        ("Account", _cell(summary.account_id)),
        ("Region", _cell(summary.region)),
        ("Resource", _cell(summary.resource)),
        *_deliveries_rows(report),
        ("Decision", _cell(_decision_line(report)) if decision else "none"),
        ("Outcome", f"**{report.outcome.value}**"),
        (
            "Time to decision",
            _from_start_and_first_seen(
                times.to_decision_from_start, times.to_decision_from_first_seen
            ),
        ),
        (
            "Time to mitigation",
            _from_start_and_first_seen(
                times.to_mitigation_from_start, times.to_mitigation_from_first_seen
            ),
        ),
        ("Execution", _code(report.execution_name)),
    ]
    lines = [f"# Incident {report.incident_id}: {report.outcome.value}", ""]
    if report.dry_run:
        lines += ["> Dry run: actions were planned and recorded, nothing was changed.", ""]
    if report.finding is None:
        lines += ["> The delivery could not be read as a finding: this is from the raw event.", ""]
    lines += _table(("", ""), rows)
    return "\n".join(lines)


def _from_start_and_first_seen(from_start: float | None, from_first_seen: float | None) -> str:
    if from_start is None and from_first_seen is None:
        return "–"
    return (
        f"{duration(from_start)} from the execution's start, "
        f"{duration(from_first_seen)} from the first seen"
    )


def _deliveries_rows(report: IncidentReport) -> list[tuple[str, str]]:
    deliveries = report.deliveries
    finding = report.finding
    if deliveries is None and finding is None:
        return []
    if deliveries is None:
        # A report written before deliveries were recorded: this delivery alone.
        deliveries = Deliveries(
            count=finding.count, first_seen=finding.first_seen, last_seen=finding.last_seen
        )
    return [
        ("Count", str(deliveries.count) if deliveries.count is not None else "–"),
        ("First seen", when(deliveries.first_seen) if deliveries.first_seen else "–"),
        ("Last seen", when(deliveries.last_seen) if deliveries.last_seen else "–"),
        ("Deliveries", str(deliveries.total)),
    ]


def _decision_line(report: IncidentReport) -> str:
    decision = report.decision
    rule = f" (rule {decision.rule})" if decision.rule else ""
    return f"{decision.mode.value}: {decision.reason}{rule}"


# --- detection and analysis ---------------------------------------------------------------------


def _indicators_section(report: IncidentReport) -> str:
    analysis = report.detection_and_analysis
    lines = ["### Indicators", ""]
    if report.finding is None:
        return "\n".join([*lines, "Not known: the finding was not read."])
    description = analysis.finding.description
    if description:
        lines = ["### The finding", "", _escaped(description), "", *lines]
    if not analysis.indicators:
        return "\n".join([*lines, "The finding names no indicator."])

    rows = [
        (
            _code(indicator.value),
            indicator.kind.value,
            indicator.role.value,
            _cell(", ".join(indicator.threat_lists)),
            *_history_cells(indicator),
        )
        for indicator in analysis.indicators
    ]
    header = (
        "Indicator",
        "Kind",
        "Role",
        "Threat lists",
        "Seen before",
        "Sightings before",
        "First seen",
        "Last seen",
        "Blocked before",
        "Block state",
    )
    lines += _table(header, rows)
    if not analysis.enriched:
        lines += ["", "No history: the enrich step did not run."]
    return "\n".join(lines)


def _history_cells(indicator: IndicatorEvidence) -> tuple[str, ...]:
    history = indicator.history
    if history is None:
        return ("–",) * 6
    return (
        "yes" if history.seen_before else "no",
        str(history.sightings),
        when(history.first_seen) if history.seen_before else "–",
        when(history.last_seen) if history.seen_before else "–",
        "yes" if history.blocked_before else "no",
        _cell(history.block_state),
    )


def _attack_section(report: IncidentReport) -> str:
    attack = report.detection_and_analysis.attack
    if attack is None:
        return ""
    rows = [("Tactic", t.id, _cell(t.name)) for t in attack.tactics]
    rows += [("Technique", t.id, _cell(t.name)) for t in attack.techniques]
    return "\n".join(
        [
            "### MITRE ATT&CK",
            "",
            f"ATT&CK Enterprise {attack.attack_version}: {_escaped(attack.reason)}",
            "",
            *_table(("", "Id", "Name"), rows),
        ]
    )


def _deliveries_section(report: IncidentReport) -> str:
    deliveries = report.deliveries
    if deliveries is None or deliveries.total < 2:
        return ""
    lines = ["### Deliveries", ""]
    shown = len(deliveries.history)
    if shown < deliveries.total:
        lines += [f"The last {shown} of {deliveries.total} deliveries:", ""]
    else:
        lines += ["GuardDuty delivered the finding again as the activity went on:", ""]
    rows = [
        (
            when(delivery.updated_at) if delivery.updated_at else "not read",
            str(delivery.count) if delivery.count is not None else "–",
            when(delivery.last_seen) if delivery.last_seen else "–",
            _code(delivery.execution_name)
            + (" (this report)" if delivery.execution_name == report.execution_name else ""),
        )
        for delivery in deliveries.history
    ]
    lines += _table(("Updated", "Count", "Last seen", "Execution"), rows)
    return "\n".join(lines)


# --- containment, eradication and recovery ------------------------------------------------------


def _decision_section(report: IncidentReport) -> str:
    decision = report.decision
    lines = ["### Decision", ""]
    if decision is None:
        return "\n".join([*lines, "No decision was made."])

    lines.append(f"- Mode: **{decision.mode.value}**")
    if decision.priority.value != "normal":
        lines.append(f"- Priority: **{decision.priority.value}**")
    lines.append(f"- Reason: {_escaped(decision.reason)}")
    if decision.rule:
        lines.append(f"- Rule: {_code(decision.rule)}")
    if decision.approval_timeout_seconds:
        lines.append(f"- Approval timeout: {decision.approval_timeout_seconds} s")
    if decision.actions:
        rows = [
            (
                action.kind.value,
                _code(action.target),
                f"{action.ttl_seconds} s" if action.ttl_seconds else "–",
            )
            for action in decision.actions
        ]
        lines += ["", "#### Planned actions", "", *_table(("Kind", "Target", "Block for"), rows)]
    if decision.unavailable:
        rows = [(action.kind.value, _code(action.target)) for action in decision.unavailable]
        lines += [
            "",
            "#### Planned, not yet available",
            "",
            "The policy asks for these; this version of Cloud Sniper does not carry them out.",
            "",
            *_table(("Kind", "Target"), rows),
        ]
    if decision.refusals:
        rows = [
            (_cell(refusal.kind), _code(refusal.target), _cell(refusal.reason))
            for refusal in decision.refusals
        ]
        lines += ["", "#### Refusals", "", *_table(("Kind", "Target", "Reason"), rows)]
    return "\n".join(lines)


def _approval_section(report: IncidentReport) -> str:
    approval = report.containment_eradication_recovery.approval
    lines = ["### Approval", ""]
    if approval is not None and approval.requested_at is not None:
        lines.append(f"- Status: **{approval.status.value}**")
        lines.append(f"- Approval: {_code(approval.approval_id)}")
        lines.append(f"- Requested: {when(approval.requested_at)}")
        if approval.approver:
            lines.append(f"- By: {_escaped(approval.approver)}")
        if approval.answered_at:
            lines.append(f"- Answered: {when(approval.answered_at)}")
            lines.append(f"- Waited: {duration(approval.waited)}")
        if approval.reason:
            lines.append(f"- Why: {_escaped(approval.reason)}")
        if approval.escalated_at:
            lines.append(f"- Escalated: {when(approval.escalated_at)}")
        if approval.expires_at:
            lines.append(f"- Expires: {when(approval.expires_at)}")
        return "\n".join(lines)
    if report.outcome is Outcome.TIMED_OUT:
        timeout = report.decision.approval_timeout_seconds if report.decision else None
        within = f" within {timeout} s" if timeout else ""
        # The pipeline escalates an unanswered approval when the decision says so, and only
        # the escalation's timeout then reaches the report.
        if report.decision is not None and report.decision.on_approval_timeout == "escalate":
            return "\n".join(
                [
                    *lines,
                    f"No one answered the approval request{within}, nor its escalation"
                    f"{within} more; it timed out after escalation.",
                ]
            )
        return "\n".join([*lines, f"No one answered the approval request{within}; it timed out."])
    if report.decision is not None and report.decision.mode is Mode.APPROVAL:
        return "\n".join([*lines, "Requested, but no answer reached the report."])
    return ""


def _actions_section(report: IncidentReport) -> str:
    actions = report.containment_eradication_recovery.actions
    taken = [action for action in actions if not action.from_before]
    before = [action for action in actions if action.from_before]
    lines = ["### Actions", ""]
    if taken:
        lines += _actions_table(taken, "Status")
    elif before:
        lines.append("No action result reached the report.")
    else:
        lines.append("No action was run.")

    if before:
        lines += [
            "",
            "#### Blocks in force",
            "",
            "Applied for this incident before this report, and not lifted yet:",
            "",
            *_actions_table(before, None),
        ]
    return "\n".join(lines)


def _actions_table(actions: list[ActionEvidence], status: str | None) -> list[str]:
    rows = [
        (
            action.kind.value,
            _code(action.target),
            action.status.value if status else "in force",
            when(action.at),
            _cell(action.detail),
            _cell(action.verification),
            _undo_cell(action),
            when(action.expires_at) if action.expires_at else "–",
        )
        for action in actions
    ]
    header = ("Kind", "Target", "Status", "At", "Detail", "Verification", "Undo", "Expires")
    return _table(header, rows)


def _undo_cell(action: ActionEvidence) -> str:
    undo = action.undo
    if undo.command is None:
        return _cell(undo.effect)
    lead = "expires on its own; sooner:" if undo.expires else "never expires; ends with:"
    return f"{lead} {_code(undo.command)} ({_cell(undo.effect)})"


def _failure_section(report: IncidentReport) -> str:
    failure = report.failure
    if failure is None:
        return ""
    message = failure_message(failure.cause) if failure.cause else "no cause given"
    return "\n".join(["### Failure", "", f"- Error: {_code(failure.error)}", "", _fenced(message)])


# --- post-incident activity ---------------------------------------------------------------------


def _checks_section(report: IncidentReport) -> str:
    activity = report.post_incident_activity
    lines = [f"### What to check next: {activity.family_title.lower()}", ""]
    lines += [f"{number}. {check}" for number, check in enumerate(activity.checks, 1)]
    return "\n".join(lines)


def _expiry_section(report: IncidentReport) -> str:
    expiries = report.post_incident_activity.expiries
    lines = ["### Expiry", ""]
    if not expiries:
        return "\n".join([*lines, "Nothing is in force for this incident."])
    rows = [
        (
            expiry.kind.value,
            _code(expiry.target),
            when(expiry.expires_at) if expiry.expires_at else "never",
            ("sooner: " if expiry.expires_at else "only by ") + _code(expiry.command),
        )
        for expiry in expiries
    ]
    return "\n".join([*lines, *_table(("Kind", "Target", "Expires", "Ends"), rows)])


# --- the timeline -------------------------------------------------------------------------------


def _timeline_section(report: IncidentReport) -> str:
    timeline = report.timeline
    times = report.response_times
    lines = ["## Timeline", "", "### Execution", ""]
    if timeline.missing:
        lines.append(f"The execution's history could not be read: {_escaped(timeline.missing)}.")
    else:
        rows = [
            (
                _cell(visit.name),
                visit.type,
                when(visit.entered_at),
                when(visit.exited_at) if visit.exited_at else "running",
                duration(visit.seconds) if visit.exited_at else "–",
                str(visit.attempts) if visit.attempts else "–",
            )
            for visit in timeline.states
        ]
        lines += _table(("State", "Type", "Entered", "Exited", "Took", "Attempts"), rows)
        lines += [
            "",
            f"- Time to decision: {duration(times.to_decision_from_start)} from the execution's "
            f"start, {duration(times.to_decision_from_first_seen)} from the first seen",
            f"- Time to mitigation: {duration(times.to_mitigation_from_start)} from the "
            f"execution's start, {duration(times.to_mitigation_from_first_seen)} from the "
            "first seen",
        ]
        if times.approval_wait is not None:
            lines.append(f"- Waiting for approval: {duration(times.approval_wait)}")

    rows = [(when(at), _cell(what)) for at, what in milestones(report)]
    lines += ["", "### Events", "", *_table(("When", "What"), rows)]
    return "\n".join(lines)


# --- Markdown text ------------------------------------------------------------------------------


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# Text from findings and approvers goes into tables and lists: it must not break their layout,
# and a viewer must show it as text, never as HTML or a link.
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")
_MARKUP = re.compile(r"([\\<>\[\]])")


def _escaped(text: str) -> str:
    return _MARKUP.sub(r"\\\1", _LINE_BREAKS.sub(" ", text).strip())


def _cell(text: str | None) -> str:
    if not text:
        return "–"
    return _escaped(text).replace("|", "\\|")


def _code(text: str | None) -> str:
    if not text:
        return "–"
    # A code span shows its text as it is: nothing in it is markup but the pipe of a table.
    text = _LINE_BREAKS.sub(" ", text).strip().replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _fenced(text: str) -> str:
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}\n{text}\n{fence}"
