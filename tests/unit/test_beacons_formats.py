"""Reading flow logs: default text with and without header, custom formats, gzip, Parquet."""

from __future__ import annotations

import gzip

import duckdb
import pytest

from cloud_sniper.beacons import formats
from cloud_sniper.beacons.engine import load
from cloud_sniper.beacons.formats import FormatError, discover, sniff
from cloud_sniper.beacons.models import ScanOptions
from tests.beacon_records import T0, Record, beacon, nodata, skipdata, write_log

V5_HEADER = (
    "version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport "
    "dstport pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags "
    "log-status flow-direction traffic-path"
)


def read(*paths):
    """Load the files into a fresh database; the stats and the records as dicts."""
    con = duckdb.connect()
    stats, _ = load(con, discover(paths))
    cursor = con.execute("SELECT * FROM flow_records ORDER BY start, srcport")
    names = [c[0] for c in cursor.description]
    return stats, [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


RECORD = Record("10.0.1.5", "203.0.113.7", 49152, 443, T0, T0 + 1, bytes=840, packets=10)
EXPECTED = {
    "srcaddr": "10.0.1.5",
    "dstaddr": "203.0.113.7",
    "srcport": 49152,
    "dstport": 443,
    "protocol": 6,
    "packets": 10,
    "bytes": 840,
    "start": T0,
    "end": T0 + 1,
    "action": "ACCEPT",
    "log_status": "OK",
    "interface_id": "eni-0a1b2c3d4e5f60718",
}


def test_default_format_with_its_header(tmp_path):
    path = write_log(tmp_path / "a.log", [RECORD])

    stats, rows = read(path)

    assert stats.files == 1 and stats.records == 1 and stats.bad_lines == 0
    assert rows[0].items() >= EXPECTED.items()
    assert rows[0]["flow_direction"] is None and rows[0]["pkt_srcaddr"] is None


def test_the_load_keeps_the_columns_the_analysis_reads_of_those_the_files_have(tmp_path):
    default = write_log(tmp_path / "a.log", [RECORD])
    custom = tmp_path / "b.log"
    custom.write_text(
        V5_HEADER + "\n5 vpc-1 subnet-1 - eni-1 123456789012 IPv4 10.0.0.200 203.0.113.7 "
        f"49152 443 10.0.1.5 203.0.113.7 6 840 10 {T0} {T0 + 1} ACCEPT 19 OK egress 8\n"
    )

    _, plain = load(duckdb.connect(), discover([default]), options=ScanOptions())
    _, both = load(duckdb.connect(), discover([default, custom]), options=ScanOptions())
    _, every = load(duckdb.connect(), discover([default]))

    # Then without the flow's direction the interface says nothing; packets are never read
    assert {"srcaddr", "bytes", "log_status"} <= plain
    assert not {"flow_direction", "interface_id", "pkt_srcaddr", "packets"} & plain
    assert {"flow_direction", "interface_id", "pkt_srcaddr"} <= both
    assert not {"packets", "tcp_flags"} & both
    assert {"packets", "interface_id"} <= every and "flow_direction" not in every


def test_the_scans_load_keeps_only_the_records_the_analysis_reads_and_counts_all(tmp_path):
    # Given a call out, its answer, a rejected call, and a NODATA record
    answer = Record("203.0.113.7", "10.0.1.5", 443, 49152, T0, T0 + 1)
    rejected = Record("10.0.1.5", "203.0.113.8", 49153, 443, T0, T0 + 1, action="REJECT")
    path = write_log(tmp_path / "a.log", [RECORD, answer, rejected, nodata()])

    # When loaded for the default analysis, and for one that reads the rejected too
    con = duckdb.connect()
    stats, _ = load(con, discover([path]), options=ScanOptions())
    kept = con.execute("SELECT srcaddr, dstaddr FROM flow_records ORDER BY 2").fetchall()
    con = duckdb.connect()
    load(con, discover([path]), options=ScanOptions(include_rejected=True))
    with_rejected = con.execute("SELECT count(*) FROM flow_records").fetchone()[0]

    # Then only the call out is kept, and every record is counted
    assert kept == [("10.0.1.5", "203.0.113.7")]
    assert with_rejected == 2
    assert (stats.records, stats.nodata) == (4, 1)


def test_default_format_without_a_header(tmp_path):
    path = write_log(tmp_path / "a.log", [RECORD], header=False)

    item = sniff(path)
    stats, rows = read(path)

    assert not item.header and item.fields == formats.DEFAULT_FIELDS
    assert stats.records == 1
    assert rows[0].items() >= EXPECTED.items()


def test_a_custom_version_5_format_is_read_by_its_header(tmp_path):
    # Given a custom format: other fields, another order, packet-level addresses of a NAT gateway
    line = (
        "5 vpc-0a1b2c3d subnet-0a1b2c3d - eni-0fedcba987654321 123456789012 IPv4 10.0.0.200 "
        f"203.0.113.7 49152 443 10.0.1.5 203.0.113.7 6 840 10 {T0} {T0 + 1} ACCEPT 19 OK "
        "egress 8"
    )
    path = tmp_path / "custom.log"
    path.write_text(V5_HEADER + "\n" + line + "\n")

    stats, rows = read(path)

    assert sniff(path).fields[:3] == ("version", "vpc_id", "subnet_id")
    assert stats.records == 1
    row = rows[0]
    assert row["srcaddr"] == "10.0.0.200" and row["pkt_srcaddr"] == "10.0.1.5"
    assert (row["bytes"], row["packets"], row["tcp_flags"]) == (840, 10, 19)
    assert row["flow_direction"] == "egress" and row["interface_id"] == "eni-0fedcba987654321"


def test_gzip_with_or_without_its_extension(tmp_path):
    text = write_log(tmp_path / "plain.log", beacon(hours=1)).read_text()
    with gzip.open(tmp_path / "a.log.gz", "wt") as stream:
        stream.write(text)
    (tmp_path / "delivered").write_bytes((tmp_path / "a.log.gz").read_bytes())

    stats, _ = read(tmp_path / "a.log.gz", tmp_path / "delivered")

    assert sniff(tmp_path / "delivered").compression == "gzip"
    assert stats.files == 2 and stats.records == 2 * 60


def test_parquet_with_hive_partitions(tmp_path):
    # Given records delivered as Parquet, in AWS's Hive-compatible partitions, as DuckDB writes them
    text = write_log(tmp_path / "src.log", beacon(hours=3, start=T0))
    folder = tmp_path / "AWSLogs"
    con = duckdb.connect()
    relation = formats.text_relation(discover([text]))
    con.execute(
        f"COPY (SELECT *, 'vpcflowlogs' AS \"aws-service\", 2026 AS year, 12 AS month, 4 AS day, "
        f"hour(to_timestamp(start) AT TIME ZONE 'UTC') AS hour FROM ({relation})) TO '{folder}' "
        '(FORMAT PARQUET, PARTITION_BY ("aws-service", year, month, day, hour))'
    )
    (folder / "_SUCCESS").write_text("")
    text.unlink()

    # When the folder is read
    files = discover([folder])
    stats, rows = read(folder)

    # Then every partition's file is read, marker files left out
    assert {f.kind for f in files} == {"parquet"}
    assert len(files) == 3
    assert stats.records == 180
    assert (
        rows[0].items()
        >= {**EXPECTED, "srcport": rows[0]["srcport"], "bytes": 700, "packets": 5}.items()
    )


def test_bad_lines_are_counted_and_sampled_never_fatal(tmp_path):
    path = write_log(
        tmp_path / "a.log",
        [
            RECORD,
            "not a flow log record",
            RECORD.line() + " extra",
            RECORD.line().replace("443", "https"),
        ],
    )

    stats, rows = read(path)

    assert stats.records == 1
    assert stats.bad_lines == 3
    assert len(stats.bad_sample) == 3
    assert stats.bad_sample[0].startswith(f"{path}:3: not a flow log record")
    assert "https" in stats.bad_sample[2]


def test_nodata_and_skipdata_records_are_counted(tmp_path):
    path = write_log(tmp_path / "a.log", [RECORD, nodata(), nodata(T0 + 60), skipdata()])

    stats, _ = read(path)

    assert (stats.records, stats.nodata, stats.skipdata) == (4, 2, 1)


def test_a_file_that_is_no_flow_log_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("meeting notes\nnothing here\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")

    with pytest.raises(FormatError, match=r"notes\.txt: not a flow log: no header line"):
        discover([tmp_path / "notes.txt"])
    with pytest.raises(FormatError, match=r"image\.png: not a flow log"):
        discover([tmp_path / "image.png"])


def test_a_header_without_the_fields_the_analysis_needs_is_refused(tmp_path):
    path = tmp_path / "a.log"
    path.write_text("version srcaddr dstaddr bytes\n2 10.0.1.5 203.0.113.7 840\n")

    with pytest.raises(FormatError, match="lacks the fields the analysis needs: dstport, protocol"):
        sniff(path)


def test_a_missing_path_and_empty_files(tmp_path):
    (tmp_path / "empty.log").write_text("")

    with pytest.raises(FormatError, match="no such file or folder"):
        discover([tmp_path / "missing"])
    assert discover([tmp_path]) == []


def test_files_of_one_layout_are_read_in_batches(tmp_path):
    files = [write_log(tmp_path / f"{i}.log", [RECORD]) for i in range(5)]
    custom = tmp_path / "custom.log"
    custom.write_text("srcaddr dstaddr dstport protocol start\n10.0.1.5 203.0.113.7 443 6 1\n")

    batches = formats.batches(discover(files + [custom]), max_files=2)

    assert [len(b) for b in batches] == [2, 2, 1, 1]
