"""`cloud-sniper beacons scan` and the engine under it: files in, the beacon out, verified."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from cloud_sniper.beacons.command import ProgressBar, parse_since
from cloud_sniper.beacons.engine import memory_limit, scan
from cloud_sniper.beacons.formats import FormatError
from cloud_sniper.beacons.models import ScanOptions
from cloud_sniper.cli import EXIT_OK, EXIT_REJECTED, main
from tests.beacon_records import (
    T0,
    beacon,
    long_connection,
    nodata,
    random_calls,
    scored_pair,
    skipdata,
    to_src,
    write_log,
)


@pytest.fixture
def logs(tmp_path):
    """A day of an estate: a beacon, a long connection, random calls, a popular service."""
    folder = tmp_path / "logs"
    popular = []
    for i, src in enumerate(("10.0.1.5", "10.0.1.6", "10.0.1.7")):
        popular += to_src(beacon(dst="198.51.100.200", period=900, jitter=0.1, seed=i), src)
    write_log(folder / "a.log", beacon(jitter=0.1) + [nodata(), skipdata(), "broken line"])
    write_log(folder / "b.log", long_connection() + random_calls(), header=False)
    write_log(folder / "2026" / "12" / "04" / "c.log", popular + [nodata(T0 + 60)])
    return folder


def test_a_scan_reports_the_beacon_alone_verified(logs, tmp_path):
    # Given the day's logs; when scanned with pictures asked
    progress = []
    result = scan(
        [logs], ScanOptions(), lambda f, r: progress.append((f, r)), pictures=tmp_path / "pics"
    )

    # Then the beacon is the only pair reported: the long connection is corrected, the random
    # calls score low and the service three of three hosts call is the estate's normal
    assert [(p.src, p.dst, p.dst_port) for p in result.pairs] == [("10.0.1.5", "203.0.113.7", 443)]
    pair = result.pairs[0]
    assert pair.verified is True and pair.p_value <= 0.01
    assert pair.period_seconds == pytest.approx(60, abs=2)
    assert 0 < pair.jitter < 0.1
    assert pair.connections == len(beacon(jitter=0.1))
    assert pair.first_seen == datetime.fromtimestamp(T0, tz=UTC)
    assert "periodogram peak" in pair.why
    assert result.candidates == 3  # beacon, long connection, random calls

    # and what was read is told
    stats = result.stats
    assert (stats.files, stats.nodata, stats.skipdata, stats.bad_lines) == (3, 2, 1, 1)
    # the header is line 1, then the records, NODATA and SKIPDATA
    assert stats.bad_sample == [
        f"{logs / 'a.log'}:{pair.connections + 4}: broken line (missing columns)"
    ]
    assert progress[0] == (0, 0) and progress[-1] == (3, stats.records)

    # and the top pair is pictured, with no external script
    (picture,) = (tmp_path / "pics").iterdir()
    svg = picture.read_text()
    assert picture.name == "01-10.0.1.5-203.0.113.7-443-6.svg"
    assert svg.startswith("<?xml") and "<svg" in svg and "src=" not in svg


def test_a_scan_is_reproducible(logs):
    first = scan([logs], ScanOptions())
    second = scan([logs], ScanOptions())

    assert first.model_dump(exclude={"seconds"}) == second.model_dump(exclude={"seconds"})


def test_a_scan_of_nothing_readable_names_the_input(tmp_path):
    (tmp_path / "notes.txt").write_text("meeting notes\n")

    with pytest.raises(FormatError, match="notes.txt: not a flow log"):
        scan([tmp_path], ScanOptions())
    with pytest.raises(FormatError, match="no flow-log records"):
        scan([], ScanOptions())


def test_the_command_prints_the_pairs_and_the_input(logs, capsys):
    status = main(["beacons", "scan", str(logs)])

    out = capsys.readouterr().out
    assert status == EXIT_OK
    lines = out.splitlines()
    assert lines[0].split() == [
        "score",
        "pair",
        "period",
        "jitter",
        "conns",
        "bytes",
        "first",
        "last",
        "why",
    ]
    assert "10.0.1.5 -> 203.0.113.7:443/tcp" in lines[2]
    assert "verified (p=" in lines[2]
    assert "1 pair(s) reported of 3 candidate(s)" in out
    assert "2 NODATA and 1 SKIPDATA skipped; 1 bad line(s)" in out
    assert "broken line" in out


def test_the_command_prints_json(logs, capsys):
    status = main(["beacons", "scan", str(logs), "--json", "--min-score", "0.5", "--top", "0"])

    document = json.loads(capsys.readouterr().out)
    assert status == EXIT_OK
    assert set(document) == {"pairs", "candidates", "stats", "seconds", "dismissed"}
    assert document["dismissed"] == []  # nothing verified, so nothing dismissed
    # With a lower threshold the random calls are reported too, and nothing is verified
    assert len(document["pairs"]) == 2
    assert all(p["verified"] is None for p in document["pairs"])
    assert document["stats"]["bad_lines"] == 1


def test_the_command_refuses_bad_input_with_its_reason(tmp_path, capsys):
    (tmp_path / "x.bin").write_bytes(b"\x00\x01\x02")

    assert main(["beacons", "scan", str(tmp_path / "x.bin")]) == EXIT_REJECTED
    assert "x.bin: not a flow log" in capsys.readouterr().err
    assert main(["beacons", "scan", str(tmp_path), "--allowlist", "10.0.0.300/8"]) == 1
    assert "allowlist entry '10.0.0.300/8' is not a network" in capsys.readouterr().err
    assert main(["beacons", "scan", str(tmp_path), "--since", "yesterday"]) == 1
    assert "--since 'yesterday' is neither a duration" in capsys.readouterr().err


def test_since_is_a_duration_back_from_now_or_a_time():
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("1h30m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-12-04T06:00:00Z", now) == datetime(2026, 12, 4, 6, tzinfo=UTC)
    assert parse_since("2026-12-04", now) == datetime(2026, 12, 4, tzinfo=UTC)


def test_the_progress_bar_counts_files_and_records():
    stream = io.StringIO()
    bar = ProgressBar(total=4, stream=stream)

    bar(2, 1_500_000)
    bar(4, 3_000_000)
    bar.finish()

    text = stream.getvalue()
    assert "\r[" + "#" * 15 + "." * 15 + "] 2/4 files, 1,500,000 records" in text
    assert "4/4 files, 3,000,000 records" in text and text.endswith(" - analysing\n")


def test_duckdb_gets_a_share_of_the_memory_available():
    assert memory_limit() >= 1 << 30


def test_the_command_lists_the_pairs_the_verification_dismissed():
    from cloud_sniper.beacons.command import print_result
    from cloud_sniper.beacons.models import InputStats, ScanResult

    dismissed = scored_pair(
        "10.0.3.95",
        "138.134.43.98",
        0.715,
        dst_port=9418,
        verified=False,
        p_value=1.0,
        why="no spectral line, and intervals more regular than random arrivals' ...",
    )
    out = io.StringIO()

    print_result(
        ScanResult(pairs=[], dismissed=[dismissed], candidates=9, stats=InputStats(), seconds=1),
        ScanOptions(),
        out,
    )

    text = out.getvalue()
    assert "no pair scores 0.7 or more" in text
    assert "1 pair(s) scored 0.7 or more but their verification found no schedule:" in text
    assert "0.715  10.0.3.95 -> 138.134.43.98:9418/tcp  no spectral line" in text
