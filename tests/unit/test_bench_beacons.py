"""The beacon benchmark: a cached set, the scan and its floor in child processes, their figures."""

from __future__ import annotations

import pytest

from bench import __main__ as cli
from bench import beacons


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(beacons, "CACHE", tmp_path / "bench")
    return tmp_path / "bench"


def test_a_small_run_measures_the_scan_and_its_floor_and_reuses_its_set(cache, capsys):
    # When the benchmark runs on a small set
    first = beacons.run(sizes=(300_000,), formats=("v2-gz",))

    # Then the set was generated into the cache, scanned and read by the floor, each in a child
    # whose own peak memory is known, and the planted beacons were found
    (row,) = first["runs"]
    assert row["generate_seconds"] is not None
    assert abs(row["records"] - 300_000) < 30_000
    assert row["scan_seconds"] > 0 and row["floor_seconds"] > 0
    assert 50 << 20 < row["peak_rss_bytes"] < beacons.TARGET_RSS_BYTES
    assert 50 << 20 < row["floor_peak_rss_bytes"] < beacons.TARGET_RSS_BYTES
    assert row["ratio"] == pytest.approx(row["scan_seconds"] / row["floor_seconds"], rel=0.05)
    assert row["recall"] >= 0.9 and row["memory_status"] == "PASS"
    assert row["folder"].startswith(str(cache))

    # And a second run reuses the set
    (again,) = beacons.run(sizes=(300_000,), formats=("v2-gz",))["runs"]
    assert again["generate_seconds"] is None and again["records"] == row["records"]

    # And the table shows one line per set
    beacons.show(first)
    shown = capsys.readouterr().out
    assert "scan/floor" in shown and "v2-gz" in shown and f"{row['records']:,}" in shown


def test_a_failing_child_is_an_error_with_what_it_said(tmp_path):
    with pytest.raises(beacons.BeaconBenchError, match=r"no ground truth"):
        beacons._child("scan", tmp_path, "v2-gz")


def test_the_sizes_and_formats_are_read_from_the_command_line(capsys):
    args = cli.parse_args(
        ["--only", "beacons", "--beacon-records", "10M,2.5M", "--beacon-formats", "parquet"]
    )

    assert args.only == ("beacons",)
    assert args.beacon_records == (10_000_000, 2_500_000)
    assert args.beacon_formats == ("parquet",)
    for argv in (["--beacon-records", "lots"], ["--beacon-formats", "csv"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv)
    assert "choose from v2,v2-noheader,v5,v2-gz,v5-gz,parquet" in capsys.readouterr().err
