"""`cloud-sniper beacons scan`: find hosts calling home on a schedule in VPC Flow Logs."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cloud_sniper.beacons.models import PairScore, ScanOptions, ScanResult

PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


def add_to(commands: Any) -> None:
    """The `beacons` commands, added to the `cloud-sniper` parser's subcommands."""
    beacons = commands.add_parser(
        "beacons", help="find hosts calling home on a schedule in VPC Flow Logs"
    )
    beacon_commands = beacons.add_subparsers(title="beacons commands", required=True)
    scan = beacon_commands.add_parser(
        "scan",
        help="score every internal host's calls to outside addresses for beaconing",
        description="Read VPC Flow Logs (default or custom text format, plain or gzip, Parquet, "
        "Hive-partitioned folders), score each internal source calling an outside address, port "
        "and protocol for regular timing and sizes, correct for long connections split by the "
        "capture window, and verify the top pairs with a periodogram and a permutation test.",
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="flow-log files or folders")
    scan.add_argument(
        "--since",
        metavar="DURATION",
        help="only flows starting this long ago or later (24h, 7d) or at or after a time "
        "(2026-12-04T00:00:00Z)",
    )
    scan.add_argument(
        "--min-score", type=float, default=0.7, metavar="X", help="report pairs scoring X or more"
    )
    scan.add_argument(
        "--top", type=int, default=20, metavar="N", help="verify and picture the N best pairs"
    )
    scan.add_argument(
        "--allowlist",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network never reported (a SaaS provider, your own public range); repeatable",
    )
    scan.add_argument(
        "--prevalence-share",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="leave out destinations more than this share of the internal sources call",
    )
    scan.add_argument("--include-rejected", action="store_true", help="count REJECT records too")
    scan.add_argument("--pictures", metavar="DIR", help="write each top pair's histogram as SVG")
    scan.add_argument("--json", action="store_true", help="print the scan result as JSON")
    scan.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar even when stderr is not a terminal",
    )
    scan.set_defaults(command_function=run_scan)

    from cloud_sniper.beacons.generate_command import add_to as add_generate_command

    add_generate_command(beacon_commands)


def run_scan(args: argparse.Namespace) -> int:
    """Scan the paths; print the pairs and the input's stats, or the result as JSON."""
    from cloud_sniper.beacons import engine, formats
    from cloud_sniper.cli import CliError

    try:
        options = _options(args)
        files = formats.discover(args.paths)
        bar = None
        if args.progress or sys.stderr.isatty():
            bar = ProgressBar(total=len(files), stream=sys.stderr)
        result = engine.scan(
            files,
            options,
            bar,
            pictures=Path(args.pictures) if args.pictures else None,
        )
        if bar:
            bar.finish()
    except (formats.FormatError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print_result(result, options, sys.stdout)
        if args.pictures:
            print(f"pictures of the top pairs under {Path(args.pictures).resolve()}/")
    return 0


def _options(args: argparse.Namespace) -> ScanOptions:
    from pydantic import ValidationError

    try:
        return ScanOptions(
            since=parse_since(args.since) if args.since else None,
            min_score=args.min_score,
            top=args.top,
            allowlist=args.allowlist,
            prevalence_share=args.prevalence_share,
            include_rejected=args.include_rejected,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(problems) from exc


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`--since`: a duration back from now (the project's durations: 90m, 24h, 7d) or a time."""
    from cloud_sniper.domain.policy import parse_duration

    now = now or datetime.now(UTC)
    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", text):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"--since {value!r}: {exc}") from exc
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise ValueError(
        f"--since {value!r} is neither a duration (30m, 24h, 7d) nor a time (2026-12-04T10:00Z)"
    )


class ProgressBar:
    """A plain progress bar on stderr: files read and records so far."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.started = time.monotonic()

    def __call__(self, files: int, records: int) -> None:
        filled = int(self.WIDTH * files / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        seconds = time.monotonic() - self.started
        self.stream.write(
            f"\r[{bar}] {files}/{self.total} files, {records:,} records, {seconds:.0f} s"
        )
        if files >= self.total:
            self.stream.write(" - analysing")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def pair_text(pair: PairScore) -> str:
    """`10.0.1.5 -> 203.0.113.7:443/tcp`."""
    protocol = PROTOCOLS.get(pair.protocol, str(pair.protocol))
    return f"{pair.src} -> {pair.dst}:{pair.dst_port}/{protocol}"


def print_result(result: ScanResult, options: ScanOptions, out: TextIO) -> None:
    """The reported pairs as a table, then what was read."""
    rows = [
        (
            f"{pair.score:.3f}",
            pair_text(pair),
            _period(pair.period_seconds),
            f"{pair.jitter:.0%}" if pair.jitter is not None else "-",
            f"{pair.connections:,}",
            _bytes(pair.bytes),
            pair.first_seen.strftime("%Y-%m-%d %H:%M"),
            pair.last_seen.strftime("%Y-%m-%d %H:%M"),
            _verdict(pair),
        )
        for pair in result.pairs
    ]
    headers = ("score", "pair", "period", "jitter", "conns", "bytes", "first", "last", "why")
    if rows:
        _table(headers, rows, out)
    else:
        print(f"no pair scores {options.min_score} or more", file=out)
    if result.dismissed:
        print(
            f"\n{len(result.dismissed)} pair(s) scored {options.min_score} or more but their "
            "verification found no schedule:",
            file=out,
        )
        for pair in result.dismissed:
            print(f"  {pair.score:.3f}  {pair_text(pair)}  {pair.why}", file=out)
    stats = result.stats
    print(
        f"\n{len(result.pairs)} pair(s) reported of {result.candidates} candidate(s) with "
        f"{options.min_connections}+ connections, in {result.seconds:.1f} s",
        file=out,
    )
    print(
        f"read {stats.files} file(s), {stats.records:,} record(s); {stats.nodata:,} NODATA and "
        f"{stats.skipdata:,} SKIPDATA skipped; {stats.bad_lines:,} bad line(s)",
        file=out,
    )
    for line in stats.bad_sample:
        print(f"  bad line {line}", file=out)


def _verdict(pair: PairScore) -> str:
    if pair.verified is None:
        return pair.why
    mark = "verified" if pair.verified else "not verified"
    return f"{mark} (p={pair.p_value:g}): {pair.why}"


def _period(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    # The last column (why) is free text: left unpadded.
    widths[-1] = 0
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    print("  ".join("-" * max(w, 3) for w in widths), file=out)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
