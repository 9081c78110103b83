"""The report's TheHive case, against a local server that answers as TheHive 5's v1 API does.

The server checks what TheHive checks: the Bearer API key, the method and path, the fields each
body may hold and their values, and refuses a duplicate observable, as TheHive does.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from cloud_sniper.domain import attack
from services.report import handler as report_handler
from services.report.incident import ReportRequest, build_incident
from services.report.integrations import sync_thehive
from services.report.thehive import incident_tag
from services.report.thehive_adapter import TheHiveCases
from tests.integration.report_account import BUCKET, Context, report_account

API_KEY = "h1v3-k3y-for-tests"
SECRET = "cloud-sniper/thehive-api-key"
INCIDENT_ID = "inc-0f1e2d3c4b5a6978"
SSH = "UnauthorizedAccess:EC2/SSHBruteForce"

# The fields of thehive4py's InputCase, InputUpdateCase, InputObservable, InputProcedure,
# InputTask and InputUpdateTask that Cloud Sniper may send; TheHive refuses others.
CASE_FIELDS = {"title", "description", "severity", "startDate", "tags", "tlp", "pap", "status"}
CASE_FIELDS |= {"flag"}
CASE_UPDATE_FIELDS = {"title", "description", "severity", "status", "addTags", "flag", "tags"}
OBSERVABLE_FIELDS = {"dataType", "data", "message", "tlp", "pap", "tags", "ioc"}
PROCEDURE_FIELDS = {"patternId", "occurDate", "tactic", "description"}
TASK_FIELDS = {"title", "group", "description", "status", "flag"}
DATA_TYPES = {"ip", "domain", "hash", "other", "url", "fqdn", "mail"}
CASE_STATUSES = {"New", "InProgress", "TruePositive", "FalsePositive", "Indeterminate", "Other"}
TASK_STATUSES = {"Waiting", "InProgress", "Completed", "Cancel"}
PATTERN = re.compile(r"^T\d{4}(\.\d{3})?$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeTheHive:
    """The state of the emulated TheHive and the requests it answered."""

    requests: list[Request] = field(default_factory=list)
    cases: dict[str, dict] = field(default_factory=dict)
    observables: dict[str, list[dict]] = field(default_factory=dict)
    procedures: dict[str, list[dict]] = field(default_factory=dict)
    tasks: dict[str, list[dict]] = field(default_factory=dict)
    # Technique ids TheHive's ATT&CK catalogue lacks: a procedure of one is refused.
    unknown_patterns: set[str] = field(default_factory=set)
    url: str = ""
    counter: int = 0

    def new_id(self) -> str:
        self.counter += 1
        return f"~{4096 + self.counter}"

    def writes(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if r.path != "/api/v1/query"]


class Refused(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _fields(body: Any, allowed: set[str], required: set[str], what: str) -> dict:
    if not isinstance(body, dict):
        raise Refused(400, "BadRequest", f"{what}: not a JSON object")
    if set(body) - allowed:
        raise Refused(
            400, "BadRequest", f"{what}: unknown attributes {sorted(set(body) - allowed)}"
        )
    if required - set(body):
        raise Refused(400, "BadRequest", f"{what}: missing {sorted(required - set(body))}")
    return body


def _answer(hive: FakeTheHive, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
    """TheHive's answer to one authenticated request."""
    now = int(datetime.now(UTC).timestamp() * 1000)
    if (method, path) == ("POST", "/api/v1/query"):
        return 200, _query(hive, query, body)
    if (method, path) == ("POST", "/api/v1/case"):
        case = _fields(body, CASE_FIELDS, {"title", "description"}, "case")
        assert 1 <= case.get("severity", 2) <= 4 and 0 <= case["tlp"] <= 4 and 0 <= case["pap"] <= 3
        assert case.get("status", "New") in CASE_STATUSES
        case_id = hive.new_id()
        stored = {
            "_id": case_id,
            "_type": "Case",
            "_createdAt": now + hive.counter,
            "number": len(hive.cases) + 1,
            "status": "New",
            "severity": 2,
            **case,
        }
        hive.cases[case_id] = stored
        return 201, stored

    match = re.fullmatch(r"/api/v1/case/(~\d+)(?:/(observable|procedure|task))?", path)
    if match and match.group(1) not in hive.cases:
        raise Refused(404, "NotFoundError", f"Case {match.group(1)} not found")
    if match and method == "PATCH" and match.group(2) is None:
        changes = _fields(body, CASE_UPDATE_FIELDS, set(), "case update")
        case = hive.cases[match.group(1)]
        add = changes.pop("addTags", [])
        case.update(changes)
        case["tags"] = [*case.get("tags", []), *(t for t in add if t not in case.get("tags", []))]
        return 204, None
    if match and method == "POST" and match.group(2) == "observable":
        observable = _fields(body, OBSERVABLE_FIELDS, {"dataType", "data"}, "observable")
        assert observable["dataType"] in DATA_TYPES
        held = hive.observables.setdefault(match.group(1), [])
        if any((o["dataType"], o["data"]) == (body["dataType"], body["data"]) for o in held):
            raise Refused(400, "CreateError", f"Observable {body['data']} already exists")
        stored = {"_id": hive.new_id(), "_type": "Observable", **observable}
        held.append(stored)
        return 201, [stored]
    if match and method == "POST" and match.group(2) == "procedure":
        procedure = _fields(body, PROCEDURE_FIELDS, {"patternId", "occurDate"}, "procedure")
        assert PATTERN.match(procedure["patternId"]) and isinstance(procedure["occurDate"], int)
        if procedure["patternId"] in hive.unknown_patterns:
            raise Refused(404, "NotFoundError", f"Pattern {procedure['patternId']} not found")
        stored = {"_id": hive.new_id(), **procedure}
        hive.procedures.setdefault(match.group(1), []).append(stored)
        return 201, stored
    if match and method == "POST" and match.group(2) == "task":
        task = _fields(body, TASK_FIELDS, {"title"}, "task")
        assert task.get("status", "Waiting") in TASK_STATUSES
        stored = {"_id": hive.new_id(), "_type": "Task", "status": "Waiting", **task}
        hive.tasks.setdefault(match.group(1), []).append(stored)
        return 201, stored

    match = re.fullmatch(r"/api/v1/task/(~\d+)", path)
    if match and method == "PATCH":
        changes = _fields(body, {"status", "title", "description"}, set(), "task update")
        assert changes.get("status", "Waiting") in TASK_STATUSES
        for tasks in hive.tasks.values():
            for task in tasks:
                if task["_id"] == match.group(1):
                    task.update(changes)
                    return 204, None
        raise Refused(404, "NotFoundError", f"Task {match.group(1)} not found")
    raise Refused(404, "NotFound", f"{method} {path}")


def _query(hive: FakeTheHive, query: dict, body: Any) -> list[dict]:
    """TheHive's query API, for the operations Cloud Sniper sends."""
    steps = body["query"]
    first = steps[0]
    if first == {"_name": "listCase"}:
        assert query["name"] == ["cases"]
        found = list(hive.cases.values())
        for step in steps[1:]:
            if step["_name"] == "filter":
                condition = step["_eq"]
                assert condition["_field"] == "tags"
                found = [c for c in found if condition["_value"] in c.get("tags", [])]
            elif step["_name"] == "sort":
                assert step["_fields"] == [{"_createdAt": "asc"}]
                found.sort(key=lambda c: c["_createdAt"])
            else:
                raise Refused(400, "BadRequest", f"query step {step['_name']}")
        return found
    assert first["_name"] == "getCase" and len(steps) == 2
    case_id, kind = first["idOrName"], steps[1]["_name"]
    assert query["name"] == [f"case-{kind}"]
    if case_id not in hive.cases:
        raise Refused(404, "NotFoundError", f"Case {case_id} not found")
    return list(getattr(hive, kind).get(case_id, []))


@pytest.fixture
def thehive() -> Iterator[FakeTheHive]:
    """TheHive 5 on a loopback port, answering in a thread."""
    hive = FakeTheHive()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            hive.requests.append(Request(self.command, url.path, parse_qs(url.query), body))
            try:
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    raise Refused(401, "AuthenticationError", "Authentication failure")
                if body is not None:
                    assert self.headers.get("Content-Type") == "application/json"
                status, answer = _answer(hive, self.command, url.path, parse_qs(url.query), body)
            except Refused as refused:
                status, answer = refused.status, {"type": refused.kind, "message": refused.message}
            except AssertionError as exc:
                status, answer = 400, {"type": "BadRequest", "message": f"invalid value: {exc}"}
            payload = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hive.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield hive
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def mitigated(event):
    """A mitigated SSH brute force, enriched with its ATT&CK mapping."""

    def make() -> dict:
        request = copy.deepcopy(event("report-request-mitigated.json"))
        mapping = attack.mapping_for(SSH).model_dump(mode="json")
        request["state"]["enrichment"]["attack"] = mapping
        return request

    return make


def later(request: dict) -> dict:
    """A later delivery of the same finding: a new execution, and a second attacker address."""
    request["execution_name"] = "7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1-20240501T163000-9f8e7d6c"
    request["execution_started_at"] = "2024-05-01T16:30:08Z"
    finding = request["state"]["finding"]
    finding["updated_at"] = "2024-05-01T16:30:00Z"
    finding["severity"], finding["severity_label"] = 8.0, "High"
    finding["indicators"].append(
        {"kind": "ipv4", "value": "198.51.100.8", "role": "attacker", "threat_lists": ["Tor"]}
    )
    return request


def cases_for(thehive: FakeTheHive) -> TheHiveCases:
    return TheHiveCases(thehive.url, lambda: API_KEY)


def incident_from(request: dict):
    return build_incident(ReportRequest.model_validate(request), datetime.now(UTC))


def test_the_first_delivery_creates_the_case_and_the_second_updates_it(
    monkeypatch, thehive, mitigated
):
    # Given the report function configured for TheHive, its API key in Secrets Manager
    environment = {"THEHIVE_URL": thehive.url, "THEHIVE_API_KEY_SECRET": SECRET}
    with report_account(monkeypatch, **environment):
        boto3.client("secretsmanager").create_secret(
            Name=SECRET, SecretString=json.dumps({"api_key": API_KEY})
        )

        # When a finding is reported
        first = report_handler.report(mitigated(), Context())

        # Then one case is created, with the observable and the ATT&CK procedures
        result = first["integrations"]["thehive"]
        assert result["status"] == "created"
        techniques = attack.mapping_for(SSH).techniques
        assert (result["observables_added"], result["procedures_added"]) == (1, len(techniques))
        [case] = thehive.cases.values()
        assert case["_id"] == result["case_id"]
        assert incident_tag(INCIDENT_ID) in case["tags"] and SSH in case["tags"]
        assert (case["severity"], case["tlp"], case["pap"], case["status"]) == (
            2,
            2,
            2,
            "InProgress",
        )
        assert first["report_keys"]["markdown"] in case["description"]
        created = [r for r in thehive.requests if r.path == "/api/v1/case"]
        assert [r.method for r in created] == ["POST"]
        procedures = thehive.procedures[case["_id"]]
        assert {(p["patternId"], p["tactic"]) for p in procedures} >= {
            ("T1110.001", "credential-access")
        }

        # When a later delivery of the same finding is reported
        thehive.requests.clear()
        second = report_handler.report(later(mitigated()), Context())

    # Then the same case is found by its tag and updated, never a second case
    result = second["integrations"]["thehive"]
    assert (result["status"], result["case_id"]) == ("updated", case["_id"])
    assert len(thehive.cases) == 1
    assert thehive.writes() == [
        ("PATCH", f"/api/v1/case/{case['_id']}"),
        ("POST", f"/api/v1/case/{case['_id']}/observable"),
    ]
    [patch] = [r for r in thehive.requests if r.method == "PATCH"]
    assert patch.body["severity"] == 3
    assert second["report_keys"]["markdown"] in patch.body["description"]

    # And only the new address was added, an IOC for its threat list
    observables = thehive.observables[case["_id"]]
    assert [o["data"] for o in observables] == ["198.51.100.7", "198.51.100.8"]
    assert observables[1]["ioc"] is True and "threat-list=Tor" in observables[1]["tags"]
    assert (result["observables_added"], result["procedures_added"]) == (1, 0)
    assert "problems" not in result


def test_a_pending_approval_is_a_task_completed_once_answered(thehive, mitigated):
    # Given an incident reported while its approval waits
    request = mitigated()
    request["state"]["decision"]["mode"] = "approval"
    request["state"].pop("mitigation")
    pending = {
        "approval_id": "apr-0123456789",
        "status": "pending",
        "requested_at": "2024-05-01T10:30:10Z",
        "expires_at": "2024-05-01T11:30:10Z",
    }
    request["state"]["approval"] = pending
    cases = cases_for(thehive)

    # When it is synced, then synced again once the approval is answered
    first = sync_thehive(cases, incident_from(request), "s3://bucket/report.md")
    answered = copy.deepcopy(mitigated())
    answered["state"]["decision"]["mode"] = "approval"
    answered["state"]["approval"] = {**pending, "status": "approved", "approver": "alice"}
    second = sync_thehive(cases, incident_from(answered), "s3://bucket/report.md")

    # Then the case asked for an answer in a task, completed by the second report
    [case] = thehive.cases.values()
    [task] = thehive.tasks[case["_id"]]
    assert task["title"] == "Answer approval apr-0123456789"
    assert "cloud-sniper approvals approve apr-0123456789" in task["description"]
    assert (first["tasks_added"], second["tasks_added"], second["tasks_closed"]) == (1, 0, 1)
    assert task["status"] == "Completed"
    assert case["flag"] is True and case["status"] == "InProgress"


def test_a_procedure_unknown_to_thehive_is_a_problem_not_a_failure(thehive, mitigated):
    # Given TheHive without one of the techniques in its ATT&CK catalogue
    thehive.unknown_patterns.add("T1110.001")

    # When the incident is synced
    result = sync_thehive(cases_for(thehive), incident_from(mitigated()), "s3://b/r")

    # Then the case holds the rest, and the refusal is said with TheHive's reason
    assert result["status"] == "created"
    assert result["procedures_added"] == len(attack.mapping_for(SSH).techniques) - 1
    assert result["problems"] == [
        "procedure T1110.001: TheHive 404: NotFoundError - Pattern T1110.001 not found"
    ]


def test_a_wrong_api_key_fails_the_sync_alone(thehive, mitigated):
    # When the incident is synced with a key TheHive refuses
    cases = TheHiveCases(thehive.url, lambda: "not-the-key")
    result = sync_thehive(cases, incident_from(mitigated()), "s3://b/r")

    # Then the sync failed, saying why, and nothing was written
    assert result == {
        "status": "failed",
        "error": "TheHiveRequestError: TheHive 401: AuthenticationError - Authentication failure",
    }
    assert thehive.cases == {}


def test_an_unreachable_thehive_never_fails_the_report(monkeypatch, thehive, mitigated):
    # Given TheHive's URL on a port nobody listens on
    environment = {"THEHIVE_URL": "http://127.0.0.1:9", "THEHIVE_API_KEY_SECRET": SECRET}
    with report_account(monkeypatch, **environment) as s3:
        boto3.client("secretsmanager").create_secret(Name=SECRET, SecretString=API_KEY)

        # When a finding is reported
        result = report_handler.report(mitigated(), Context())

        # Then the reports are written and the failure is in the result
        keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
        assert keys >= set(result["report_keys"].values())
    sync = result["integrations"]["thehive"]
    assert sync["status"] == "failed"
    assert sync["error"].startswith("TheHiveRequestError: TheHive unreachable: ConnectionError")


def test_a_missing_secret_fails_the_sync_naming_the_secret(monkeypatch, thehive, mitigated):
    environment = {"THEHIVE_URL": thehive.url, "THEHIVE_API_KEY_SECRET": SECRET}
    with report_account(monkeypatch, **environment):
        result = report_handler.report(mitigated(), Context())

    sync = result["integrations"]["thehive"]
    assert sync["status"] == "failed"
    assert f"secret {SECRET}" in sync["error"] and "ResourceNotFoundException" in sync["error"]
    assert thehive.requests == []


def test_the_sync_stops_when_its_time_is_spent(thehive, mitigated):
    # Given a clock on which each request takes five seconds
    ticks = iter(range(0, 1000, 5))
    cases = TheHiveCases(thehive.url, lambda: API_KEY, clock=lambda: next(ticks))

    # When the incident is synced
    result = sync_thehive(cases, incident_from(mitigated()), "s3://b/r")

    # Then it stops once the budget is spent, saying so
    assert result["status"] == "failed"
    assert "no time left: 12 s spent on TheHive" in result["error"]


def test_a_dry_run_asks_nothing_of_thehive(thehive, mitigated):
    # Given a dry run
    request = mitigated()
    request["state"]["dry_run"] = True

    # When it is synced
    result = sync_thehive(cases_for(thehive), incident_from(request), "s3://b/r")

    # Then TheHive heard nothing
    assert result == {"status": "skipped", "reason": "a dry run changes nothing"}
    assert thehive.requests == []


def test_an_approval_request_opens_the_case_with_its_task_and_the_report_completes_it(
    thehive, event
):
    # Given an approval just requested: the execution waits, no report is written yet
    from services.decide import cases
    from services.decide.approval_request import ApprovalRequest, new_record

    request = ApprovalRequest.model_validate(event("request-approval.json"))
    record = new_record(request, now=datetime(2024, 5, 1, 10, 30, 10, tzinfo=UTC))
    store = cases_for(thehive)

    # When the request opens the incident's case
    opened = cases.open_case(request, record, store, datetime(2024, 5, 1, 10, 30, 11, tzinfo=UTC))

    # Then TheHive has one case for the incident, flagged, with the task asking for the answer
    [case] = thehive.cases.values()
    assert opened.created and opened.tasks_added == 1
    assert incident_tag(request.incident_id) in case["tags"]
    assert case["flag"] is True
    [task] = thehive.tasks[case["_id"]]
    assert task["title"] == f"Answer approval {record.approval_id}"
    assert f"cloud-sniper approvals approve {record.approval_id}" in task["description"]
    assert request.token not in json.dumps([r.body for r in thehive.requests])

    # When the execution's report comes, the approval answered
    answered = record.model_copy(
        update={"status": "approved", "approver": "alice", "reason": "confirmed"}
    )
    report = {
        "state": {
            "incident_id": request.incident_id,
            "finding": request.finding.model_dump(mode="json"),
            "decision": request.decision.model_dump(mode="json"),
            "approval": answered.approval().model_dump(mode="json"),
        },
        "execution_name": request.execution_name,
        "execution_started_at": "2024-05-01T10:30:08Z",
    }
    closed = sync_thehive(store, incident_from(report), "s3://bucket/report.md")

    # Then it updates the same case and completes the task
    assert list(thehive.cases) == [case["_id"]]
    assert (closed["tasks_added"], closed["tasks_closed"]) == (0, 1)
    assert task["status"] == "Completed"
