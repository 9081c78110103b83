"""The one definition of the beacon analysis, rendered as DuckDB SQL or Athena (Trino) SQL.

From a relation of flow-log records with the standard column names it produces one row per
candidate pair (an internal source calling one outside address, port and protocol) with the
features the scoring reads: counts, inter-arrival and size quartiles and deviations, the
capture-window signs of a long connection, and the pair's histogram over the dataset's window.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cloud_sniper.beacons.models import ScanOptions

DialectName = Literal["duckdb", "athena"]

# The source's columns: the flow-log fields by their Parquet names. The first five are required.
REQUIRED_FIELDS = ("srcaddr", "dstaddr", "dstport", "protocol", "start")
STANDARD_FIELDS = REQUIRED_FIELDS + (
    "srcport",
    "packets",
    "bytes",
    "end",
    "action",
    "log_status",
    "interface_id",
    "flow_direction",
    "pkt_srcaddr",
    "pkt_dstaddr",
    "tcp_flags",
)
# Fields of the source the analysis never reads: a local scan leaves them out of its table.
_UNREAD = ("packets", "tcp_flags")

# A delta longer than this many times the pair's median is a pause (a beacon asleep), not an
# interval of its schedule: the timing is scored over the active spans between pauses.
GAP_FACTOR = 4
# Flow logs aggregate a flow over a capture window of 60 s or 600 s: a record per window with
# deltas this close to it is what one long connection looks like.
CAPTURE_WINDOWS = (60, 600)
WINDOW_TOLERANCE = 0.05
# Consecutive records of one connection abut: the next starts within this of the last's end.
CONTIGUOUS_SECONDS = 2
# A source port seen again within two capture windows (and a little) is the same connection:
# ephemeral ports are not reused that soon.
SAME_CONNECTION_SECONDS = 2 * max(CAPTURE_WINDOWS) + 60
# The histogram: hourly bins, or 24 bins over a window shorter than a day, at most 336 bins.
HOUR = 3600
MIN_BINS = 24
MAX_BINS = 336

_SOURCE = re.compile(r'(?:[A-Za-z_][\w$]*|"[^"]+")(?:\.(?:[A-Za-z_][\w$]*|"[^"]+"))*')


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines; everything else is written once."""

    name: DialectName

    def quantile(self, expr: str, q: float) -> str:
        if self.name == "duckdb":
            return f"quantile_cont({expr}, {q})"
        # Athena has no exact quantile; its approximation is within 1% rank, plenty for scores.
        return f"approx_percentile(CAST({expr} AS DOUBLE), {q})"

    def list_agg(self, expr: str, order: str) -> str:
        if self.name == "duckdb":
            return f"list({expr} ORDER BY {order})"
        return f"array_agg({expr} ORDER BY {order})"

    def epoch_to_timestamp(self, expr: str) -> str:
        if self.name == "duckdb":
            return f"to_timestamp({expr})"
        return f"from_unixtime({expr})"

    def cte(self, name: str, body: str, materialized: bool | None = None) -> str:
        """A CTE; DuckDB is told which to compute once and which to inline, Trino decides alone."""
        keyword = ""
        if self.name == "duckdb" and materialized is not None:
            keyword = "MATERIALIZED " if materialized else "NOT MATERIALIZED "
        return f"{name} AS {keyword}(\n{body}\n)"


class PairFeatures(BaseModel):
    """One row of the analysis: a candidate pair and what its records show."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    pair_id: int
    src: str
    dst: str
    dst_port: int
    protocol: int
    connections: int  # records
    events: int  # distinct start times: records of one moment on several interfaces are one
    bytes: int
    first_seen: int  # epoch seconds
    last_seen: int
    dst_sources: int  # internal sources calling the destination
    estate_sources: int  # internal sources in the data
    window_start: int
    window_end: int
    bin_seconds: float
    deltas: int
    gaps: int  # deltas judged pauses
    port_reuse: float  # share of records continuing a connection (their source port) of before
    active_deltas: int
    active_seconds: float
    ts_q1: float
    ts_median: float
    ts_q3: float
    ts_mad: float
    ts_min: float
    ts_max: float
    window_share: float  # of those, share a capture window (60 s, 600 s) after the port's last
    contiguous_share: float  # of those, share starting where the port's last record ended
    ds_q1: float
    ds_median: float
    ds_q3: float
    ds_mad: float
    hist_bins: list[int]
    hist_counts: list[int]


FEATURE_COLUMNS = tuple(PairFeatures.model_fields)


def render(
    dialect: DialectName,
    source: str,
    options: ScanOptions,
    columns: Collection[str] | None = None,
) -> str:
    """The SQL producing per-pair features from the flow-log relation named `source`.

    `columns` names the source's columns when it lacks some of the optional ones (a table of
    the default format has no pkt_srcaddr); None means it has them all.
    """
    d = _dialect(dialect)
    steps = _flow_steps(d, source, options, columns) + _feature_steps(d, options)
    select = _final_select(d, options)
    return "WITH\n" + ",\n".join(steps) + "\n" + select


def render_events(
    dialect: DialectName,
    source: str,
    options: ScanOptions,
    pairs: list[tuple[str, str, int, int]],
    columns: Collection[str] | None = None,
) -> str:
    """The SQL giving the distinct start times of the pairs given: for their verification."""
    d = _dialect(dialect)
    if not pairs:
        raise ValueError("no pairs to read the event times of")
    wanted = ",\n  ".join(
        f"({_text(src)}, {_text(dst)}, {int(port)}, {int(proto)})"
        for src, dst, port, proto in pairs
    )
    # A join rather than a test per pair: one hash lookup a record, however many pairs.
    body = """SELECT DISTINCT f.src, f.dst, f.dst_port, f.protocol, f.ts
FROM flows f
JOIN wanted w
  ON f.src = w.src AND f.dst = w.dst AND f.dst_port = w.dst_port AND f.protocol = w.protocol
ORDER BY f.src, f.dst, f.dst_port, f.protocol, f.ts"""
    steps = _flow_steps(d, source, options, columns)
    steps.append(f"wanted (src, dst, dst_port, protocol) AS (\nVALUES\n  {wanted}\n)")
    return "WITH\n" + ",\n".join(steps) + "\n" + body


def _dialect(name: str) -> Dialect:
    if name not in ("duckdb", "athena"):
        raise ValueError(f"{name!r} is not a dialect: use duckdb or athena")
    return Dialect(name)  # type: ignore[arg-type]


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _check_source(source: str) -> str:
    if not _SOURCE.fullmatch(source):
        raise ValueError(f"{source!r} is not a table name (name or schema.name)")
    return source


def since_epoch(since: datetime) -> int:
    """A datetime as epoch seconds; a naive one is UTC, as flow logs' times are."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return int(since.timestamp())


# --- the steps ----------------------------------------------------------------------------


def _flow_steps(
    d: Dialect, source: str, options: ScanOptions, columns: Collection[str] | None
) -> list[str]:
    """The records the analysis reads, in the shape it reads them."""
    present = _present(columns)
    missing = [name for name in REQUIRED_FIELDS if name not in present]
    if missing:
        raise ValueError(f"{source} lacks the columns the analysis needs: {', '.join(missing)}")
    where = "\n  AND ".join(_read_conditions(present, options))
    flows = f"""SELECT
  {_src(present)} AS src,
  {_dst(present)} AS dst,
  CAST("dstport" AS INTEGER) AS dst_port,
  CAST("protocol" AS INTEGER) AS protocol,
  CAST({_column("srcport", present, "INTEGER")} AS INTEGER) AS src_port,
  CAST("start" AS BIGINT) AS ts,
  CAST(coalesce({_column("end", present, "BIGINT")}, "start") AS BIGINT) AS ts_end,
  CAST(coalesce({_column("bytes", present, "BIGINT")}, 0) AS BIGINT) AS bytes,
  {_egress(present)} AS egress
FROM {_check_source(source)}
WHERE {where}"""
    return [d.cte("flows", flows, materialized=False)]


def render_reduced(source: str, options: ScanOptions, columns: Collection[str]) -> str:
    """The records of `source` the analysis reads, reduced to what it needs of them, in the
    columns given (fields_read of the source's).

    A record to an address surely inside the estate (east-west traffic, and its answers: most
    records and pairs of a log) never makes a candidate nor counts toward a destination's
    prevalence; the analysis reads it only to know its source is one of the estate's, and to
    stretch the window. So such records become one per source, which keeps both: the same
    source, seen leaving or not, its earliest start and latest end. The analysis of the reduced
    records gives the features it gives of the records themselves; a local scan loads these.
    """
    present = _present(columns)
    read = " AND ".join(_read_conditions(present, options))
    dst = _dst(present)
    inside = _surely_internal(dst)
    egress = _egress(present)
    summary = {
        "srcaddr": _src(present),
        "dstaddr": f"any_value({dst})",
        "srcport": "CAST(NULL AS INTEGER)",
        "dstport": 'any_value("dstport")',
        "protocol": 'any_value("protocol")',
        "bytes": 'sum("bytes")',
        "start": 'min("start")',
        "end": 'max(coalesce("end", "start"))',
        "action": 'any_value("action")',
        "log_status": 'any_value("log_status")',
        "interface_id": f'any_value("interface_id") FILTER (WHERE {egress} = 1)',
        "flow_direction": f"CASE WHEN max({egress}) = 1 THEN 'egress' END",
    }
    names = [name for name in STANDARD_FIELDS if name in present]
    kept = ", ".join(f'"{name}"' for name in names)
    reduced = ", ".join(f'{summary.get(name, "NULL")} AS "{name}"' for name in names)
    return f"""SELECT {kept} FROM {_check_source(source)} WHERE {read} AND NOT ({inside})
UNION ALL
SELECT {reduced} FROM {source} WHERE {read} AND {inside}
GROUP BY {_src(present)}"""


def _read_conditions(present: set[str], options: ScanOptions) -> list[str]:
    """Logged, accepted unless asked, since the time given, and from a source maybe inside.

    Only a source inside the estate makes a candidate, so a record whose source cannot be
    inside (the internet's answers, each to its own ephemeral port: half the pairs of a log)
    is never read. The test is loose, the addresses' classification is exact; a record the log
    saw leave an interface of the estate is read whatever its source.
    """
    conditions = [
        f"coalesce({_column('log_status', present)}, 'OK') = 'OK'",
        '"srcaddr" IS NOT NULL',
        '"dstaddr" IS NOT NULL',
        '"dstport" IS NOT NULL',
        '"protocol" IS NOT NULL',
        '"start" IS NOT NULL',
    ]
    if not options.include_rejected:
        conditions.append(f"coalesce({_column('action', present)}, 'ACCEPT') = 'ACCEPT'")
    if options.since is not None:
        conditions.append(f'"start" >= {since_epoch(options.since)}')
    conditions.append(f"({_maybe_internal(_src(present))} OR {_egress(present)} = 1)")
    return conditions


def _column(name: str, present: set[str], kind: str = "VARCHAR") -> str:
    return f'"{name}"' if name in present else f"CAST(NULL AS {kind})"


def _dst(present: set[str]) -> str:
    if "pkt_dstaddr" not in present:
        return '"dstaddr"'
    return """coalesce(nullif("pkt_dstaddr", '-'), "dstaddr")"""


def _src(present: set[str]) -> str:
    """The source: the packet-level address names the host behind a NAT gateway's interface."""
    if "pkt_srcaddr" not in present:
        return '"srcaddr"'
    return """coalesce(nullif("pkt_srcaddr", '-'), "srcaddr")"""


def _present(columns: Collection[str] | None) -> set[str]:
    return set(STANDARD_FIELDS if columns is None else (c.lower() for c in columns))


def _direction_known(present: set[str]) -> bool:
    return {"flow_direction", "interface_id"} <= present


def _egress(present: set[str]) -> str:
    """1 for a record of a flow leaving an interface of the estate, as the log says."""
    if not _direction_known(present):
        return "0"  # a format without the direction never says
    return (
        'CASE WHEN "flow_direction" = \'egress\' AND "interface_id" IS NOT NULL THEN 1 ELSE 0 END'
    )


def fields_read(columns: Collection[str] | None = None) -> list[str]:
    """The source's columns the analysis reads, of those present (None: all of them)."""
    present = _present(columns)
    unread = set(_UNREAD)
    if not _direction_known(present):
        unread |= {"flow_direction", "interface_id"}
    return [name for name in STANDARD_FIELDS if name in present and name not in unread]


def _feature_steps(d: Dialect, options: ScanOptions) -> list[str]:
    q = d.quantile
    share = float(options.prevalence_share)
    steps = []
    steps.append(
        d.cte(
            "pair_totals",
            """SELECT src, dst, dst_port, protocol,
  count(*) AS connections,
  sum(bytes) AS bytes,
  min(ts) AS first_seen,
  max(ts_end) AS last_seen,
  max(egress) AS egress
FROM flows
GROUP BY src, dst, dst_port, protocol""",
            materialized=True,
        )
    )
    # Each address is classified once, not once per pair: there are far fewer of them.
    steps.append(
        d.cte(
            "addresses",
            f"""SELECT a, {_internal()} AS internal, {_outside()} AS outside
FROM (
  SELECT a,
    strpos(a, ':') > 0 AS v6,
    TRY_CAST(split_part(a, '.', 1) AS BIGINT) AS o1,
    TRY_CAST(split_part(a, '.', 2) AS BIGINT) AS o2,
    lpad(split_part(lower(a), ':', 1), 4, '0') AS h
  FROM (SELECT src AS a FROM pair_totals UNION SELECT dst AS a FROM pair_totals) u
) parts""",
            materialized=True,
        )
    )
    steps.append(
        d.cte(
            "classified",
            """SELECT p.src, p.dst, p.dst_port, p.protocol, p.connections, p.bytes,
  p.first_seen, p.last_seen,
  (s.internal OR p.egress = 1) AS src_internal,
  o.outside AS dst_outside
FROM pair_totals p
JOIN addresses s ON s.a = p.src
JOIN addresses o ON o.a = p.dst""",
            materialized=True,
        )
    )
    steps.append(
        d.cte(
            "span",
            """SELECT min(first_seen) AS window_start, max(last_seen) AS window_end
FROM pair_totals""",
        )
    )
    steps.append(
        d.cte(
            "binning",
            f"""SELECT window_start, window_end,
  GREATEST(
    ceil(CAST(window_end - window_start + 1 AS DOUBLE) / {MAX_BINS}),
    LEAST({HOUR}, ceil(CAST(window_end - window_start + 1 AS DOUBLE) / {MIN_BINS})),
    1
  ) AS bin_seconds
FROM span""",
        )
    )
    steps.append(
        d.cte(
            "estate",
            "SELECT count(DISTINCT src) AS sources FROM classified WHERE src_internal",
        )
    )
    steps.append(
        d.cte(
            "prevalence",
            """SELECT dst, count(DISTINCT src) AS dst_sources
FROM classified
WHERE src_internal AND dst_outside
GROUP BY dst""",
        )
    )
    # A destination most of the estate calls (an update service, a time server) is the
    # estate's normal, not one host's secret; one called by a single source is never that.
    steps.append(
        d.cte(
            "candidates",
            f"""SELECT
  row_number() OVER (ORDER BY c.src, c.dst, c.dst_port, c.protocol) AS pair_id,
  c.src, c.dst, c.dst_port, c.protocol, c.connections, c.bytes, c.first_seen, c.last_seen,
  p.dst_sources, e.sources AS estate_sources
FROM classified c
JOIN prevalence p ON p.dst = c.dst
CROSS JOIN estate e
WHERE c.src_internal AND c.dst_outside
  AND c.connections >= {options.min_connections}
  AND NOT (p.dst_sources > 1 AND CAST(p.dst_sources AS DOUBLE) > {share} * e.sources)
  AND NOT ({_allowlisted("c.dst", options.allowlist)})""",
            materialized=True,
        )
    )
    # The candidates' records are picked first and grouped after: DuckDB would otherwise group
    # every record before the join when it misjudges how few the candidates' are.
    steps.append(
        d.cte(
            "candidate_flows",
            """SELECT c.pair_id, f.ts, f.src_port, f.ts_end, f.bytes
FROM flows f
JOIN candidates c
  ON f.src = c.src AND f.dst = c.dst AND f.dst_port = c.dst_port AND f.protocol = c.protocol""",
            materialized=True,
        )
    )
    # The same flow logged on two interfaces (the instance's and a NAT gateway's) is one record.
    steps.append(
        d.cte(
            "records",
            """SELECT pair_id, ts, src_port, max(ts_end) AS ts_end, max(bytes) AS bytes
FROM candidate_flows
GROUP BY pair_id, ts, src_port""",
            materialized=True,
        )
    )
    # A long connection is logged once per capture window on one source port: each record
    # continues the port's previous one, a window later or abutting it. Parallel streams (a
    # backup's uploads) are each one such connection.
    by_port = "OVER (PARTITION BY pair_id, src_port ORDER BY ts)"
    steps.append(
        d.cte(
            "port_runs",
            f"""SELECT pair_id,
  ts - lag(ts) {by_port} AS port_delta,
  ts - lag(ts_end) {by_port} AS port_idle
FROM records
WHERE src_port IS NOT NULL""",
        )
    )
    aligned = " OR ".join(
        f"abs(port_delta - {w}) <= {w * WINDOW_TOLERANCE:g}" for w in CAPTURE_WINDOWS
    )
    same = f"port_delta <= {SAME_CONNECTION_SECONDS}"
    steps.append(
        d.cte(
            "port_features",
            f"""SELECT pair_id,
  avg(CASE WHEN {same} THEN 1.0 ELSE 0.0 END) AS port_reuse,
  avg(CASE WHEN NOT ({same}) OR port_delta IS NULL THEN NULL
    WHEN {aligned} THEN 1.0 ELSE 0.0 END) AS window_share,
  avg(CASE WHEN NOT ({same}) OR port_delta IS NULL THEN NULL
    WHEN port_idle BETWEEN 0 AND {CONTIGUOUS_SECONDS} THEN 1.0 ELSE 0.0 END) AS contiguous_share
FROM port_runs
GROUP BY pair_id""",
        )
    )
    steps.append(
        d.cte(
            "events",
            """SELECT pair_id, ts,
  max(ts_end) AS ts_end,
  sum(bytes) AS bytes
FROM records
GROUP BY pair_id, ts""",
            materialized=True,
        )
    )
    window = "OVER (PARTITION BY pair_id ORDER BY ts)"
    steps.append(
        d.cte(
            "sequence",
            f"""SELECT pair_id, ts, ts - lag(ts) {window} AS delta
FROM events""",
            materialized=True,
        )
    )
    steps.append(
        d.cte(
            "first_pass",
            f"""SELECT pair_id,
  count(*) AS deltas,
  {q("delta", 0.5)} AS median_all
FROM sequence
WHERE delta IS NOT NULL
GROUP BY pair_id""",
        )
    )
    steps.append(
        d.cte(
            "active",
            f"""SELECT s.pair_id, s.delta
FROM sequence s
JOIN first_pass f ON f.pair_id = s.pair_id
WHERE s.delta IS NOT NULL AND s.delta <= {GAP_FACTOR} * f.median_all""",
            materialized=True,
        )
    )
    steps.append(
        d.cte(
            "timing",
            f"""SELECT pair_id,
  count(*) AS active_deltas,
  CAST(sum(delta) AS DOUBLE) AS active_seconds,
  {q("delta", 0.25)} AS ts_q1,
  {q("delta", 0.5)} AS ts_median,
  {q("delta", 0.75)} AS ts_q3,
  CAST(min(delta) AS DOUBLE) AS ts_min,
  CAST(max(delta) AS DOUBLE) AS ts_max
FROM active
GROUP BY pair_id""",
        )
    )
    steps.append(
        d.cte(
            "timing_mad",
            f"""SELECT a.pair_id, {q("abs(a.delta - t.ts_median)", 0.5)} AS ts_mad
FROM active a
JOIN timing t ON t.pair_id = a.pair_id
GROUP BY a.pair_id""",
        )
    )
    steps.append(
        d.cte(
            "sizes",
            f"""SELECT pair_id,
  count(*) AS events,
  {q("bytes", 0.25)} AS ds_q1,
  {q("bytes", 0.5)} AS ds_median,
  {q("bytes", 0.75)} AS ds_q3
FROM events
GROUP BY pair_id""",
        )
    )
    steps.append(
        d.cte(
            "sizes_mad",
            f"""SELECT e.pair_id, {q("abs(e.bytes - s.ds_median)", 0.5)} AS ds_mad
FROM events e
JOIN sizes s ON s.pair_id = e.pair_id
GROUP BY e.pair_id""",
        )
    )
    steps.append(
        d.cte(
            "bins",
            """SELECT e.pair_id,
  CAST(floor(CAST(e.ts - b.window_start AS DOUBLE) / b.bin_seconds) AS BIGINT) AS bin,
  count(*) AS n
FROM events e
CROSS JOIN binning b
GROUP BY 1, 2""",
        )
    )
    steps.append(
        d.cte(
            "histogram",
            f"""SELECT pair_id,
  {d.list_agg("bin", "bin")} AS hist_bins,
  {d.list_agg("n", "bin")} AS hist_counts
FROM bins
GROUP BY pair_id""",
        )
    )
    return steps


def _final_select(d: Dialect, options: ScanOptions) -> str:
    return f"""SELECT
  c.pair_id, c.src, c.dst, c.dst_port, c.protocol,
  c.connections, s.events, c.bytes, c.first_seen, c.last_seen,
  {d.epoch_to_timestamp("c.first_seen")} AS first_seen_at,
  {d.epoch_to_timestamp("c.last_seen")} AS last_seen_at,
  c.dst_sources, c.estate_sources,
  b.window_start, b.window_end, b.bin_seconds,
  f.deltas, f.deltas - t.active_deltas AS gaps,
  coalesce(p.port_reuse, 0.0) AS port_reuse,
  coalesce(p.window_share, 0.0) AS window_share,
  coalesce(p.contiguous_share, 0.0) AS contiguous_share,
  t.active_deltas, t.active_seconds, t.ts_q1, t.ts_median, t.ts_q3, m.ts_mad,
  t.ts_min, t.ts_max,
  s.ds_q1, s.ds_median, s.ds_q3, z.ds_mad,
  h.hist_bins, h.hist_counts
FROM candidates c
JOIN sizes s ON s.pair_id = c.pair_id
JOIN first_pass f ON f.pair_id = c.pair_id
JOIN timing t ON t.pair_id = c.pair_id
JOIN timing_mad m ON m.pair_id = c.pair_id
JOIN sizes_mad z ON z.pair_id = c.pair_id
JOIN histogram h ON h.pair_id = c.pair_id
LEFT JOIN port_features p ON p.pair_id = c.pair_id
CROSS JOIN binning b
WHERE s.events >= {options.min_connections}
ORDER BY c.pair_id"""


# --- addresses ----------------------------------------------------------------------------
# Plain string and integer arithmetic, the same in both engines: no address type is needed.


def _octet(a: str, i: int) -> str:
    return f"TRY_CAST(split_part({a}, '.', {i}) AS BIGINT)"


def _is_v6(a: str) -> str:
    return f"strpos({a}, ':') > 0"


# Over the columns of `addresses`: v6, the first two octets o1 and o2, the first hextet h.
# TODO(beacons): an IPv4-mapped IPv6 address (::ffff:10.0.0.1) is judged by its IPv6 prefix
# (special, so never outside); flow logs write IPv4 traffic as IPv4, so none has been seen.
_INTERNAL_V4 = (
    "o1 = 10 OR (o1 = 172 AND o2 BETWEEN 16 AND 31) OR (o1 = 192 AND o2 = 168) "
    "OR (o1 = 100 AND o2 BETWEEN 64 AND 127)"
)
_INTERNAL_V6 = "substr(h, 1, 2) IN ('fc', 'fd')"
_SPECIAL_V4 = "o1 = 0 OR o1 = 127 OR (o1 = 169 AND o2 = 254) OR o1 >= 224"
_SPECIAL_V6 = (
    "h = '0000' OR substr(h, 1, 2) = 'ff' OR substr(h, 1, 3) IN ('fe8', 'fe9', 'fea', 'feb')"
)


def _maybe_internal(a: str) -> str:
    """A cheap test true of every internal address (and of some others): by its first octet."""
    prefixes = " OR ".join(f"{a} LIKE '{p}%'" for p in ("10.", "172.", "192.168.", "100."))
    return f"({prefixes} OR {_is_v6(a)})"


def _surely_internal(a: str) -> str:
    """A test true only of internal IPv4 addresses (of most of them: RFC 1918's)."""
    second = f"TRY_CAST(split_part({a}, '.', 2) AS INTEGER)"
    return (
        f"({a} LIKE '10.%' OR {a} LIKE '192.168.%' "
        f"OR ({a} LIKE '172.%' AND {second} BETWEEN 16 AND 31))"
    )


def _internal() -> str:
    """The estate's own space: RFC 1918, RFC 6598 shared space, IPv6 unique local (fc00::/7)."""
    return f"coalesce(CASE WHEN v6 THEN {_INTERNAL_V6} ELSE {_INTERNAL_V4} END, FALSE)"


def _outside() -> str:
    """Somewhere on the internet: neither the estate nor loopback, link-local or multicast."""
    return (
        f"coalesce(CASE WHEN v6 THEN NOT ({_INTERNAL_V6}) AND NOT ({_SPECIAL_V6}) "
        f"ELSE o1 BETWEEN 0 AND 255 AND NOT ({_INTERNAL_V4}) AND NOT ({_SPECIAL_V4}) END, FALSE)"
    )


def _v4_number(a: str) -> str:
    return (
        f"({_octet(a, 1)} * 16777216 + {_octet(a, 2)} * 65536 + {_octet(a, 3)} * 256 "
        f"+ {_octet(a, 4)})"
    )


def _v6_hex(a: str) -> str:
    """An IPv6 address as its 32 hex digits: `::` filled with zero groups, each group padded."""
    x = f"lower({a})"
    colons = f"(length({x}) - length(replace({x}, ':', '')))"
    present = (
        f"({colons} - CASE WHEN substr({x}, 1, 2) = '::' THEN 1 ELSE 0 END "
        f"- CASE WHEN substr({x}, length({x}) - 1, 2) = '::' THEN 1 ELSE 0 END)"
    )
    zeros = f"substr('0:0:0:0:0:0:0:0:', 1, 2 * (8 - {present}))"
    full = f"trim(BOTH ':' FROM replace({x}, '::', ':' || {zeros}))"
    return " || ".join(f"lpad(split_part({full}, ':', {i}), 4, '0')" for i in range(1, 9))


def _allowlisted(a: str, allowlist: list[str]) -> str:
    """Whether the address is in one of the allowlist's networks."""
    tests = []
    v6 = [ipaddress.ip_network(c, strict=False) for c in allowlist if ":" in c]
    for cidr in allowlist:
        network = ipaddress.ip_network(cidr, strict=False)
        if network.version == 4:
            low, high = int(network.network_address), int(network.broadcast_address)
            tests.append(f"(NOT ({_is_v6(a)}) AND {_v4_number(a)} BETWEEN {low} AND {high})")
    if v6:
        hex_address = _v6_hex(a)
        for network in v6:
            digits = network.network_address.exploded.replace(":", "")
            whole, rest = divmod(network.prefixlen, 4)
            test = [f"substr({hex_address}, 1, {whole}) = '{digits[:whole]}'"] if whole else []
            if rest:
                nibble = int(digits[whole], 16)
                span = 1 << (4 - rest)
                low, high = nibble & ~(span - 1), (nibble & ~(span - 1)) + span - 1
                test.append(
                    f"substr({hex_address}, {whole + 1}, 1) BETWEEN '{low:x}' AND '{high:x}'"
                )
            tests.append(f"({_is_v6(a)} AND {' AND '.join(test) or 'TRUE'})")
    if not tests:
        return "FALSE"
    return "coalesce(" + " OR ".join(tests) + ", FALSE)"
