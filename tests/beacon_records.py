"""Hand-made flow-log records for the beacon tests: a beacon, a long connection, random calls."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

DAY = 86400
T0 = 1_796_371_200  # 2026-12-04 00:00:00 UTC
HEADER_V2 = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes "
    "start end action log-status"
)


@dataclass(frozen=True)
class Record:
    """One flow-log record, the default format's fields."""

    src: str
    dst: str
    src_port: int
    dst_port: int
    start: int
    end: int
    bytes: int = 700
    packets: int = 5
    protocol: int = 6
    action: str = "ACCEPT"
    status: str = "OK"
    interface: str = "eni-0a1b2c3d4e5f60718"

    def line(self) -> str:
        """The record as a line of the default format."""
        return (
            f"2 123456789012 {self.interface} {self.src} {self.dst} {self.src_port} "
            f"{self.dst_port} {self.protocol} {self.packets} {self.bytes} {self.start} "
            f"{self.end} {self.action} {self.status}"
        )


def nodata(start: int = T0) -> str:
    return f"2 123456789012 eni-0a1b2c3d4e5f60718 - - - - - - - {start} {start + 60} - NODATA"


def skipdata(start: int = T0) -> str:
    return f"2 123456789012 eni-0a1b2c3d4e5f60718 - - - - - - - {start} {start + 60} - SKIPDATA"


def beacon(
    src: str = "10.0.1.5",
    dst: str = "203.0.113.7",
    period: float = 60.0,
    jitter: float = 0.0,
    hours: float = 24,
    size: int = 700,
    size_jitter: float = 0.0,
    seed: int = 1,
    start: int = T0,
    dst_port: int = 443,
    awake: float | None = None,
    asleep: float = 0.0,
) -> list[Record]:
    """Calls every period (times 1 ± jitter), a new source port each; awake/asleep in seconds."""
    rng = random.Random(seed)
    records = []
    t = float(start)
    end = start + hours * 3600
    while t < end:
        if awake is None or (t - start) % (awake + asleep) < awake:
            size_now = int(size * (1 + rng.uniform(-size_jitter, size_jitter)))
            records.append(
                Record(src, dst, rng.randint(32768, 60999), dst_port, int(t), int(t) + 1, size_now)
            )
        t += period * (1 + rng.uniform(-jitter, jitter))
    return records


def long_connection(
    src: str = "10.0.1.6",
    dst: str = "198.51.100.9",
    window: int = 600,
    hours: float = 24,
    seed: int = 2,
    start: int = T0,
) -> list[Record]:
    """One TCP connection streaming all day: a record per capture window, one source port."""
    rng = random.Random(seed)
    return [
        Record(
            src,
            dst,
            41234,
            443,
            start + k * window,
            start + (k + 1) * window - 1,
            rng.randint(400_000, 900_000),
            rng.randint(300, 700),
        )
        for k in range(int(hours * 3600 // window))
    ]


def random_calls(
    src: str = "10.0.1.7",
    dst: str = "192.0.2.50",
    mean: float = 120.0,
    hours: float = 24,
    seed: int = 3,
    start: int = T0,
) -> list[Record]:
    """Calls at random times (a Poisson process) with sizes all over the place."""
    rng = random.Random(seed)
    records = []
    t = start + rng.expovariate(1 / mean)
    while t < start + hours * 3600:
        records.append(
            Record(
                src, dst, rng.randint(32768, 60999), 443, int(t), int(t) + 2, rng.randint(90, 9000)
            )
        )
        t += rng.expovariate(1 / mean)
    return records


def to_src(records: Iterable[Record], src: str) -> list[Record]:
    return [replace(r, src=src) for r in records]


def write_log(path: Path, records: Iterable[Record | str], header: bool = True) -> Path:
    """Records (or raw lines) as a text flow log, with the default header unless told not."""
    lines = [r.line() if isinstance(r, Record) else r for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\n".join(([HEADER_V2] if header else []) + lines)) + "\n")
    return path


def table(con, records: Iterable[Record], name: str = "flow_records") -> str:
    """Records as a DuckDB table with the standard columns; the table's name."""
    from cloud_sniper.beacons.formats import STANDARD_COLUMNS

    columns = ", ".join(f'"{c}" {kind}' for c, kind in STANDARD_COLUMNS.items())
    con.execute(f"CREATE OR REPLACE TABLE {name} ({columns})")
    rows = [
        (
            r.src,
            r.dst,
            r.src_port,
            r.dst_port,
            r.protocol,
            r.packets,
            r.bytes,
            r.start,
            r.end,
            r.action,
            r.status,
            r.interface,
        )
        for r in records
    ]
    if rows:
        con.executemany(
            f"INSERT INTO {name} (srcaddr, dstaddr, srcport, dstport, protocol, packets, bytes, "
            f'start, "end", action, log_status, interface_id) VALUES '
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return name


def features(records: Iterable[Record], options=None) -> dict:
    """The analysis's rows over the records, by (src, dst, dst_port)."""
    import duckdb

    from cloud_sniper.beacons.analysis import PairFeatures, render
    from cloud_sniper.beacons.models import ScanOptions

    con = duckdb.connect()
    name = table(con, records)
    cursor = con.execute(render("duckdb", name, options or ScanOptions()))
    names = [c[0] for c in cursor.description]
    rows = [PairFeatures(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]
    return {(f.src, f.dst, f.dst_port): f for f in rows}


# 15 calls of one host to one address in a day, found among 26,775 random candidate pairs of a
# generated set: far more regular than random arrivals, by chance.
CHANCE_REGULAR = [
    0,
    4987,
    16907,
    18373,
    27162,
    30685,
    39891,
    45495,
    48260,
    53859,
    59658,
    66216,
    72774,
    79074,
] + [84388]


def scored_pair(src: str = "10.0.1.5", dst: str = "203.0.113.7", score: float = 0.8, **changes):
    """A pair as the scan reports it, every other field a plain default."""
    from datetime import UTC, datetime

    from cloud_sniper.beacons.models import PairScore

    at = datetime(2026, 12, 3, tzinfo=UTC)
    fields = {
        "dst_port": 443,
        "protocol": 6,
        "period_seconds": 60,
        "connections": 100,
        "bytes": 1000,
        "first_seen": at,
        "last_seen": at,
        "why": "every 60 s",
    }
    return PairScore(src=src, dst=dst, score=score, **(fields | changes))
