"""The local scan on DuckDB: read every input out of core, analyse, score, verify the top pairs.

Records never come into Python: they are loaded into an in-memory DuckDB database that spills
to a temporary folder when memory runs short, reduced on the way to what the analysis reads of
them, and only the per-pair features and the top pairs' event times come back.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud_sniper.beacons import analysis, formats, scoring, verify
from cloud_sniper.beacons.analysis import PairFeatures
from cloud_sniper.beacons.models import InputStats, ScanOptions, ScanResult

Progress = Callable[[int, int], None]

TABLE = "flow_records"
REJECTS_TABLE = "bad_lines"
REJECTS_SCAN = "bad_line_scans"
BATCH_TABLE = "flow_batch"
FEATURES_TABLE = "pair_features"
# Files are read this much (compressed) at a time: a batch's table is a few hundred MB at most.
BATCH_BYTES = 128 * 1024 * 1024
BAD_SAMPLE = 5
THREADS = 2
MEMORY_SHARE = 0.5  # of the memory available now: the machine is shared
MIN_MEMORY = 1 << 30


def scan(
    paths: Sequence[Path | str | formats.InputFile],
    options: ScanOptions,
    progress: Progress | None = None,
    *,
    pictures: Path | None = None,
) -> ScanResult:
    """Find beacons in the flow logs under the paths; the top pairs pictured if asked."""
    started = time.monotonic()
    files = formats.discover(paths)
    if not files:
        raise formats.FormatError(
            f"no flow-log records in {', '.join(str(p) for p in paths) or 'no path given'}"
        )
    with _database() as con:
        stats, columns = load(con, files, progress, options=options)
        candidates, features = features_of(con, options, columns)
        reported = scoring.reported(features, options)
        top = reported[: options.top]
        times = event_times(con, options, [f for f, _ in top], columns)

    series = [times.get(_key(f), []) for f, _ in top]
    # numpy lets go of the interpreter in its transforms and sorts: a pair per core.
    with ThreadPoolExecutor(THREADS) as pool:
        verdicts = list(
            pool.map(lambda s: verify.verify(s, options.seed, candidates=candidates), series)
        )
    pairs = []
    dismissed = []
    drawn = []
    for rank, (f, judgement) in enumerate(reported):
        pair = scoring.pair_score(f, judgement)
        if rank < options.top:
            pair = verify.with_verdict(pair, verdicts[rank])
            events = series[rank]
            drawn.append((pair, [b - a for a, b in zip(events, events[1:], strict=False)]))
            if verdicts[rank].dismissed:
                dismissed.append(pair)
                continue
        pairs.append(pair)
    if pictures is not None:
        from cloud_sniper.beacons.pictures import write_pictures

        write_pictures(pictures, drawn)
    return ScanResult(
        pairs=pairs,
        candidates=candidates,
        dismissed=dismissed,
        stats=stats,
        seconds=round(time.monotonic() - started, 3),
    )


@contextmanager
def _database() -> Iterator[Any]:
    """An in-memory DuckDB database limited to its share of this machine, spilling to a folder.

    In memory rather than in a database file: writing every record to disk took more than half
    of a scan's time, and the spill folder keeps a scan larger than memory possible.
    """
    import duckdb

    with tempfile.TemporaryDirectory(prefix="cloud-sniper-beacons-") as folder:
        con = duckdb.connect(":memory:")
        try:
            spill = Path(folder) / "spill"
            con.execute(f"SET memory_limit = '{memory_limit() // (1 << 20)}MB'")
            con.execute(f"SET threads = {THREADS}")
            con.execute(f"SET temp_directory = '{spill}'")
            # Order is never needed between steps; keeping it would hold rows in memory.
            con.execute("SET preserve_insertion_order = false")
            # The command draws its own bar; DuckDB's would break the JSON and the table.
            con.execute("SET enable_progress_bar = false")
            yield con
        finally:
            con.close()


def memory_limit() -> int:
    """Bytes DuckDB may use: a share of the memory available now, never below 1 GiB."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return max(MIN_MEMORY, int(available * MEMORY_SHARE))


def load(
    con: Any,
    files: list[formats.InputFile],
    progress: Progress | None = None,
    *,
    options: ScanOptions | None = None,
) -> tuple[InputStats, frozenset[str]]:
    """Every file into the records table, batch by batch: what was read, bad lines aside, and
    the table's columns that hold data.

    With options, the table keeps only what the analysis with those options reads: its records
    (not the internet's answers, not the rejected unless asked...) in its columns, of those some
    file has. Every record is still counted, NODATA and SKIPDATA too. Without options, it keeps
    every record in every standard column: the readers' own view.
    """
    import duckdb

    sources = []
    present: set[str] = set()
    for batch in formats.batches(files, max_bytes=BATCH_BYTES):
        try:
            relation, names = _relation(con, batch)
        except duckdb.Error as exc:
            raise formats.FormatError(f"{_batch_name(batch)}: {_first_line(exc)}") from exc
        sources.append((batch, relation))
        present.update(formats.field_name(name) for name in names)
    present &= set(formats.STANDARD_COLUMNS)
    kept = list(formats.STANDARD_COLUMNS) if options is None else analysis.fields_read(present)
    columns = ", ".join(f'"{name}" {formats.STANDARD_COLUMNS[name]}' for name in kept)
    con.execute(f"CREATE TABLE {TABLE} ({columns})")
    chosen = ", ".join(f'"{name}"' for name in kept)
    if options is None:
        kept_records = f"SELECT {chosen} FROM {BATCH_TABLE}"
    else:
        kept_records = analysis.render_reduced(BATCH_TABLE, options, kept)
    counted = chosen if "log_status" in kept else f"{chosen}, log_status"
    done = records = nodata = skipdata = 0
    if progress:
        progress(done, records)
    for batch, relation in sources:
        # Each batch passes through a table of its own, to be counted before it is reduced:
        # the records table then holds a third of the records, and a large scan's analysis
        # fits in memory.
        try:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {BATCH_TABLE} AS SELECT {counted} FROM ({relation})"
            )
        except duckdb.Error as exc:
            raise formats.FormatError(f"{_batch_name(batch)}: {_first_line(exc)}") from exc
        count, empty, skipped = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE log_status = 'NODATA'), "
            f"count(*) FILTER (WHERE log_status = 'SKIPDATA') FROM {BATCH_TABLE}"
        ).fetchone()
        con.execute(f"INSERT INTO {TABLE} BY NAME {kept_records}")
        records, nodata, skipdata = records + count, nodata + empty, skipdata + skipped
        done += len(batch)
        if progress:
            progress(done, records)
    con.execute(f"DROP TABLE IF EXISTS {BATCH_TABLE}")

    bad_lines, sample = _bad_lines(con)
    stats = InputStats(
        files=len(files),
        records=records,
        bad_lines=bad_lines,
        bad_sample=sample,
        nodata=nodata,
        skipdata=skipdata,
    )
    return stats, frozenset(name for name in kept if name in present)


def _relation(con: Any, batch: list[formats.InputFile]) -> tuple[str, list[str]]:
    """A batch's records as the standard columns, and the fields its files have."""
    if batch[0].kind == "parquet":
        return _parquet_relation(con, batch)
    return formats.text_relation(batch, REJECTS_TABLE, REJECTS_SCAN), list(batch[0].fields)


def _parquet_relation(con: Any, batch: list[formats.InputFile]) -> tuple[str, list[str]]:
    names = [row[0] for row in con.execute(formats.parquet_schema(batch)).fetchall()]
    missing = formats.missing_required(names)
    if missing:
        raise formats.FormatError(
            f"{_batch_name(batch)}: the Parquet schema lacks the fields the analysis needs: "
            f"{', '.join(missing)}"
        )
    return formats.parquet_relation(batch, names), names


def _bad_lines(con: Any) -> tuple[int, list[str]]:
    """Lines that did not parse: one per line however many of its fields failed."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [REJECTS_TABLE]
    ).fetchone()[0]
    if not exists:
        return 0, []
    count = con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT scan_id, file_id, line FROM {REJECTS_TABLE})"
    ).fetchone()[0]
    rows = con.execute(
        # A line of too many or too few fields fails every cast too: name its first fault.
        f"""SELECT s.file_path, e.line, any_value(e.csv_line), max(e.error_type)
FROM {REJECTS_TABLE} e
JOIN {REJECTS_SCAN} s ON s.scan_id = e.scan_id AND s.file_id = e.file_id
GROUP BY s.file_path, e.line
ORDER BY s.file_path, e.line
LIMIT {BAD_SAMPLE}"""
    ).fetchall()
    return count, [f"{path}:{line}: {text} ({error.lower()})" for path, line, text, error in rows]


def features_of(
    con: Any, options: ScanOptions, columns: frozenset[str] | None = None
) -> tuple[int, list[PairFeatures]]:
    """The analysis over the loaded records: how many candidate pairs it found, and the features
    of those that can score the threshold (scoring.ceiling), the others left in DuckDB."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {FEATURES_TABLE} AS "
        f"{analysis.render('duckdb', TABLE, options, columns)}"
    )
    moments = con.execute(
        f"SELECT pair_id, {', '.join(scoring.MOMENT_FIELDS)} FROM {FEATURES_TABLE}"
    ).fetchall()
    hopeful = [
        pair_id
        for pair_id, *values in moments
        if scoring.ceiling(_Moments(*values)) >= options.min_score
    ]
    cursor = con.execute(
        f"SELECT {', '.join(analysis.FEATURE_COLUMNS)} FROM {FEATURES_TABLE} "
        "WHERE pair_id IN (SELECT unnest(?)) ORDER BY pair_id",
        [hopeful],
    )
    # Rows of the analysis's own query, typed by it: built unvalidated, as validating tens of
    # thousands of candidates took longer than scoring them.
    features = [
        PairFeatures.model_construct(**dict(zip(analysis.FEATURE_COLUMNS, row, strict=True)))
        for row in cursor.fetchall()
    ]
    con.execute(f"DROP TABLE {FEATURES_TABLE}")
    return len(moments), features


def event_times(
    con: Any,
    options: ScanOptions,
    pairs: Sequence[PairFeatures],
    columns: frozenset[str] | None = None,
) -> dict[tuple[str, str, int, int], list[int]]:
    """The distinct start times of each pair given, in order."""
    if not pairs:
        return {}
    keys = [_key(f) for f in pairs]
    rows = con.execute(analysis.render_events("duckdb", TABLE, options, keys, columns)).fetchall()
    times: dict[tuple[str, str, int, int], list[int]] = {key: [] for key in keys}
    for src, dst, port, protocol, ts in rows:
        times[(src, dst, port, protocol)].append(ts)
    return times


_Moments = namedtuple("_Moments", scoring.MOMENT_FIELDS)


def _key(f: PairFeatures) -> tuple[str, str, int, int]:
    return (f.src, f.dst, f.dst_port, f.protocol)


def _batch_name(batch: list[formats.InputFile]) -> str:
    first = str(batch[0].path)
    return first if len(batch) == 1 else f"{first} (or one of {len(batch) - 1} more)"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
