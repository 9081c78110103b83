"""`cloud-sniper beacons generate` and `measure`: a seeded set of flow logs with planted beacons,
and how well the scan finds them."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from typing import Any

from cloud_sniper.beacons.models import ScanOptions

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*$")
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def add_to(beacon_commands: Any) -> None:
    """The `generate` command, added to the `beacons` commands."""
    from cloud_sniper.beacons import synthetic

    generate = beacon_commands.add_parser(
        "generate",
        help="write a seeded set of VPC Flow Logs with planted beacons and their ground truth",
        description="Write an estate's flow logs over a window: planted beacons (periods of "
        "10 s to 1 h, jitter up to 40%, some asleep for hours) among traffic made to fool a "
        "naive detector (long connections cut by the capture window, NTP, DNS, an agent every "
        "host runs, backups, rejected retries, scans, bad lines, NODATA). The same arguments "
        "give the same records. OUT/truth.json holds the answers; scan OUT/AWSLogs.",
    )
    generate.add_argument("out", metavar="OUT", help="an empty or new folder")
    generate.add_argument(
        "--records",
        type=record_count,
        default=1_000_000,
        metavar="N",
        help="about how many records (10k, 2.5M, 100M; default 1M)",
    )
    generate.add_argument(
        "--seed", type=int, default=synthetic.DEFAULT_SEED, metavar="S", help="the random seed"
    )
    generate.add_argument(
        "--format",
        choices=synthetic.FORMATS,
        default=synthetic.DEFAULT_FORMAT,
        help="v2: the default format as text (v2-noheader without its header line); v5: a "
        "custom format declared in the header; -gz: gzip, as S3 delivers text; parquet: "
        "Parquet in Hive-compatible hourly partitions (default: %(default)s)",
    )
    generate.add_argument(
        "--hours", type=int, default=24, metavar="H", help="the window's length (default 24)"
    )
    generate.add_argument(
        "--start",
        type=start_time,
        default=synthetic.DEFAULT_START,
        metavar="TIME",
        help="the window's start, UTC (default 2026-12-03T00:00Z)",
    )
    generate.add_argument(
        "--beacons",
        type=int,
        default=synthetic.DEFAULT_BEACONS,
        metavar="B",
        help=f"how many beacons to plant (default {synthetic.DEFAULT_BEACONS})",
    )
    generate.add_argument("--json", action="store_true", help="print the ground truth as JSON")
    generate.set_defaults(command_function=run_generate)

    measure = beacon_commands.add_parser(
        "measure",
        help="scan a generated set and judge the result against its ground truth",
        description="Scan the set `beacons generate` wrote into OUT with every candidate "
        "ranked, and print the precision and recall at the threshold, each planted beacon's "
        "rank, score and period as found, and each false positive named after what the "
        "generator made it as.",
    )
    measure.add_argument("out", metavar="OUT", help="a folder `beacons generate` wrote")
    measure.add_argument(
        "--min-score",
        type=float,
        default=ScanOptions.model_fields["min_score"].default,
        metavar="X",
        help="the threshold precision and recall are read at (default %(default)s)",
    )
    measure.add_argument("--json", action="store_true", help="print the measure as JSON")
    measure.set_defaults(command_function=run_measure)


def run_generate(args: argparse.Namespace) -> int:
    """Write the set; print what it holds, or its ground truth as JSON."""
    from cloud_sniper.beacons import synthetic
    from cloud_sniper.cli import CliError

    progress = _progress if sys.stderr.isatty() else None
    try:
        truth = synthetic.generate(
            args.out,
            records=args.records,
            seed=args.seed,
            format=args.format,
            start=args.start,
            hours=args.hours,
            beacons=args.beacons,
            progress=progress,
        )
    except synthetic.SyntheticError as exc:
        raise CliError(str(exc)) from exc
    finally:
        if progress is not None:
            sys.stderr.write("\n")
    if args.json:
        print(synthetic.truth_json(truth))
        return 0
    print(synthetic.describe(truth))
    print(f"ground truth in {args.out}/{synthetic.TRUTH_FILE}")
    print(f"scan it: cloud-sniper beacons scan {args.out}/{truth.data_dir}")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    """Scan the generated set and print how the result compares with its ground truth."""
    from cloud_sniper.beacons import formats, quality, synthetic
    from cloud_sniper.cli import CliError

    if not 0.0 <= args.min_score <= 1.0:
        raise CliError(f"--min-score {args.min_score}: a score is between 0 and 1")
    try:
        measured = quality.measure(args.out, ScanOptions(min_score=args.min_score))
    except (synthetic.SyntheticError, formats.FormatError) as exc:
        raise CliError(str(exc)) from exc
    print(measured.model_dump_json(indent=2) if args.json else quality.describe(measured))
    return 0


def record_count(text: str) -> int:
    """`--records`: a whole number, with k, M or G for thousands, millions, billions."""
    match = _SIZE.match(text.replace("_", "").replace(",", ""))
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (10000, 250k, 10M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def start_time(text: str) -> datetime:
    """`--start`: an ISO time; without a zone, UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (2026-12-03T00:00Z)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\rwriting file {done}/{total}")
    sys.stderr.flush()
