"""Beacon scans at scale: generated flow logs of 10 and 100 million records, scanned.

Each set is generated once (cached under .build/bench/beacons/, made again when the generator
changes). The scan, and its floor (a bare DuckDB read and group-by (src, dst, dstport) of the
same files, with the scan's threads and memory limit), each run in a child process: its time is
measured inside the child (interpreter start-up and imports left out), its peak RSS is the
child's own, as the kernel reports it to os.wait4.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import ROOT
from bench.report import number, print_table, progress

CACHE = ROOT / ".build" / "bench" / "beacons"
DEFAULT_SIZES = (10_000_000, 100_000_000)
DEFAULT_FORMATS = ("v2-gz", "parquet")
# Targets: 100 million records within 24 GiB, and text scanned at 1 million records a second.
TARGET_RSS_BYTES = 24 << 30
TARGET_RECORDS_PER_SECOND = 1_000_000
THREADS = 2


class BeaconBenchError(RuntimeError):
    """A child process failed; the message holds what it said."""


def run(sizes: Sequence[int] = DEFAULT_SIZES, formats: Sequence[str] = DEFAULT_FORMATS) -> dict:
    """Generate (or reuse) each set, scan it, and read the floor of the same files."""
    runs = []
    for size in sizes:
        for flow_format in formats:
            folder, generated = dataset(size, flow_format)
            progress(f"beacons: scanning {size:,} records ({flow_format})")
            scan = _child("scan", folder, flow_format)
            progress(f"beacons: the floor of {size:,} records ({flow_format})")
            floor = _child("floor", folder, flow_format)
            runs.append(_figures(size, flow_format, folder, generated, scan, floor))
    return {"runs": runs, "threads": THREADS}


def dataset(size: int, flow_format: str) -> tuple[Path, float | None]:
    """The cached set of `size` records: its folder, and the seconds it took if made now."""
    from cloud_sniper.beacons import synthetic

    folder = CACHE / f"{flow_format}-{size}-{_generator_digest()}"
    if (folder / synthetic.TRUTH_FILE).is_file():
        return folder, None
    for stale in CACHE.glob(f"{flow_format}-{size}-*"):
        shutil.rmtree(stale)  # made by an older generator: the disk holds one set per size

    partial = folder.with_name(folder.name + ".partial")
    progress(f"beacons: generating {size:,} records ({flow_format}) into {folder}")
    started = time.perf_counter()
    synthetic.generate(partial, records=size, format=flow_format, threads=THREADS)
    seconds = time.perf_counter() - started
    partial.rename(folder)
    return folder, seconds


def _generator_digest() -> str:
    from cloud_sniper.beacons import synthetic

    return hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]


def _child(kind: str, folder: Path, flow_format: str) -> dict:
    """Run one measurement in a fresh interpreter: its JSON output, and its peak RSS."""
    command = [sys.executable, "-m", "bench.beacons", kind, str(folder), flow_format]
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        assert child.stdout is not None
        output = child.stdout.read()
        # Reaped here rather than by Popen, for the child's own resource usage: its peak RSS.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        child.stdout.close()
        if child.returncode != 0:
            errors.seek(0)
            said = errors.read().strip()[-2000:]
            raise BeaconBenchError(f"{' '.join(command)} failed ({child.returncode}):\n{said}")
    figures = json.loads(output)
    figures["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux counts it in KiB
    return figures


def _figures(
    size: int, flow_format: str, folder: Path, generated: float | None, scan: dict, floor: dict
) -> dict:
    records = scan["records"]
    rate = records / scan["seconds"] if scan["seconds"] else None
    floor_rate = floor["records"] / floor["seconds"] if floor["seconds"] else None
    text = flow_format != "parquet"
    return {
        "records_asked": size,
        "format": flow_format,
        "folder": str(folder),
        "bytes_on_disk": _size(folder),
        "generate_seconds": None if generated is None else round(generated, 1),
        "records": records,
        "scan_seconds": round(scan["seconds"], 2),
        "records_per_second": None if rate is None else round(rate),
        "peak_rss_bytes": scan["peak_rss_bytes"],
        "floor_seconds": round(floor["seconds"], 2),
        "floor_records_per_second": None if floor_rate is None else round(floor_rate),
        "floor_peak_rss_bytes": floor["peak_rss_bytes"],
        "ratio": round(scan["seconds"] / floor["seconds"], 2) if floor["seconds"] else None,
        "candidates": scan["candidates"],
        "reported": scan["reported"],
        "precision": scan["precision"],
        "recall": scan["recall"],
        "memory_status": "PASS" if scan["peak_rss_bytes"] <= TARGET_RSS_BYTES else "OVER",
        "speed_status": (
            ("PASS" if rate and rate >= TARGET_RECORDS_PER_SECOND else "UNDER") if text else "-"
        ),
    }


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def show(result: dict) -> None:
    """Print one row per set: the scan's speed and memory next to the floor's."""
    rows = [
        (
            f"{item['records']:,}",
            item["format"],
            number(item["scan_seconds"], 1),
            number(item["records_per_second"]),
            _gib(item["peak_rss_bytes"]),
            number(item["floor_seconds"], 1),
            number(item["floor_records_per_second"]),
            _gib(item["floor_peak_rss_bytes"]),
            number(item["ratio"], 2),
            f"{item['precision']:.3f}",
            f"{item['recall']:.3f}",
            f"{item['memory_status']}/{item['speed_status']}",
        )
        for item in result["runs"]
    ]
    headers = (
        "records",
        "format",
        "scan s",
        "records/s",
        "peak GiB",
        "floor s",
        "floor rec/s",
        "floor GiB",
        "scan/floor",
        "precision",
        "recall",
        "memory/speed",
    )
    print_table(
        f"Beacon scan (cloud_sniper.beacons.engine.scan, {result['threads']} threads) against "
        "its floor (DuckDB read + group by)",
        headers,
        rows,
    )
    for item in result["runs"]:
        made = item["generate_seconds"]
        note = f"generated in {made:,.0f} s" if made is not None else "cached"
        print(f"{item['format']} {item['records']:,}: {_gib(item['bytes_on_disk'])} GiB, {note}")


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 30):.2f}"


# --- the child processes ------------------------------------------------------------------------


def _scan(folder: Path) -> dict:
    from cloud_sniper.beacons import engine, quality
    from cloud_sniper.beacons.models import ScanOptions
    from cloud_sniper.beacons.synthetic import load_truth

    truth = load_truth(folder)
    options = ScanOptions()
    started = time.perf_counter()
    result = engine.scan([folder / truth.data_dir], options)
    seconds = time.perf_counter() - started
    judged = quality.evaluate(truth, result, options.min_score)
    return {
        "seconds": seconds,
        "records": result.stats.records,
        "candidates": result.candidates,
        "reported": len(result.pairs),
        "precision": judged.precision,
        "recall": judged.recall,
    }


def _floor(folder: Path, flow_format: str) -> dict:
    """What reading the records and grouping them by pair costs DuckDB, and nothing more."""
    import duckdb

    from cloud_sniper.beacons import engine, synthetic

    data = folder / synthetic.DATA_DIR
    if flow_format == "parquet":
        source = f"read_parquet('{data}/**/*.parquet', hive_partitioning = true)"
    else:
        fields = synthetic.V5_FIELDS if flow_format.startswith("v5") else synthetic.V2_FIELDS
        types = {"srcport": "INTEGER", "dstport": "INTEGER", "start": "BIGINT", "bytes": "BIGINT"}
        columns = ", ".join(f"'{f.replace('-', '_')}': '{types.get(f, 'VARCHAR')}'" for f in fields)
        header = "false" if flow_format == "v2-noheader" else "true"
        source = (
            f"read_csv('{data}/**/*.log*', delim = ' ', header = {header}, "
            f"columns = {{{columns}}}, nullstr = '-', ignore_errors = true)"
        )
    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    con.execute(f"SET memory_limit = '{engine.memory_limit() // (1 << 20)}MB'")
    con.execute("SET enable_progress_bar = false")
    started = time.perf_counter()
    records, pairs = con.execute(
        f"""SELECT sum(n), count(*) FROM (
  SELECT srcaddr, dstaddr, dstport, count(*) AS n, sum(bytes), min(start), max(start)
  FROM {source}
  GROUP BY srcaddr, dstaddr, dstport
)"""
    ).fetchone()
    return {"seconds": time.perf_counter() - started, "records": int(records), "pairs": pairs}


def _main(argv: list[str]) -> int:
    kind, folder, flow_format = argv
    figures = _scan(Path(folder)) if kind == "scan" else _floor(Path(folder), flow_format)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
