"""TheHive 5: one case per incident, with its observables, ATT&CK procedures and approval tasks.

The bodies are those of TheHive's v1 API (thehive4py's InputCase, InputObservable, InputProcedure,
InputTask); the CaseStore that sends them is the adapter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol

from cloud_sniper.domain import attack, naming
from cloud_sniper.domain.models import (
    ApprovalStatus,
    Incident,
    Indicator,
    IndicatorHistory,
    IndicatorKind,
    Mode,
    Outcome,
    SeverityLabel,
)
from services.report.incident import summarize

TAG = "cloud-sniper"
INCIDENT_TAG_PREFIX = "cloud-sniper:incident="
TASK_GROUP = "cloud-sniper"
TITLE_LIMIT = 200

# TheHive's scales: severity 1 low to 4 critical; TLP 2.0 and PAP, 2 is amber.
SEVERITY = {
    SeverityLabel.LOW: 1,
    SeverityLabel.MEDIUM: 2,
    SeverityLabel.HIGH: 3,
    SeverityLabel.CRITICAL: 4,
}
TLP_AMBER = 2
PAP_AMBER = 2

# Any other case status closes the case: a person's verdict, which Cloud Sniper leaves alone.
NEW, IN_PROGRESS = "New", "InProgress"
TASK_DONE, TASK_CANCELLED = "Completed", "Cancel"

DATA_TYPES = {
    IndicatorKind.IPV4: "ip",
    IndicatorKind.IPV6: "ip",
    IndicatorKind.DOMAIN: "domain",
    IndicatorKind.FILE_HASH: "hash",
    IndicatorKind.ACCESS_KEY: "other",
    IndicatorKind.PRINCIPAL: "other",
}
TECHNIQUE_TACTICS_FILE = "attack-technique-tactics.tsv"


class TheHiveRequestError(RuntimeError):
    """TheHive refused a request or could not be reached; status is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def refused(self) -> bool:
        """A 4xx other than an authentication failure: this one item, not TheHive, is at fault."""
        return (
            self.status is not None and 400 <= self.status < 500 and self.status not in (401, 403)
        )


class CaseStore(Protocol):
    """TheHive's cases, as the adapter reaches them."""

    def find_cases(self, tag: str) -> list[dict[str, Any]]: ...
    def create_case(self, body: Mapping[str, Any]) -> dict[str, Any]: ...
    def update_case(self, case_id: str, fields: Mapping[str, Any]) -> None: ...
    def observables(self, case_id: str) -> list[dict[str, Any]]: ...
    def add_observable(self, case_id: str, body: Mapping[str, Any]) -> None: ...
    def procedures(self, case_id: str) -> list[dict[str, Any]]: ...
    def add_procedure(self, case_id: str, body: Mapping[str, Any]) -> None: ...
    def tasks(self, case_id: str) -> list[dict[str, Any]]: ...
    def add_task(self, case_id: str, body: Mapping[str, Any]) -> None: ...
    def update_task(self, task_id: str, fields: Mapping[str, Any]) -> None: ...


@dataclass
class SyncResult:
    """What one report did to the incident's case."""

    case_id: str
    case_number: int | None
    created: bool
    observables_added: int = 0
    procedures_added: int = 0
    tasks_added: int = 0
    tasks_closed: int = 0
    # Items TheHive refused while the rest went through, each with TheHive's reason.
    problems: list[str] = field(default_factory=list)


def incident_tag(incident_id: str) -> str:
    """The tag that finds the incident's case again: TheHive's query filters cases by tag."""
    return f"{INCIDENT_TAG_PREFIX}{incident_id}"


def skip_reason(incident: Incident) -> str | None:
    """Why the incident gets no case, if so: nothing for a person to look at."""
    if incident.dry_run:
        return "a dry run changes nothing"
    if incident.finding is not None and incident.finding.sample:
        return "a sample finding"
    if incident.outcome is Outcome.IGNORED:
        return "the policy ignores the finding"
    return None


def sync(incident: Incident, report_location: str, store: CaseStore) -> SyncResult:
    """Create the incident's case, or bring the case an earlier delivery created up to date."""
    tag = incident_tag(incident.incident_id)
    # TODO(thehive): two reports of one incident at the same moment may both find no case and
    # create one each (TheHive has no conditional create); later reports keep the oldest.
    found = store.find_cases(tag)
    if found:
        case = min(found, key=lambda item: item.get("_createdAt", 0))
        result = SyncResult(case["_id"], case.get("number"), created=False)
        if len(found) > 1:
            result.problems.append(f"{len(found)} cases carry {tag}; the oldest is kept up to date")
        changes = case_changes(case, incident, report_location)
        if changes:
            store.update_case(result.case_id, changes)
    else:
        case = store.create_case(case_body(incident, report_location))
        result = SyncResult(case["_id"], case.get("number"), created=True)

    held = not result.created
    for body in new_items(
        observables(incident), store.observables(result.case_id) if held else [], observable_key
    ):
        if _added(result, f"observable {body['data']}", store.add_observable, body):
            result.observables_added += 1
    for body in new_items(
        procedures(incident), store.procedures(result.case_id) if held else [], procedure_key
    ):
        if _added(result, f"procedure {body['patternId']}", store.add_procedure, body):
            result.procedures_added += 1

    tasks = store.tasks(result.case_id) if held else []
    task = approval_task(incident)
    if task is not None and not any(_names_approval(t, task["approval_id"]) for t in tasks):
        added = _added(result, f"task {task['body']['title']}", store.add_task, task["body"])
        result.tasks_added += int(added)
    for task_id, status in tasks_to_close(tasks, incident):
        store.update_task(task_id, {"status": status})
        result.tasks_closed += 1
    return result


def _added(result: SyncResult, what: str, add: Any, body: Mapping[str, Any]) -> bool:
    try:
        add(result.case_id, body)
    except TheHiveRequestError as exc:
        if not exc.refused:
            raise
        result.problems.append(f"{what}: {exc}")
        return False
    return True


# --- the case ---------------------------------------------------------------------------------


def case_body(incident: Incident, report_location: str) -> dict[str, Any]:
    """The new case of an incident: TheHive's InputCase."""
    return {
        "title": case_title(incident),
        "description": case_description(incident, report_location),
        "severity": case_severity(incident),
        "startDate": _ms(_started(incident)),
        "tags": case_tags(incident),
        "tlp": TLP_AMBER,
        "pap": PAP_AMBER,
        "status": NEW if incident.outcome is not Outcome.MITIGATED else IN_PROGRESS,
        "flag": pending_approval_id(incident) is not None,
    }


def case_changes(
    case: Mapping[str, Any], incident: Incident, report_location: str
) -> dict[str, Any]:
    """What a later delivery changes on the case: TheHive's InputUpdateCase, empty if nothing.

    The description follows the latest report; the severity only rises, so a person's raise
    stands; a closed case stays closed, and an open one moves on to InProgress once Cloud
    Sniper has acted, never back to New.
    """
    wanted = {
        "title": case_title(incident),
        "description": case_description(incident, report_location),
        "severity": max(case_severity(incident), int(case.get("severity") or 0)),
    }
    if case.get("status") == NEW and incident.outcome is Outcome.MITIGATED:
        wanted["status"] = IN_PROGRESS
    # Flagged while an approval waits; a flag is a person's to take down.
    if pending_approval_id(incident) is not None:
        wanted["flag"] = True
    changes = {key: value for key, value in wanted.items() if case.get(key) != value}
    new_tags = [tag for tag in case_tags(incident) if tag not in (case.get("tags") or [])]
    if new_tags:
        changes["addTags"] = new_tags
    return changes


def case_title(incident: Incident) -> str:
    """The finding type and what it is about, as short as a case list shows."""
    summary = summarize(incident)
    what = summary.title or summary.resource or incident.incident_id
    title = f"{summary.type or 'Unreadable finding'}: {' '.join(what.split())}"
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1] + "…"


def case_severity(incident: Incident) -> int:
    """GuardDuty's severity band on TheHive's scale; medium when the finding was not read."""
    label = summarize(incident).severity_label
    return SEVERITY.get(SeverityLabel(label), 2) if label else 2


def case_tags(incident: Incident) -> list[str]:
    """Cloud Sniper's tag, the incident's, the finding type, its product, account and region."""
    summary = summarize(incident)
    tags = [TAG, incident_tag(incident.incident_id)]
    if summary.type:
        tags.append(summary.type)
    if incident.finding is not None:
        tags.append(f"product={incident.finding.product}")
    if summary.account_id:
        tags.append(f"aws:account={summary.account_id}")
    if summary.region:
        tags.append(f"aws:region={summary.region}")
    return tags


def case_description(incident: Incident, report_location: str) -> str:
    """The case's Markdown: the finding, the decision, what was done, and where the report is."""
    summary = summarize(incident)
    severity = "–"
    if summary.severity is not None:
        severity = f"{summary.severity:g} ({summary.severity_label})"
    decision = incident.decision
    rows = [
        ("Incident", _code(incident.incident_id)),
        ("Outcome", f"**{incident.outcome.value}**"),
        ("Finding", _code(summary.id)),
        ("Type", _cell(summary.type)),
        ("Severity", severity),
        ("Account", _cell(summary.account_id)),
        ("Region", _cell(summary.region)),
        ("Resource", _cell(summary.resource)),
        ("Decision", _cell(f"{decision.mode.value}: {decision.reason}") if decision else "none"),
        ("Execution", _code(incident.execution_name)),
    ]
    lines = [
        f"Cloud Sniper reported this incident **{incident.outcome.value}**"
        + (" (dry run: nothing was changed)" if incident.dry_run else "")
        + ".",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    if summary.title:
        lines += ["", _inline(summary.title)]
    if incident.approval is not None:
        approval = incident.approval
        by = f" by {_inline(approval.approver)}" if approval.approver else ""
        why = f": {_inline(approval.reason)}" if approval.reason else ""
        lines += ["", f"Approval {_code(approval.approval_id)}: {approval.status.value}{by}{why}"]
    if incident.actions:
        lines += ["", "Actions:", ""]
        lines += [
            f"- {a.kind.value} {_code(a.target)}: {a.status.value}"
            + (f" ({_inline(a.detail)})" if a.detail else "")
            for a in incident.actions
        ]
    if incident.failure is not None:
        lines += ["", f"Failure: {_code(incident.failure.error)}"]
    lines += ["", f"Report: {report_location}"]
    return "\n".join(lines)


# --- observables ------------------------------------------------------------------------------


def observables(incident: Incident) -> list[dict[str, Any]]:
    """The finding's indicators as TheHive observables (InputObservable), one per value."""
    finding = incident.finding
    if finding is None:
        return []
    histories = {
        (history.kind, history.value): history
        for history in (incident.enrichment.indicators if incident.enrichment else [])
    }
    bodies: dict[tuple[str, str], dict[str, Any]] = {}
    for indicator in finding.indicators:
        history = histories.get((indicator.kind, indicator.value))
        body = observable(indicator, history)
        bodies.setdefault(observable_key(body), body)
    return list(bodies.values())


def observable(indicator: Indicator, history: IndicatorHistory | None) -> dict[str, Any]:
    """One indicator as a tagged observable, an IOC if on a threat list or known before."""
    known = history is not None and (history.seen_before or history.blocked_before)
    tags = [TAG, f"cloud-sniper:kind={indicator.kind.value}"]
    tags.append(f"cloud-sniper:role={indicator.role.value}")
    tags += [f"threat-list={name}" for name in indicator.threat_lists]
    if history is not None and history.seen_before:
        tags.append("cloud-sniper:seen-before")
    if history is not None and history.blocked_before:
        tags.append("cloud-sniper:blocked-before")
    return {
        "dataType": DATA_TYPES[indicator.kind],
        "data": indicator.value,
        "message": _observable_message(indicator, history),
        "tlp": TLP_AMBER,
        "pap": PAP_AMBER,
        "tags": tags,
        "ioc": bool(indicator.threat_lists) or known,
    }


def observable_key(body: Mapping[str, Any]) -> tuple[str, str]:
    """Observables are the same when their type and value are."""
    return str(body.get("dataType")), str(body.get("data"))


def _observable_message(indicator: Indicator, history: IndicatorHistory | None) -> str:
    parts = [f"{indicator.kind.value}, {indicator.role.value}"]
    if indicator.direction is not None:
        parts.append(indicator.direction.value)
    if indicator.local_port is not None:
        parts.append(f"local port {indicator.local_port}")
    if indicator.threat_lists:
        parts.append("threat lists: " + ", ".join(indicator.threat_lists))
    if history is not None and history.seen_before:
        parts.append(f"{history.sightings} earlier sighting(s) since {history.first_seen:%Y-%m-%d}")
    if history is not None and history.blocked_before:
        parts.append("blocked before")
    return "; ".join(parts)


# --- ATT&CK procedures ------------------------------------------------------------------------


def procedures(incident: Incident) -> list[dict[str, Any]]:
    """The ATT&CK techniques of the finding type as case procedures (InputProcedure).

    One per technique and each of the mapping's tactics ATT&CK files the technique under;
    they occurred when the finding's activity was first seen.
    """
    finding = incident.finding
    mapping = incident.enrichment.attack if incident.enrichment else None
    if finding is None or mapping is None:
        return []
    occurred = _ms(finding.first_seen or finding.created_at)
    tactics_of = technique_tactics()
    bodies = []
    for technique in mapping.techniques:
        tactics = [t for t in mapping.tactics if t.id in tactics_of.get(technique.id, ())]
        for tactic in tactics or [None]:
            body: dict[str, Any] = {
                "patternId": technique.id,
                "occurDate": occurred,
                "description": (
                    f"{technique.name}, from GuardDuty {finding.type}: {mapping.reason}"
                ),
            }
            if tactic is not None:
                body["tactic"] = tactic_shortname(tactic.name)
            bodies.append(body)
    return bodies


def procedure_key(body: Mapping[str, Any]) -> tuple[str, str]:
    """Procedures are the same when their technique and tactic are."""
    return str(body.get("patternId")), str(body.get("tactic") or "")


def tactic_shortname(name: str) -> str:
    """ATT&CK's short name of a tactic, as TheHive takes it: "command-and-control"."""
    return "-".join(name.lower().split())


@cache
def technique_tactics() -> dict[str, frozenset[str]]:
    """The tactics ATT&CK files each technique of the shipped mapping under, by tactic id."""
    path = attack.DATA_DIR / TECHNIQUE_TACTICS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "technique\ttactics":
        raise ValueError(f"{path.name} line 1: expected the header technique<tab>tactics")
    table = {}
    for number, line in enumerate(lines[1:], start=2):
        technique, _, tactics = line.partition("\t")
        if not technique or not tactics:
            raise ValueError(f"{path.name} line {number}: expected a technique and its tactics")
        table[technique] = frozenset(tactics.split("|"))
    return table


# --- approval tasks ---------------------------------------------------------------------------


def pending_approval_id(incident: Incident) -> str | None:
    """The approval the incident waits for, if any."""
    approval = incident.approval
    if approval is not None:
        return approval.approval_id if approval.status is ApprovalStatus.PENDING else None
    decision = incident.decision
    waiting = decision is not None and decision.mode is Mode.APPROVAL and decision.actions
    # Answered, timed out or failed: the outcome says the wait is over.
    over = incident.outcome in (Outcome.TIMED_OUT, Outcome.FAILED, Outcome.DENIED)
    if waiting and not over and incident.execution_name:
        return naming.approval_id(incident.execution_name)
    return None


def approval_task(incident: Incident) -> dict[str, Any] | None:
    """The task asking a person to answer the pending approval: its id and InputTask body."""
    approval_id = pending_approval_id(incident)
    if approval_id is None or incident.decision is None:
        return None
    lines = ["Cloud Sniper waits for an answer before it acts. Planned actions:", ""]
    lines += [
        f"- {action.kind.value} {_code(action.target)}"
        + (f" for {action.ttl_seconds} s" if action.ttl_seconds else "")
        for action in incident.decision.actions
    ]
    if incident.approval is not None:
        lines += [
            "",
            f"The request expires at {incident.approval.expires_at:%Y-%m-%d %H:%M:%S %Z}.",
        ]
    lines += [
        "",
        "Answer with:",
        "",
        "```",
        f'cloud-sniper approvals approve {approval_id} --reason "..."',
        f'cloud-sniper approvals deny {approval_id} --reason "..."',
        "```",
    ]
    body = {
        "title": f"Answer approval {approval_id}",
        "group": TASK_GROUP,
        "description": "\n".join(lines),
        "status": "Waiting",
        "flag": True,
    }
    return {"approval_id": approval_id, "body": body}


def tasks_to_close(tasks: Iterable[Mapping[str, Any]], incident: Incident) -> list[tuple[str, str]]:
    """(task id, status) of the open approval tasks whose approval has been answered."""
    answered = answered_approvals(incident)
    closing = []
    for task in tasks:
        if task.get("status") in (TASK_DONE, TASK_CANCELLED):
            continue
        for approval_id, status in answered.items():
            if _names_approval(task, approval_id):
                closing.append((task["_id"], status))
    return closing


def answered_approvals(incident: Incident) -> dict[str, str]:
    """The approvals of this execution that no longer wait, with the status of their task."""
    approval = incident.approval
    if approval is not None and approval.status is not ApprovalStatus.PENDING:
        timed_out = approval.status is ApprovalStatus.TIMED_OUT
        return {approval.approval_id: TASK_CANCELLED if timed_out else TASK_DONE}
    if incident.outcome is Outcome.TIMED_OUT and incident.execution_name:
        return {naming.approval_id(incident.execution_name): TASK_CANCELLED}
    return {}


def _names_approval(task: Mapping[str, Any], approval_id: str) -> bool:
    return approval_id in str(task.get("title", ""))


# --- helpers ----------------------------------------------------------------------------------


def new_items(
    wanted: Sequence[dict[str, Any]], existing: Iterable[Mapping[str, Any]], key: Any
) -> list[dict[str, Any]]:
    """The wanted items the case does not hold yet."""
    held = {key(item) for item in existing}
    return [item for item in wanted if key(item) not in held]


def _started(incident: Incident) -> datetime:
    finding = incident.finding
    if finding is not None:
        return finding.first_seen or finding.created_at
    return incident.received_at or incident.reported_at


def _ms(at: datetime) -> int:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return int(at.timestamp() * 1000)


def _inline(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str | None) -> str:
    return _inline(text).replace("|", "\\|") if text else "–"


def _code(text: str | None) -> str:
    if not text:
        return "–"
    return "`" + _inline(text).replace("`", "'").replace("|", "\\|") + "`"
