"""Helpers the sections share: percentiles, number formats and plain-text tables."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile: a value that was observed, honest for a few dozen samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def number(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators, or a dash when there is none."""
    return "-" if value is None else f"{value:,.{digits}f}"


def progress(message: str) -> None:
    """Say what is running on stderr, so stdout holds only the figures."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a titled table; columns whose cells all look like numbers are right-aligned."""
    columns = list(zip(headers, *rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    numeric = [all(_numeric(cell) for cell in column[1:]) for column in columns]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(f"\n{title}")
    print(line(headers))
    print(line(["-" * width for width in widths]))
    for row in rows:
        print(line(row))


def _numeric(cell: str) -> bool:
    return cell == "-" or cell.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()
