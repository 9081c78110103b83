"""The beacon scan on Athena: the window's query, its rows read back, scored, and published.

Plain functions over the beacon models; AWS sits behind the ports (services/beacons/adapters.py).
The query is the one analysis (cloud_sniper.beacons.analysis) rendered for Athena, over the
flow-log table narrowed to the window's partitions, so Athena reads those hours and no others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from cloud_sniper.beacons import analysis, scoring, verify
from cloud_sniper.beacons.analysis import PairFeatures
from cloud_sniper.beacons.findings import BeaconSource, beacon_event, beacon_finding
from cloud_sniper.beacons.models import PairScore, ScanOptions
from services.beacons.settings import Settings

# The name the analysis reads its records from: the table narrowed to the window's partitions.
WINDOW_RELATION = "scan_window"
# Athena's query states, and the ones it ends in.
SUCCEEDED = "SUCCEEDED"
FINISHED = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
# PutEvents takes at most ten entries a call.
EVENTS_PER_CALL = 10


class BeaconScanError(RuntimeError):
    """The scan could not be done; the message says which step failed and why."""


class QueryFailedError(BeaconScanError):
    """Athena ended the query without results (FAILED or CANCELLED)."""


class QueryTimeoutError(BeaconScanError):
    """The query was still running when the function had to stop; it was cancelled."""


class UnreadableResultError(BeaconScanError):
    """A row of the query's result is not the analysis's features; the message names the field."""


@dataclass(frozen=True)
class QueryStatus:
    """Where a query stands, and what it cost once done."""

    state: str
    reason: str = ""
    scanned_bytes: int = 0
    engine_millis: int = 0


class Queries(Protocol):
    """Athena: run a query in the workgroup, follow it, read its rows."""

    def start(self, sql: str, database: str) -> str: ...

    def status(self, query_id: str) -> QueryStatus: ...

    def stop(self, query_id: str) -> None: ...

    def rows(self, query_id: str) -> tuple[list[str], Iterable[list[str | None]]]: ...


class Addresses(Protocol):
    """EC2: what the estate knows of internal addresses (their interface and instance)."""

    def resolve(self, addresses: Sequence[str]) -> dict[str, BeaconSource]: ...


class Bus(Protocol):
    """EventBridge: put entries on the project's bus."""

    def publish(self, entries: Sequence[dict[str, Any]]) -> None: ...


@dataclass(frozen=True)
class Ports:
    """Everything the scan needs of AWS."""

    queries: Queries
    addresses: Addresses
    bus: Bus
    account_id: str
    region: str


class Outcome(BaseModel):
    """What one run did, for its log line and its return value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_id: str
    since: datetime
    until: datetime
    scanned_bytes: int
    candidates: int
    beacons: int
    dismissed: int  # of the best, those the verification found no schedule in
    published: int
    verified: int  # of those published, those the verification confirmed
    finding_ids: list[str]
    seconds: float


@dataclass(frozen=True)
class Window:
    """The hours a run scans: [since, until)."""

    since: datetime
    until: datetime


def window(at: datetime, hours: int) -> Window:
    """The `hours` before `at`, which is when the schedule fired (so a retry scans the same)."""
    until = at.astimezone(UTC).replace(microsecond=0)
    return Window(since=until - timedelta(hours=hours), until=until)


def partition_filter(scan: Window) -> str:
    """The flow-log table's partitions (year, month, day, hour, as strings) the window touches."""
    hour = scan.since.replace(minute=0, second=0)
    days: dict[tuple[str, str, str], list[str]] = {}
    while hour < scan.until:
        days.setdefault((f"{hour:%Y}", f"{hour:%m}", f"{hour:%d}"), []).append(f"{hour:%H}")
        hour += timedelta(hours=1)
    terms = [
        f"(year = '{year}' AND month = '{month}' AND day = '{day}' AND hour IN "
        f"({', '.join(repr(h) for h in hours)}))"
        for (year, month, day), hours in days.items()
    ]
    return "\n   OR ".join(terms) or "FALSE"


def athena_query(
    database: str,
    table: str,
    scan: Window,
    options: ScanOptions,
    dialect: analysis.DialectName = "athena",
) -> str:
    """The analysis for Athena over the table's partitions of the window only.

    The DuckDB rendering of the same query runs it on a local copy of the table, for the tests.
    """
    rendered = analysis.render(dialect, WINDOW_RELATION, options)
    return _narrowed(database, table, scan, rendered)


def events_query(
    database: str,
    table: str,
    scan: Window,
    options: ScanOptions,
    pairs: list[tuple[str, str, int, int]],
    dialect: analysis.DialectName = "athena",
) -> str:
    """The event times of the pairs given, over the same partitions: for their verification."""
    rendered = analysis.render_events(dialect, WINDOW_RELATION, options, pairs)
    return _narrowed(database, table, scan, rendered)


def _narrowed(database: str, table: str, scan: Window, rendered: str) -> str:
    """A query over the window relation, which the table's partitions of the window become."""
    head = "WITH\n"
    if not rendered.startswith(head):  # pragma: no cover - the analysis always renders a WITH
        raise BeaconScanError("the Athena rendering of the analysis is not a WITH query")
    narrowed = (
        f'{WINDOW_RELATION} AS (\nSELECT * FROM "{database}"."{table}"\n'
        f"WHERE {partition_filter(scan)}\n)"
    )
    return f"{head}{narrowed},\n{rendered[len(head) :]}"


def read_features(
    columns: Sequence[str], rows: Iterable[Sequence[str | None]]
) -> list[PairFeatures]:
    """Athena's rows (every value a string, arrays as `[1, 2]`) as the analysis's features."""
    lists = {name for name, field in PairFeatures.model_fields.items() if _is_list(field)}
    found = []
    for number, row in enumerate(rows, start=1):
        values = dict(zip(columns, row, strict=True))
        for name in lists & values.keys():
            values[name] = _array(values[name], name, number)
        try:
            found.append(PairFeatures.model_validate(values))
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            field = ".".join(str(part) for part in error["loc"])
            raise UnreadableResultError(f"result row {number}: {field}: {error['msg']}") from exc
    return found


def beacons(features: Iterable[PairFeatures], options: ScanOptions) -> list[PairScore]:
    """The pairs scoring the threshold or more, long connections left out, best first."""
    return [
        scoring.pair_score(item, judgement)
        for item, judgement in scoring.reported(features, options)
    ]


def wait(
    queries: Queries,
    query_id: str,
    deadline: float,
    poll_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> QueryStatus:
    """Follow the query until it ends; cancel it and raise if the deadline comes first."""
    while True:
        status = queries.status(query_id)
        if status.state in FINISHED:
            break
        if clock() + poll_seconds >= deadline:
            queries.stop(query_id)
            raise QueryTimeoutError(
                f"query {query_id}: still {status.state} when the function had to stop; "
                "cancelled (a longer window needs a longer timeout)"
            )
        sleep(poll_seconds)
    if status.state != SUCCEEDED:
        raise QueryFailedError(f"query {query_id}: {status.state}: {status.reason or 'no reason'}")
    return status


def scan(
    ports: Ports,
    settings: Settings,
    at: datetime,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """One run: query the window, score the pairs, verify the best, publish a finding for each
    the verification kept."""
    started = clock()
    scan_window = window(at, settings.window_hours)
    options = ScanOptions(since=scan_window.since, min_score=settings.min_score)
    sql = athena_query(settings.database, settings.table, scan_window, options)
    query_id = ports.queries.start(sql, settings.database)
    status = wait(ports.queries, query_id, deadline, settings.poll_seconds, clock, sleep)

    columns, rows = ports.queries.rows(query_id)
    features = read_features(columns, rows)
    found = beacons(features, options)
    verified = verify_top(
        ports.queries,
        settings,
        scan_window,
        options,
        found[: settings.max_findings],
        len(features),
        Deadline(deadline, clock, sleep),
    )
    published = verified.kept
    sources = ports.addresses.resolve(sorted({pair.src for pair in published}))
    documents = [
        beacon_finding(
            pair,
            account_id=ports.account_id,
            region=ports.region,
            detected_at=scan_window.until,
            source=sources.get(pair.src),
        )
        for pair in published
    ]
    for start in range(0, len(documents), EVENTS_PER_CALL):
        ports.bus.publish([beacon_event(d) for d in documents[start : start + EVENTS_PER_CALL]])
    return Outcome(
        query_id=query_id,
        since=scan_window.since,
        until=scan_window.until,
        scanned_bytes=status.scanned_bytes + verified.scanned_bytes,
        candidates=len(features),
        beacons=len(found),
        dismissed=len(verified.dismissed),
        published=len(documents),
        verified=sum(1 for pair in published if pair.verified),
        finding_ids=[document["id"] for document in documents],
        seconds=round(clock() - started, 3),
    )


@dataclass(frozen=True)
class Deadline:
    """When the function must stop, and the clock and sleep to follow a query by."""

    at: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Verified:
    """The best pairs after their verification, and what reading their event times cost."""

    kept: list[PairScore]
    dismissed: list[PairScore]  # tested, and no schedule found
    scanned_bytes: int = 0


def verify_top(
    queries: Queries,
    settings: Settings,
    scan_window: Window,
    options: ScanOptions,
    pairs: list[PairScore],
    candidates: int,
    deadline: Deadline,
) -> Verified:
    """The best pairs verified as the local scan verifies them, their event times read by a
    second query over the same partitions (as many bytes again as the first)."""
    if not pairs:
        return Verified([], [])
    keys = [(pair.src, pair.dst, pair.dst_port, pair.protocol) for pair in pairs]
    sql = events_query(settings.database, settings.table, scan_window, options, keys)
    query_id = queries.start(sql, settings.database)
    status = wait(
        queries, query_id, deadline.at, settings.poll_seconds, deadline.clock, deadline.sleep
    )
    times = read_event_times(*queries.rows(query_id))

    kept, dismissed = [], []
    for pair, key in zip(pairs, keys, strict=True):
        result = verify.verify(times.get(key, []), options.seed, candidates=candidates)
        (dismissed if result.dismissed else kept).append(verify.with_verdict(pair, result))
    return Verified(kept, dismissed, status.scanned_bytes)


def read_event_times(
    columns: Sequence[str], rows: Iterable[Sequence[str | None]]
) -> dict[tuple[str, str, int, int], list[int]]:
    """Athena's rows of (src, dst, dst_port, protocol, ts) as each pair's event times."""
    times: dict[tuple[str, str, int, int], list[int]] = {}
    for number, row in enumerate(rows, start=1):
        values = dict(zip(columns, row, strict=True))
        try:
            key = (
                str(values["src"]),
                str(values["dst"]),
                int(values["dst_port"] or ""),
                int(values["protocol"] or ""),
            )
            times.setdefault(key, []).append(int(values["ts"] or ""))
        except (KeyError, ValueError) as exc:
            raise UnreadableResultError(f"event row {number}: {exc}") from exc
    return times


def _is_list(field: Any) -> bool:
    return getattr(field.annotation, "__origin__", None) is list


def _array(value: str | None, name: str, row: int) -> list[int]:
    """Athena's text of an array of integers: `[0, 3, 5]`, `[]`."""
    text = (value or "").strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise UnreadableResultError(f"result row {row}: {name}: not an array ({text[:40]!r})")
    inner = text[1:-1].strip()
    try:
        return [int(part) for part in inner.split(",")] if inner else []
    except ValueError as exc:
        raise UnreadableResultError(f"result row {row}: {name}: {exc}") from exc
