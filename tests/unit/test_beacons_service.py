"""The scheduled beacon scan: its window, its Athena query, the rows read back, the findings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from cloud_sniper.beacons import synthetic
from cloud_sniper.beacons.findings import FINDING_TYPE, BeaconSource
from cloud_sniper.beacons.models import ScanOptions
from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from services.beacons import handler, service
from services.beacons.service import (
    Ports,
    QueryFailedError,
    QueryStatus,
    QueryTimeoutError,
    UnreadableResultError,
)
from services.beacons.settings import Settings
from tests.beacon_records import CHANCE_REGULAR, scored_pair
from tests.beacons_athena import run_events_on_duckdb, run_on_duckdb

AT = datetime(2026, 12, 4, tzinfo=UTC)
ENVIRONMENT = {
    "ATHENA_WORKGROUP": naming.BEACONS_WORKGROUP,
    "GLUE_DATABASE": naming.FLOW_LOGS_DATABASE,
    "FLOW_LOGS_TABLE": naming.FLOW_LOGS_TABLE,
    "EVENT_BUS_NAME": naming.EVENT_BUS,
    "WINDOW_HOURS": "24",
    "MIN_SCORE": "0.7",
    "MAX_FINDINGS": "25",
}


@dataclass
class FakeQueries:
    """Athena as the scan sees it: the states each status call returns, then the rows."""

    columns: list[str] = field(default_factory=list)
    result: list[list[str | None]] = field(default_factory=list)
    # The second query's answer: the best pairs' event times, for their verification.
    events: tuple[list[str], list[list[str | None]]] = ([], [])
    states: list[str] = field(default_factory=lambda: ["QUEUED", "RUNNING", "SUCCEEDED"])
    reason: str = ""
    started: list[tuple[str, str]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def start(self, sql: str, database: str) -> str:
        self.started.append((sql, database))
        return f"query-{len(self.started)}"

    def status(self, query_id: str) -> QueryStatus:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return QueryStatus(state=state, reason=self.reason, scanned_bytes=123_456)

    def stop(self, query_id: str) -> None:
        self.stopped.append(query_id)

    def rows(self, query_id: str) -> tuple[list[str], list[list[str | None]]]:
        return (self.columns, self.result) if query_id == "query-1" else self.events


@dataclass
class FakeAddresses:
    known: dict[str, BeaconSource] = field(default_factory=dict)
    asked: list[list[str]] = field(default_factory=list)

    def resolve(self, addresses: list[str]) -> dict[str, BeaconSource]:
        self.asked.append(list(addresses))
        return {a: self.known[a] for a in addresses if a in self.known}


@dataclass
class FakeBus:
    calls: list[list[dict[str, Any]]] = field(default_factory=list)

    def publish(self, entries: list[dict[str, Any]]) -> None:
        self.calls.append(list(entries))


class Clock:
    """A clock the fake sleep moves on."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def settings(**changes: str) -> Settings:
    return Settings.from_env({**ENVIRONMENT, **changes})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A day of an estate's flow logs in Parquet with hourly partitions, 16 beacons planted."""
    out = tmp_path_factory.mktemp("beacons-service")
    truth = synthetic.generate(out, records=300_000, format="parquet")
    return out, truth


@pytest.fixture(scope="module")
def answered(generated):
    """What Athena answers the scan's query over that day, computed by DuckDB."""
    out, truth = generated
    scan = service.window(truth.end, 24)
    return run_on_duckdb(out, scan, ScanOptions(since=scan.since))


@pytest.fixture(scope="module")
def events(generated, answered):
    """What Athena answers the verification's query for the best pairs of that day."""
    out, truth = generated
    scan = service.window(truth.end, 24)
    options = ScanOptions(since=scan.since)
    best = service.beacons(service.read_features(*answered), options)[:25]
    keys = [(p.src, p.dst, p.dst_port, p.protocol) for p in best]
    return run_events_on_duckdb(out, scan, options, keys)


def test_the_window_is_the_hours_before_the_scheduled_time():
    scan = service.window(datetime(2026, 12, 4, 6, 0, 12, 500_000, tzinfo=UTC), 24)

    assert scan.since == datetime(2026, 12, 3, 6, 0, 12, tzinfo=UTC)
    assert scan.until == datetime(2026, 12, 4, 6, 0, 12, tzinfo=UTC)


def test_the_partitions_are_the_hours_the_window_touches_day_by_day():
    # Given a window of three hours across a new year
    scan = service.Window(
        since=datetime(2026, 12, 31, 22, 30, tzinfo=UTC),
        until=datetime(2027, 1, 1, 1, 0, tzinfo=UTC),
    )

    # Then the filter names each hour partition once, by its strings
    assert service.partition_filter(scan) == (
        "(year = '2026' AND month = '12' AND day = '31' AND hour IN ('22', '23'))\n"
        "   OR (year = '2027' AND month = '01' AND day = '01' AND hour IN ('00'))"
    )


def test_the_query_reads_the_table_narrowed_to_the_window_and_nothing_else():
    scan = service.window(AT, 24)

    sql = service.athena_query("cloud_sniper", "vpc_flow_logs", scan, ScanOptions(since=scan.since))

    # Then the table is read once, through its partitions, and the analysis reads that
    assert sql.startswith('WITH\nscan_window AS (\nSELECT * FROM "cloud_sniper"."vpc_flow_logs"\n')
    assert sql.count('"cloud_sniper"."vpc_flow_logs"') == 1
    assert "FROM scan_window" in sql
    assert f'"start" >= {int(scan.since.timestamp())}' in sql
    assert "approx_percentile" in sql  # Athena's dialect


def test_athenas_answer_is_read_back_and_scored(generated, answered):
    # Given Athena's rows for the day's candidate pairs
    out, truth = generated
    columns, rows = answered

    # When they are read and scored with the default threshold
    features = service.read_features(columns, rows)
    found = service.beacons(features, ScanOptions())

    # Then every planted beacon is reported, best first, and nine in ten reported are beacons
    keys = [(p.src, p.dst, p.dst_port, p.protocol) for p in found]
    assert truth.beacon_keys() <= set(keys)
    assert len(truth.beacon_keys()) >= 0.9 * len(keys)
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert not any(p.long_connection for p in found)
    assert all(isinstance(f.hist_bins, list) and f.hist_bins for f in features)


def test_a_row_that_is_not_the_features_is_named(answered):
    columns, rows = answered
    broken = list(rows[0])
    broken[columns.index("ts_median")] = None
    unarray = list(rows[0])
    unarray[columns.index("hist_bins")] = "0, 1"

    with pytest.raises(UnreadableResultError, match=r"^result row 2: ts_median: "):
        service.read_features(columns, [rows[0], broken])
    with pytest.raises(UnreadableResultError, match=r"^result row 1: hist_bins: not an array"):
        service.read_features(columns, [unarray])


def test_the_scan_publishes_a_finding_per_beacon_ten_at_a_time(generated, answered, events):
    # Given Athena answering with the day's rows and the best pairs' event times, and EC2
    # knowing the first beacon's host
    out, truth = generated
    first = truth.beacons[0]
    source = BeaconSource(address=first.src, instance_id="i-0123456789abcdef0")
    queries = FakeQueries(*answered, events=events)
    addresses = FakeAddresses({first.src: source})
    bus = FakeBus()
    ports = Ports(queries, addresses, bus, account_id="123456789012", region="us-east-1")
    clock = Clock()

    # When the scheduled scan runs at the end of the day
    outcome = service.scan(ports, settings(), truth.end, 900, clock, clock.sleep)

    # Then the window's query ran in the flow-log database, and waited for Athena between polls;
    # then the verification's, over the same partitions
    (sql, database), (events_sql, events_database) = queries.started
    assert database == events_database == naming.FLOW_LOGS_DATABASE
    assert "scan_window" in sql and "scan_window" in events_sql and "wanted" in events_sql
    assert clock.now == 4.0
    # And each beacon went on the bus as a finding, in batches of at most ten
    assert [len(call) for call in bus.calls] == [10] * (outcome.published // 10) + (
        [outcome.published % 10] if outcome.published % 10 else []
    )
    entries = [entry for call in bus.calls for entry in call]
    details = [json.loads(entry["Detail"]) for entry in entries]
    assert {(e["Source"], e["DetailType"], e["EventBusName"]) for e in entries} == {
        (naming.EVENT_SOURCE, naming.FINDING_DETAIL_TYPE, naming.EVENT_BUS)
    }
    assert {d["type"] for d in details} == {FINDING_TYPE}
    reported = {
        (
            d["service"]["action"]["networkConnectionAction"]["localIpDetails"]["ipAddressV4"],
            d["service"]["action"]["networkConnectionAction"]["remoteIpDetails"]["ipAddressV4"],
        )
        for d in details
    }
    assert {(b.src, b.dst) for b in truth.beacons} <= reported
    # each of the planted beacons verified by its event times, its p-value in the evidence
    assert outcome.dismissed == 0 and outcome.verified == outcome.published
    evidence = [_evidence(d) for d in details]
    assert all(e["verified"] is True and e["pValue"] <= 0.01 for e in evidence)
    # And the finding of the known host names its instance; the others their address only
    by_source = {
        d["resource"]["instanceDetails"]["networkInterfaces"][0]["privateIpAddress"]: d
        for d in details
    }
    assert by_source[first.src]["resource"]["instanceDetails"]["instanceId"] == source.instance_id
    assert {d["updatedAt"] for d in details} == {"2026-12-04T00:00:00.000Z"}
    assert outcome.scanned_bytes == 2 * 123_456  # the window's query and the verification's
    assert outcome.finding_ids == [d["id"] for d in details]
    assert (outcome.since, outcome.until) == (truth.start, truth.end)


def test_a_run_publishes_at_most_its_cap_the_best_first(answered, events):
    queries, bus = FakeQueries(*answered, events=events), FakeBus()
    ports = Ports(queries, FakeAddresses(), bus, account_id="123456789012", region="us-east-1")
    clock = Clock()

    outcome = service.scan(ports, settings(MAX_FINDINGS="3"), AT, 900, clock, clock.sleep)

    assert (outcome.published, len(bus.calls)) == (3, 1)
    assert outcome.beacons > 3
    scores = [json.loads(e["Detail"])["severity"] for e in bus.calls[0]]
    assert scores == sorted(scores, reverse=True)


def test_a_query_athena_fails_is_an_error_with_its_reason():
    queries = FakeQueries(states=["RUNNING", "FAILED"], reason="TABLE_NOT_FOUND: vpc_flow_logs")
    clock = Clock()

    with pytest.raises(QueryFailedError, match=r"^query query-1: FAILED: TABLE_NOT_FOUND"):
        service.wait(queries, "query-1", 100, 2, clock, clock.sleep)


def test_a_query_still_running_at_the_deadline_is_cancelled():
    queries = FakeQueries(states=["RUNNING"])
    clock = Clock()

    with pytest.raises(QueryTimeoutError, match=r"still RUNNING when the function had to stop"):
        service.wait(queries, "query-1", 10, 2, clock, clock.sleep)
    assert queries.stopped == ["query-1"]
    assert clock.now < 10


def test_missing_settings_are_named():
    environment = {k: v for k, v in ENVIRONMENT.items() if k != "ATHENA_WORKGROUP"}
    with pytest.raises(ValueError, match=r"ATHENA_WORKGROUP: Field required"):
        Settings.from_env(environment)
    with pytest.raises(ValueError, match=r"MIN_SCORE: Input should be less than or equal to 1"):
        settings(MIN_SCORE="1.5")


class Context:
    function_name = naming.FUNCTIONS["beacons"]
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cloud-sniper-beacons"
    memory_limit_in_mb = 512
    aws_request_id = "request-1"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def test_the_handler_scans_the_window_of_the_schedules_time(monkeypatch, answered):
    # Given the function's ports and settings, as a cold start builds them
    queries, bus = FakeQueries(*answered), FakeBus()
    ports = Ports(queries, FakeAddresses(), bus, account_id="123456789012", region="us-east-1")
    monkeypatch.setattr(handler, "_ports", lambda: ports)
    monkeypatch.setattr(handler, "_settings", lambda: settings(POLL_SECONDS="0.01"))

    # When the schedule's event arrives
    result = handler.scan({"time": "2026-12-04T00:00:00Z", "detail": {}}, Context())

    # Then the day before that time is scanned and its beacons published
    assert (result["since"], result["until"]) == ("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z")
    assert result["published"] == sum(len(call) for call in bus.calls) > 0


def test_the_handler_lets_a_passing_failure_through_for_the_retry(monkeypatch):
    class Throttled(FakeQueries):
        def start(self, sql: str, database: str) -> str:
            raise TransientAwsError("StartQueryExecution: ThrottlingException")

    ports = Ports(Throttled(), FakeAddresses(), FakeBus(), "123456789012", "us-east-1")
    monkeypatch.setattr(handler, "_ports", lambda: ports)
    monkeypatch.setattr(handler, "_settings", lambda: settings())

    with pytest.raises(TransientAwsError):
        handler.scan({"time": "2026-12-04T00:00:00Z"}, Context())


def _evidence(detail: dict[str, Any]) -> dict[str, Any]:
    """The scan's measures a finding carries."""
    return json.loads(detail["service"]["additionalInfo"]["value"])


def test_the_verification_dismisses_a_pair_regular_only_by_chance():
    # Given two of the best pairs: a clockwork beacon, and 15 calls regular only by chance
    # (a pair of a generated set's background), among the window's 26,775 candidates
    clockwork = scored_pair(dst="203.0.113.7", period_seconds=None)
    chance = scored_pair(dst="198.51.100.9", period_seconds=None)
    rows = [["10.0.1.5", "203.0.113.7", "443", "6", str(t)] for t in range(0, 86400, 60)]
    rows += [["10.0.1.5", "198.51.100.9", "443", "6", str(t)] for t in CHANCE_REGULAR]
    queries = FakeQueries(["src", "dst", "dst_port", "protocol", "ts"], rows)
    clock = Clock()

    # When they are verified
    verified = service.verify_top(
        queries,
        settings(),
        service.window(AT, 24),
        ScanOptions(),
        [clockwork, chance],
        26_775,
        service.Deadline(900, clock, clock.sleep),
    )

    # Then the beacon is kept, verified at its period, and the other dismissed with why
    kept, dismissed = verified.kept, verified.dismissed
    assert [(p.dst, p.verified, p.period_seconds) for p in kept] == [("203.0.113.7", True, 60)]
    assert [(p.dst, p.verified) for p in dismissed] == [("198.51.100.9", False)]
    assert "not beyond chance among the scan's 26,775 candidate pairs" in dismissed[0].why
    ((sql, _),) = queries.started
    assert "'198.51.100.9'" in sql and "'203.0.113.7'" in sql


def test_an_event_row_that_is_not_one_is_named():
    with pytest.raises(service.UnreadableResultError, match=r"^event row 2: "):
        service.read_event_times(
            ["src", "dst", "dst_port", "protocol", "ts"],
            [["10.0.1.5", "203.0.113.7", "443", "6", "60"], ["10.0.1.5", "x", "443", "6", None]],
        )
