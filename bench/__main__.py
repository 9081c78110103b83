"""Print figures to compare between commits; bench/README.md says what each one means."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from bench import ROOT
from bench.pipeline import DEFAULT_FINDINGS, MAX_FINDINGS

SECTIONS = ("imports", "normalize", "policy", "pipeline", "beacons")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and print their tables, or one JSON document with --json."""
    args = parse_args(argv)
    document = {"context": context(), "sections": {}}
    if not args.json:
        _show_context(document["context"])

    for name in args.only:
        run, show = _section(name, args)
        result = run()
        document["sections"][name] = result
        if not args.json:
            show(result)
            sys.stdout.flush()

    if args.json:
        print(json.dumps(document, indent=2))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        type=_sections,
        default=SECTIONS,
        metavar="SECTIONS",
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--findings",
        type=_findings,
        default=DEFAULT_FINDINGS,
        metavar="N",
        help=f"findings to send through the local pipeline (default: {DEFAULT_FINDINGS})",
    )
    parser.add_argument(
        "--beacon-records",
        type=_record_counts,
        default=None,
        metavar="SIZES",
        help="comma-separated sizes of the beacon scan's generated sets (default: 10M,100M)",
    )
    parser.add_argument(
        "--beacon-formats",
        type=_beacon_formats,
        default=None,
        metavar="FORMATS",
        help="comma-separated formats of the beacon scan's sets (default: v2-gz,parquet)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args(argv)


def context() -> dict:
    """What the figures depend on besides the code: the commit, the interpreter, the machine."""
    return {
        "commit": _commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # Other work on the machine slows every figure; the load says how busy it was.
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def _section(name: str, args: argparse.Namespace) -> tuple[Callable[[], dict], Callable]:
    # Imported on demand: the pipeline section pulls in moto and the CDK assembly tooling.
    if name == "imports":
        from bench import imports

        return imports.run, imports.show
    if name == "normalize":
        from bench import domain

        return domain.run_normalize, domain.show_normalize
    if name == "policy":
        from bench import domain

        return domain.run_policy, domain.show_policy
    if name == "beacons":
        from bench import beacons

        sizes = args.beacon_records or beacons.DEFAULT_SIZES
        formats = args.beacon_formats or beacons.DEFAULT_FORMATS
        return (lambda: beacons.run(sizes, formats)), beacons.show
    from bench import pipeline

    return (lambda: pipeline.run(args.findings)), pipeline.show


def _show_context(info: dict) -> None:
    load = " ".join(f"{value:.2f}" for value in info["load_average"])
    print(f"Cloud Sniper bench at {info['at']}, commit {info['commit'] or 'unknown'}")
    print(f"Python {info['python']} on {info['platform']}, {info['cpus']} CPUs, load {load}")


def _commit() -> str | None:
    """The checked-out commit, marked +dirty when the working tree has changes."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+dirty" if dirty else head


def _git(*arguments: str) -> str:
    completed = subprocess.run(
        ["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


def _sections(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SECTIONS)} (got {value!r})")
    # Run in the documented order, each once, whatever order they were given in.
    return tuple(name for name in SECTIONS if name in names)


def _findings(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_FINDINGS:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_FINDINGS} (got {value!r})")
    return number


def _record_counts(value: str) -> tuple[int, ...]:
    from cloud_sniper.beacons.generate_command import record_count

    try:
        sizes = tuple(record_count(part) for part in value.split(",") if part.strip())
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {value!r}") from exc
    if not sizes:
        raise argparse.ArgumentTypeError(f"no size in {value!r} (10M,100M)")
    return sizes


def _beacon_formats(value: str) -> tuple[str, ...]:
    from cloud_sniper.beacons.synthetic import FORMATS

    names = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(FORMATS)} (got {value!r})")
    return names


if __name__ == "__main__":
    sys.exit(main())
