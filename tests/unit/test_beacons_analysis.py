"""The analysis's SQL: one definition, DuckDB and Athena; candidates, exclusions, features."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import duckdb
import pytest
import sqlglot

from cloud_sniper.beacons import analysis
from cloud_sniper.beacons.analysis import FEATURE_COLUMNS, render, render_events
from cloud_sniper.beacons.formats import STANDARD_COLUMNS
from cloud_sniper.beacons.models import ScanOptions
from tests.beacon_records import T0, beacon, features, long_connection, random_calls, table

BEACON = ("10.0.1.5", "203.0.113.7", 443)
STANDARD = list(STANDARD_COLUMNS)


def calls(src: str, dst: str, **kwargs):
    return beacon(src=src, dst=dst, period=600, hours=4, **kwargs)


# --- the two dialects -------------------------------------------------------------------------


def test_the_athena_sql_uses_trino_functions_and_no_duckdb_ones():
    sql = render("athena", "flow_logs", ScanOptions(allowlist=["2001:db8::/33"]))

    assert "approx_percentile(" in sql
    assert "array_agg(" in sql
    assert "from_unixtime(" in sql
    assert "FROM flow_logs" in sql
    for duckdb_only in ("quantile_cont(", "list(", "to_timestamp(", "MATERIALIZED"):
        assert duckdb_only not in sql
    # Trino parses it
    assert sqlglot.parse_one(sql, read="trino") is not None


def test_the_duckdb_sql_uses_exact_quantiles():
    sql = render("duckdb", "flow_records", ScanOptions())

    assert "quantile_cont(" in sql and "approx_percentile" not in sql
    assert "AS MATERIALIZED (" in sql


def test_the_athena_sql_gives_the_duckdb_features_when_run_on_duckdb():
    # Given a day of a beacon, a long connection and random calls
    con = duckdb.connect()
    name = table(con, beacon(jitter=0.2) + long_connection() + random_calls())
    options = ScanOptions(allowlist=["192.0.2.128/25", "2001:db8::/32"])

    # When both renderings run on DuckDB, the Athena one read as Trino SQL
    native = con.execute(render("duckdb", name, options))
    columns = [c[0] for c in native.description]
    expected = native.fetchall()
    athena = sqlglot.transpile(render("athena", name, options), read="trino", write="duckdb")[0]
    # Athena's quantiles are approximate; exact ones make the two comparable
    athena = re.sub(r"APPROX_QUANTILE\(", "QUANTILE_CONT(", athena)
    got = con.execute(athena).fetchall()

    # Then the features are the same
    assert len(expected) == 3
    assert set(FEATURE_COLUMNS) <= set(columns)
    assert got == expected


def test_the_dialect_and_the_source_are_checked():
    with pytest.raises(ValueError, match="not a dialect"):
        render("postgres", "t", ScanOptions())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a table name"):
        render("duckdb", "t; DROP TABLE t", ScanOptions())
    assert 'FROM logs."vpc flow"' in render("athena", 'logs."vpc flow"', ScanOptions())


def test_a_source_without_the_optional_columns_is_analysed():
    # Given a table of the default format's fields only (no packet-level addresses, direction)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE v2 AS SELECT srcaddr, dstaddr, srcport, dstport, protocol, packets, bytes, "
        'start, "end", action, log_status FROM ' + table(con, beacon(period=60, hours=2))
    )
    columns = [row[0] for row in con.execute("DESCRIBE v2").fetchall()]

    rows = con.execute(render("duckdb", "v2", ScanOptions(), columns=columns)).fetchall()

    assert len(rows) == 1
    with pytest.raises(ValueError, match="v2 lacks the columns the analysis needs: dstport"):
        render("athena", "v2", ScanOptions(), columns=["srcaddr", "dstaddr", "protocol", "start"])


# --- candidates -------------------------------------------------------------------------------


def test_sources_inside_the_estate_and_destinations_outside():
    records = (
        calls("172.16.4.4", "198.51.100.1")  # RFC 1918
        + calls("172.32.0.1", "198.51.100.2")  # not private: not the estate
        + calls("100.64.3.3", "198.51.100.3")  # RFC 6598 shared space
        + calls("fd12:3456:789a::5", "2001:db8:85a3::8a2e:370:7334")  # ULA to global IPv6
        + calls("10.0.1.5", "10.0.9.9")  # inside to inside
        + calls("10.0.1.5", "169.254.169.254")  # the instance metadata service
        + calls("10.0.1.5", "224.0.0.251")  # multicast
        + calls("fd12:3456:789a::5", "ff02::fb")  # IPv6 multicast
        + calls("fd12:3456:789a::5", "fe80::1")  # IPv6 link-local
        + calls("10.0.1.5", "203.0.113.7", dst_port=8443)  # per port: another pair
        + calls("10.0.1.5", "203.0.113.7")
    )

    pairs = set(features(records))

    assert pairs == {
        ("172.16.4.4", "198.51.100.1", 443),
        ("100.64.3.3", "198.51.100.3", 443),
        ("fd12:3456:789a::5", "2001:db8:85a3::8a2e:370:7334", 443),
        ("10.0.1.5", "203.0.113.7", 8443),
        ("10.0.1.5", "203.0.113.7", 443),
    }


def test_a_public_source_seen_leaving_an_interface_of_the_estate_is_inside():
    # Given a VPC on public addresses (no RFC 1918 range) calling out, and the answers, each
    # logged with its direction; and the same calls from a host the logs never saw leave
    con = duckdb.connect()
    outbound = calls("52.1.2.3", "203.0.113.9")
    answers = [
        replace(r, src=r.dst, dst=r.src, src_port=r.dst_port, dst_port=r.src_port) for r in outbound
    ]
    name = table(con, outbound + answers + calls("52.9.9.9", "203.0.113.10"))
    con.execute(
        f"UPDATE {name} SET flow_direction = CASE WHEN srcaddr = '52.1.2.3' THEN 'egress' "
        "WHEN dstaddr = '52.1.2.3' THEN 'ingress' END"
    )

    # When analysed
    rows = con.execute(render("duckdb", name, ScanOptions())).fetchall()

    # Then the host seen leaving is a source of the estate with every one of its calls, its
    # answers' ephemeral ports are no pairs, and the host never seen leaving is outside
    pairs = {(row[1], row[2], row[3]): row for row in rows}
    assert set(pairs) == {("52.1.2.3", "203.0.113.9", 443)}
    assert pairs[("52.1.2.3", "203.0.113.9", 443)][5] == len(outbound)  # connections


def test_destinations_most_of_the_estate_calls_are_left_out():
    # Given three of four internal hosts calling one address, and one host calling another
    records = (
        calls("10.0.1.1", "203.0.113.50")
        + calls("10.0.1.2", "203.0.113.50")
        + calls("10.0.1.3", "203.0.113.50")
        + calls("10.0.1.4", "203.0.113.7")
    )

    default = features(records)
    tolerant = features(records, ScanOptions(prevalence_share=0.9))

    assert set(default) == {("10.0.1.4", "203.0.113.7", 443)}
    assert default[("10.0.1.4", "203.0.113.7", 443)].dst_sources == 1
    assert default[("10.0.1.4", "203.0.113.7", 443)].estate_sources == 4
    assert len(tolerant) == 4


def test_a_destination_of_a_single_source_is_never_prevalent():
    # The only host in the data calls it: 100% of the estate, but one host is no estate's normal
    assert set(features(calls("10.0.1.4", "203.0.113.7"))) == {("10.0.1.4", "203.0.113.7", 443)}


def test_the_allowlist_removes_networks_v4_and_v6():
    records = (
        calls("10.0.1.5", "192.0.2.200")
        + calls("10.0.1.5", "192.0.2.10")
        + calls("fd00::5", "2001:db8:8000::1")
        + calls("fd00::5", "2001:db8:7fff::1")
    )
    options = ScanOptions(allowlist=["192.0.2.128/25", "2001:db8:8000::/33"])

    assert set(features(records, options)) == {
        ("10.0.1.5", "192.0.2.10", 443),
        ("fd00::5", "2001:db8:7fff::1", 443),
    }


def test_rejected_records_are_left_out_unless_asked():
    records = [replace(r, action="REJECT") for r in calls("10.0.1.5", "203.0.113.7")]

    assert features(records) == {}
    assert set(features(records, ScanOptions(include_rejected=True))) == {BEACON}


def test_since_keeps_only_the_flows_starting_then_or_later():
    records = beacon(period=60, hours=2)
    since = datetime.fromtimestamp(T0 + 3600, tz=UTC)

    f = features(records, ScanOptions(since=since))[BEACON]

    assert f.first_seen == T0 + 3600
    assert f.connections == 60


def test_too_few_connections_make_no_candidate():
    assert features(beacon(period=600, hours=0.8)) == {}  # 5 calls
    assert set(features(beacon(period=600, hours=0.9))) == {BEACON}  # 6 calls, the minimum


def test_one_flow_logged_on_two_interfaces_is_one_event():
    # Given the instance's interface and the NAT gateway's both logging each call
    records = calls("10.0.1.5", "203.0.113.7")
    twice = records + [replace(r, interface="eni-0natgateway00000") for r in records]

    f = features(twice)[BEACON]

    assert f.connections == 2 * len(records)
    assert f.events == len(records)
    assert f.ds_median == 700  # the same bytes, not counted twice


def test_features_of_a_beacon():
    f = features(beacon(period=60, hours=24))[BEACON]

    assert (f.connections, f.events, f.deltas, f.gaps) == (1440, 1440, 1439, 0)
    assert (f.ts_q1, f.ts_median, f.ts_q3, f.ts_mad) == (60, 60, 60, 0)
    assert (f.ds_median, f.ds_mad) == (700, 0)
    # a new source port each call: no record continues a connection, though every 60 s
    assert f.port_reuse < 0.01
    assert f.window_share == 0.0
    assert f.bin_seconds == pytest.approx(3600, abs=5)  # a 24th of the window, at most an hour
    assert f.hist_bins == list(range(24))
    assert f.hist_counts == [60] * 24


def test_events_of_the_pairs_asked():
    con = duckdb.connect()
    name = table(con, beacon(period=60, hours=1) + random_calls(hours=1))

    rows = con.execute(
        render_events("duckdb", name, ScanOptions(), [("10.0.1.5", "203.0.113.7", 443, 6)])
    ).fetchall()

    assert [ts for *_, ts in rows] == [T0 + 60 * k for k in range(60)]


# --- the reduced records a local scan loads ---------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [ScanOptions(), ScanOptions(include_rejected=True, since=datetime(2026, 12, 4, 6, tzinfo=UTC))],
    ids=["default", "rejected-and-since"],
)
def test_the_reduced_records_give_the_features_the_records_give(options):
    # Given a beacon, a long connection and random calls out, east-west traffic and its answers,
    # a rejected call, calls through a NAT gateway (packet-level addresses), hosts on public
    # addresses seen leaving (one only ever calling inside), and an internal host that only
    # ever talks inside, first of all and last of all
    con = duckdb.connect()
    east_west = calls("10.0.2.2", "10.0.3.3") + calls("172.31.4.4", "192.168.5.5")
    answers = [
        replace(r, src=r.dst, dst=r.src, src_port=r.dst_port, dst_port=r.src_port)
        for r in beacon(hours=2) + east_west
    ]
    rejected = [replace(r, action="REJECT") for r in calls("10.0.1.9", "203.0.113.99")]
    quiet = calls("10.0.7.7", "10.0.8.8", start=T0 - 3600)
    quiet[-1] = replace(quiet[-1], end=quiet[-1].start + 86400)  # one lasts past every other
    name = table(
        con,
        beacon(jitter=0.2)
        + long_connection()
        + random_calls()
        + east_west
        + answers
        + rejected
        + quiet
        + calls("10.0.0.250", "198.51.100.77")
        + calls("52.1.2.3", "203.0.113.9")
        + calls("52.1.2.3", "10.0.4.4")
        + calls("52.7.7.7", "10.0.4.5"),
    )
    con.execute(
        f"""UPDATE {name} SET
  pkt_srcaddr = CASE WHEN srcaddr = '10.0.0.250' THEN '10.0.1.250' ELSE '-' END,
  pkt_dstaddr = CASE WHEN srcaddr = '10.0.0.250' THEN '198.51.100.78' ELSE '-' END,
  flow_direction = CASE WHEN srcaddr LIKE '52.%' THEN 'egress' ELSE 'ingress' END"""
    )

    # When the analysis runs over the records, and over the reduced records
    con.execute(f"CREATE TABLE reduced AS {analysis.render_reduced(name, options, STANDARD)}")
    whole = con.execute(render("duckdb", name, options)).fetchall()
    reduced = con.execute(render("duckdb", "reduced", options)).fetchall()
    inside = con.execute(
        "SELECT srcaddr, count(*) FROM reduced "
        "WHERE dstaddr LIKE '10.%' OR dstaddr LIKE '172.31.%' OR dstaddr LIKE '192.168.%' "
        "GROUP BY srcaddr"
    ).fetchall()

    # Then the features are the same, from one record a source of the traffic inside
    assert reduced == whole
    assert {row[1] for row in whole} >= {"10.0.1.5", "10.0.1.250", "52.1.2.3"}
    assert inside and all(count == 1 for _, count in inside)
