"""Security Hub: the workflow status and note of the finding an incident reports on."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cloud_sniper.domain import asff, normalize
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import Incident, Outcome

# Who the note says wrote it, and the most Security Hub keeps of a note's text.
UPDATED_BY = "cloud-sniper"
NOTE_LIMIT = 512
_ELLIPSIS = "…"

_GUARDDUTY_ARN = re.compile(
    r"^arn:aws[a-z-]*:guardduty:[a-z0-9-]+:\d{12}:detector/[^/]+/finding/(?P<id>[^/]+)$"
)


class SecurityHubError(RuntimeError):
    """Security Hub refused the update, or could not be reached; the message says which."""


class Workflow(StrEnum):
    """The workflow statuses Cloud Sniper sets: a person is told, or the finding is dealt with."""

    NOTIFIED = "NOTIFIED"
    RESOLVED = "RESOLVED"


@dataclass(frozen=True)
class FindingIdentifier:
    """A finding as Security Hub names it: its ASFF Id and the ARN of its product."""

    id: str
    product_arn: str


@dataclass(frozen=True)
class FindingUpdate:
    """What BatchUpdateFindings changes on one finding."""

    finding: FindingIdentifier
    workflow: Workflow
    note: str

    def request(self) -> dict[str, Any]:
        """The BatchUpdateFindings parameters."""
        return {
            "FindingIdentifiers": [{"Id": self.finding.id, "ProductArn": self.finding.product_arn}],
            "Workflow": {"Status": self.workflow.value},
            "Note": {"Text": self.note, "UpdatedBy": UPDATED_BY},
        }


@dataclass(frozen=True)
class Skipped:
    """Why an incident's finding is left alone in Security Hub."""

    reason: str


def plan_update(
    incident: Incident, event: Mapping[str, Any] | None, report_location: str
) -> FindingUpdate | Skipped:
    """The update of the incident's finding in Security Hub, or why there is none.

    `event` is the delivery as the execution received it: it names the finding as Security Hub
    does, which the normalized finding does not keep.
    """
    finding = incident.finding
    if finding is None:
        return Skipped("the delivery could not be read as a finding")
    if finding.sample:
        return Skipped("a sample finding")
    if incident.dry_run:
        return Skipped("a dry run changes nothing")
    if incident.outcome is Outcome.IGNORED:
        return Skipped("the policy ignores the finding")

    # TODO(security-hub): GuardDuty's own delivery does not show the workflow status a person
    # set in Security Hub, so a SUPPRESSED finding is set back to NOTIFIED or RESOLVED; reading
    # it first would take securityhub:GetFindings and a call more per report.
    identifier = identify(incident, event)
    if identifier is None:
        return Skipped(f"Security Hub does not hold findings of {finding.source}")
    return FindingUpdate(
        finding=identifier,
        workflow=workflow_of(incident.outcome),
        note=note_text(incident, report_location),
    )


def workflow_of(outcome: Outcome) -> Workflow:
    """RESOLVED once every action took effect; NOTIFIED while a person has something to do."""
    return Workflow.RESOLVED if outcome is Outcome.MITIGATED else Workflow.NOTIFIED


def identify(incident: Incident, event: Mapping[str, Any] | None) -> FindingIdentifier | None:
    """The finding's identifier in Security Hub; None for a finding Security Hub does not hold.

    A finding delivered by Security Hub carries its Id and ProductArn. GuardDuty's own delivery
    carries its ARN, which is the ASFF Id of its copy in Security Hub; failing that, the ARN is
    made from the detector id, as GuardDuty makes it.
    """
    finding = incident.finding
    if finding is None:
        return None
    raw = _raw_finding(event)
    if asff.is_finding(raw):
        asff_id, product_arn = raw.get("Id"), raw.get("ProductArn")
        if isinstance(asff_id, str) and asff_id and isinstance(product_arn, str) and product_arn:
            return FindingIdentifier(id=asff_id, product_arn=product_arn)
        return None
    if finding.source != asff.GUARDDUTY_SOURCE:
        return None

    guardduty = normalize.camel_keys(raw)
    arn = guardduty.get("arn")
    match = _GUARDDUTY_ARN.match(arn) if isinstance(arn, str) else None
    if match is None or match.group("id") != finding.id:
        detector = (guardduty.get("service") or {}).get("detectorId")
        if not isinstance(detector, str) or not detector:
            return None
        arn = (
            f"arn:{finding.partition}:guardduty:{finding.region}:{finding.account_id}:"
            f"detector/{detector}/finding/{finding.id}"
        )
    product_arn = f"arn:{finding.partition}:securityhub:{finding.region}::product/aws/guardduty"
    return FindingIdentifier(id=arn, product_arn=product_arn)


def note_text(incident: Incident, report_location: str) -> str:
    """The note: incident, outcome, what was done, and where the report is; 512 characters at most.

    What was done is shortened first, so the report's location stays whole.
    """
    head = f"Cloud Sniper incident {incident.incident_id}: {incident.outcome.value}."
    tail = f" Report: {report_location}"
    done = _done(incident)
    room = NOTE_LIMIT - len(head) - len(tail)
    if done and room > len(_ELLIPSIS) + 1:
        if len(done) > room:
            done = done[: room - len(_ELLIPSIS)].rstrip() + _ELLIPSIS
        text = head + done + tail
    else:
        text = head + tail
    if len(text) > NOTE_LIMIT:
        text = text[: NOTE_LIMIT - len(_ELLIPSIS)] + _ELLIPSIS
    return text


def _done(incident: Incident) -> str:
    decision = incident.decision
    parts = []
    if decision is not None:
        parts.append(f"decision {decision.mode.value}")
    if incident.approval is not None:
        approval = incident.approval
        by = f" by {approval.approver}" if approval.approver else ""
        parts.append(f"approval {approval.approval_id} {approval.status.value}{by}")
    actions = [
        f"{action.kind.value} {action.target} {action.status.value}" for action in incident.actions
    ]
    if actions:
        parts.append("actions: " + ", ".join(actions))
    if incident.failure is not None:
        parts.append(f"failure {incident.failure.error}")
    text = "; ".join(parts)
    # One line: Security Hub's console shows the note as a single paragraph.
    return " " + " ".join(text.split()) + "." if text else ""


def _raw_finding(event: Mapping[str, Any] | None) -> dict[str, Any]:
    if not event:
        return {}
    try:
        raw, _ = normalize.unwrap(dict(event))
    except InvalidFindingError:
        return {}
    return raw if isinstance(raw, dict) else {}
