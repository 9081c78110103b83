"""The flow-log generator: seeded, in every format the scan reads, holding what its truth says."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from cloud_sniper.beacons import synthetic
from cloud_sniper.beacons.generate_command import record_count
from cloud_sniper.beacons.synthetic import V2_FIELDS, V5_FIELDS, SyntheticError
from stacks.beacons import FLOW_LOG_COLUMNS

RECORDS = 250_000
TEXT_COLUMNS = {
    "srcaddr": "VARCHAR",
    "dstaddr": "VARCHAR",
    "srcport": "INTEGER",
    "dstport": "INTEGER",
    "protocol": "INTEGER",
    "start": "BIGINT",
    "end": "BIGINT",
    "bytes": "BIGINT",
    "action": "VARCHAR",
    "log_status": "VARCHAR",
}
PARQUET_TYPES = {"int": "INTEGER", "bigint": "BIGINT", "string": "VARCHAR"}


def generate(tmp_path_factory, flow_format: str, **kwargs) -> tuple[Path, synthetic.GroundTruth]:
    out = tmp_path_factory.mktemp(flow_format)
    return out, synthetic.generate(out, records=RECORDS, format=flow_format, **kwargs)


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return generate(tmp_path_factory, "v2")


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    return generate(tmp_path_factory, "parquet")


def files(out: Path) -> list[Path]:
    return sorted(p for p in (out / synthetic.DATA_DIR).rglob("*") if p.is_file())


class Records:
    """The records DuckDB reads from the generated text files, bad lines left out."""

    def __init__(self, out: Path, fields: tuple[str, ...], header: bool = True) -> None:
        names = [f.replace("-", "_") for f in fields]
        columns = ", ".join(f"'{n}': '{TEXT_COLUMNS.get(n, 'VARCHAR')}'" for n in names)
        self.connection = duckdb.connect()
        self.connection.execute(
            f"""CREATE TABLE records AS SELECT * FROM read_csv(
  {[str(p) for p in files(out)]}, delim = ' ', header = {str(header).lower()},
  columns = {{{columns}}}, nullstr = '-', ignore_errors = true)"""
        )

    def all(self, sql: str) -> list[tuple]:
        return self.connection.execute(sql).fetchall()

    def one(self, sql: str) -> tuple:
        return self.connection.execute(sql).fetchone()


def test_the_same_arguments_give_the_same_files(tmp_path, v2):
    # Given a set generated with the default seed
    out, truth = v2

    # When it is generated again into another folder
    again = synthetic.generate(tmp_path, records=RECORDS, format="v2")

    # Then every file is the same, byte for byte, and so is the ground truth
    def digests(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files(root)
        }

    assert digests(tmp_path) == digests(out)
    assert again == truth


def test_another_seed_gives_other_records(tmp_path, v2):
    out, truth = v2

    other = synthetic.generate(tmp_path, records=RECORDS, format="v2", seed=7)

    assert other.beacon_keys() != truth.beacon_keys()


def test_the_set_is_about_the_size_asked_in_files_of_delivery_intervals(v2):
    out, truth = v2

    # Then the records are within a few percent of those asked, counted the way the files hold
    # them (a line each, after the header)
    lines = sum(len(p.read_text().splitlines()) - 1 for p in files(out))
    assert lines == truth.records
    assert abs(truth.records - RECORDS) / RECORDS < 0.1
    # And the files are named and placed as VPC Flow Logs deliver them to S3
    assert len(files(out)) == truth.files
    first = files(out)[0].relative_to(out / synthetic.DATA_DIR).as_posix()
    assert first.startswith(f"{synthetic.ACCOUNT_ID}/vpcflowlogs/{synthetic.REGION}/2026/12/03/")
    assert first.endswith(".log")


def test_the_default_format_has_its_header_and_fields(v2):
    out, _ = v2

    first = files(out)[0].read_text().splitlines()
    assert first[0] == " ".join(V2_FIELDS)
    assert len(first[1].split(" ")) == len(V2_FIELDS)
    version, account, interface, *_ = first[1].split(" ")
    assert (version, account) == ("2", synthetic.ACCOUNT_ID)
    assert interface.startswith("eni-") and len(interface) == len("eni-") + 17


def test_every_planted_beacon_is_in_the_records_as_the_truth_says(v2):
    out, truth = v2
    records = Records(out, V2_FIELDS)

    for beacon in truth.beacons:
        # Given the records of the planted pair, its calls out (one record per connection)
        count, first, last, ports = records.one(
            "SELECT count(*), min(start), max(start), count(DISTINCT srcport) FROM records "
            f"WHERE srcaddr = '{beacon.src}' AND dstaddr = '{beacon.dst}' "
            f"AND dstport = {beacon.dst_port} AND protocol = {beacon.protocol}"
        )

        # Then there are as many as the truth says, from its first call to its last, each
        # from its own source port (a connection each), at the period less the jitter
        assert count == beacon.connections
        assert datetime.fromtimestamp(first, UTC) == beacon.first_seen
        assert datetime.fromtimestamp(last, UTC) == beacon.last_seen
        # (ephemeral ports are drawn from 28,000: a few thousand calls reuse some)
        assert ports > 0.85 * count
        assert 10 <= beacon.period_seconds <= 3600 and 0 <= beacon.jitter <= 0.4
    assert sum(beacon.sleep_gaps for beacon in truth.beacons) >= 3


def test_a_long_connection_is_one_source_port_a_record_per_capture_window(v2):
    out, truth = v2
    records = Records(out, V2_FIELDS)
    long_ones = [c for c in truth.confounders if c.kind == "long_connection"]
    assert long_ones

    for connection in long_ones:
        rows = records.all(
            f"SELECT start, srcport FROM records WHERE srcaddr = '{connection.src}' "
            f"AND dstaddr = '{connection.dst}' AND dstport = {connection.dst_port} ORDER BY start"
        )
        # Then, past the first window of each session, the records come a capture window
        # apart (60 s or 600 s) on one source port
        steps = [b[0] - a[0] for a, b in zip(rows, rows[1:], strict=False) if a[1] == b[1]]
        windows = [step for step in steps if 55 <= step <= 61 or 595 <= step <= 601]
        assert len(windows) >= 0.9 * len(steps) - 3, sorted(steps)[:10]
        assert len(steps) >= 0.9 * (len(rows) - 1) - 3


def test_the_look_alikes_are_there(v2):
    out, truth = v2
    records = Records(out, V2_FIELDS)
    kinds = {c.kind for c in truth.confounders}
    assert kinds == {"long_connection", "ntp", "dns", "popular_service", "backup", "rejected_retry"}

    def sources(destination: str, port: int) -> int:
        return records.one(
            "SELECT count(DISTINCT srcaddr) FROM records "
            f"WHERE dstaddr = '{destination}' AND dstport = {port} AND srcaddr LIKE '10.%'"
        )[0]

    # The popular servers: most of the estate talks to each
    for item in truth.confounders:
        if item.src is None:
            assert sources(item.dst, item.dst_port) > truth.hosts / 2, item
    # The retries every 30 s are rejected, all of them
    for item in truth.confounders:
        if item.kind == "rejected_retry":
            actions, count = records.one(
                "SELECT list(DISTINCT action), count(*) FROM records "
                f"WHERE srcaddr = '{item.src}' AND dstaddr = '{item.dst}'"
            )
            assert actions == ["REJECT"] and count > 2000
    # And the internet's scans are rejected too
    (rejected,) = records.one(
        "SELECT count(*) FROM records WHERE action = 'REJECT' AND srcaddr NOT LIKE '10.%'"
    )
    assert rejected > 0.01 * truth.records


def test_bad_lines_and_idle_records_are_counted(v2):
    out, truth = v2
    lines = [line for p in files(out) for line in p.read_text().splitlines()[1:]]

    # Then the bad lines are the three kinds the truth counts: cut, a word, a field too many
    bad = [line for line in lines if len(line.split(" ")) != len(V2_FIELDS) or " http " in line]
    assert len(bad) == truth.bad_lines >= 3
    assert {len(line.split(" ")) for line in bad} >= {4, len(V2_FIELDS), len(V2_FIELDS) + 1}
    # And NODATA and SKIPDATA records leave every field but the times '-'
    nodata = [line.split(" ") for line in lines if line.endswith(" NODATA")]
    assert len(nodata) == truth.nodata > 0
    assert all(fields[3:10] == ["-"] * 7 and fields[12] == "-" for fields in nodata)
    assert sum(line.endswith(" SKIPDATA") for line in lines) == truth.skipdata > 0


@pytest.mark.parametrize(
    ("flow_format", "fields", "header", "gzipped"),
    [
        ("v2-noheader", V2_FIELDS, False, False),
        ("v5", V5_FIELDS, True, False),
        ("v2-gz", V2_FIELDS, True, True),
        ("v5-gz", V5_FIELDS, True, True),
    ],
)
def test_each_text_format(tmp_path_factory, v2, flow_format, fields, header, gzipped):
    # Given the same estate written in another text format
    out, truth = generate(tmp_path_factory, flow_format)
    first = files(out)[0]

    # Then the files are gzip or plain, with or without the header naming the fields
    raw = first.read_bytes()
    assert raw.startswith(b"\x1f\x8b") == gzipped
    text = (gzip.decompress(raw) if gzipped else raw).decode()
    lines = text.splitlines()
    assert (lines[0] == " ".join(fields)) == header
    assert len(lines[1].split(" ")) == len(fields)
    # And it holds the same beacons as the default format, as many records
    assert truth.beacons == v2[1].beacons
    assert truth.records == v2[1].records


def test_a_custom_format_carries_its_fields(tmp_path_factory):
    out, truth = generate(tmp_path_factory, "v5")
    records = Records(out, V5_FIELDS)

    # Then a call out is egress from the internal host, its answer ingress to it
    directions = records.all(
        "SELECT DISTINCT flow_direction, srcaddr LIKE '10.%' FROM records "
        "WHERE log_status = 'OK' AND (srcaddr NOT LIKE '10.%' OR dstaddr NOT LIKE '10.%')"
    )
    assert set(directions) == {("egress", True), ("ingress", False)}
    # And each record names its interface and instance
    beacon = truth.beacons[0]
    identities = records.all(
        "SELECT DISTINCT interface_id, instance_id FROM records "
        f"WHERE srcaddr = '{beacon.src}' AND dstaddr = '{beacon.dst}'"
    )
    assert identities == [(beacon.interface_id, beacon.instance_id)]


def test_parquet_is_in_hive_partitions_with_the_glue_tables_columns(parquet):
    out, truth = parquet
    data = out / synthetic.DATA_DIR

    # Then the files sit in Hive-compatible hourly folders, as VPC Flow Logs deliver Parquet
    first = files(out)[0].relative_to(data).parts
    assert first[:7] == (
        f"aws-account-id={synthetic.ACCOUNT_ID}",
        "aws-service=vpcflowlogs",
        f"aws-region={synthetic.REGION}",
        "year=2026",
        "month=12",
        "day=03",
        first[6],
    )
    assert first[6].startswith("hour=") and len(first[6]) == len("hour=00")
    # And their columns are the ones the Glue table declares, with its types
    schema = (
        duckdb.connect()
        .execute(
            f"DESCRIBE SELECT * FROM read_parquet('{files(out)[0]}', hive_partitioning = false)"
        )
        .fetchall()
    )
    written = {name: kind for name, kind, *_ in schema}
    declared = {name: PARQUET_TYPES[kind] for name, kind in FLOW_LOG_COLUMNS}
    assert written.items() <= declared.items()
    assert set(declared) - set(written) == {
        "account_id",
        "sublocation_type",
        "sublocation_id",
        "pkt_src_aws_service",
        "pkt_dst_aws_service",
    } - set(written)
    (rows,) = (
        duckdb.connect()
        .execute(
            f"SELECT count(*) FROM read_parquet('{data}/**/*.parquet', hive_partitioning = true)"
        )
        .fetchone()
    )
    assert rows == truth.records and truth.bad_lines == 0


def test_a_beacon_can_be_planted_on_a_known_host(tmp_path):
    truth = synthetic.generate(
        tmp_path, records=RECORDS, format="v2", beacon_sources=["10.20.2.17"]
    )

    assert truth.beacons[0].src == "10.20.2.17"
    assert len({beacon.src for beacon in truth.beacons}) == len(truth.beacons)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"format": "csv"}, r"^format: 'csv' is not one of"),
        ({"records": 5_000}, r"^records: 5000 is not from 10,000"),
        ({"records": 20_000}, r"^records: 20,000 leaves no room for background traffic"),
        ({"hours": 0}, r"^hours: 0 is not from 1 to 744"),
        ({"beacons": 500}, r"^beacons: 500 is not from 0 to 200"),
        ({"start": datetime(2026, 12, 3)}, r"^start: give a time zone"),
        ({"beacon_sources": ["8.8.8.8"]}, r"^beacon_sources: 8.8.8.8 is not a private address"),
        ({"beacon_sources": ["host-1"]}, r"^beacon_sources: 'host-1' is not an IPv4 address"),
    ],
)
def test_what_cannot_be_made_is_refused_naming_the_argument(tmp_path, arguments, message):
    settings = {"records": RECORDS, **arguments}
    with pytest.raises(SyntheticError, match=message):
        synthetic.generate(tmp_path, **settings)
    assert not (tmp_path / synthetic.DATA_DIR).exists()


def test_a_folder_holding_records_is_refused(v2):
    out, _ = v2
    with pytest.raises(SyntheticError, match=r"already holds files; choose an empty folder$"):
        synthetic.generate(out, records=RECORDS)


def test_the_truth_is_read_back_and_a_folder_without_one_is_named(v2, tmp_path):
    out, truth = v2

    assert synthetic.load_truth(out) == truth
    with pytest.raises(SyntheticError, match=r"no ground truth"):
        synthetic.load_truth(tmp_path)


@pytest.mark.parametrize(
    ("text", "count"),
    [("250000", 250_000), ("250k", 250_000), ("2.5M", 2_500_000), ("1_000", 1000)],
)
def test_record_counts_read_with_their_unit(text, count):
    assert record_count(text) == count


def test_the_command_writes_a_set_and_says_how_to_scan_it(tmp_path, capsys):
    from cloud_sniper.cli import main

    out = tmp_path / "flows"
    status = main(["beacons", "generate", str(out), "--records", "250k", "--format", "v5"])

    printed = capsys.readouterr().out
    assert status == 0
    assert f"scan it: cloud-sniper beacons scan {out}/AWSLogs" in printed
    assert "16 beacons planted" in printed
    assert synthetic.load_truth(out).format == "v5"


def test_the_command_refuses_what_it_cannot_make(tmp_path, capsys):
    from cloud_sniper.cli import main

    status = main(["beacons", "generate", str(tmp_path), "--records", "20k"])

    assert status == 1
    assert "records: 20,000 leaves no room for background traffic" in capsys.readouterr().err
